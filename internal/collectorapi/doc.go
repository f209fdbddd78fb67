// Package collectorapi is the contract between the manager and the
// collectors: the config and secrets files the manager renders, the
// collector's command-line delivery options, the summary answers, the wave
// request, the token hashing both sides agree on, and the clients the
// manager (and `cxop survey-wave`) call the collector with. It holds no
// server code and no storage, so the manager depends on the collector only
// through what crosses the wire.
package collectorapi
