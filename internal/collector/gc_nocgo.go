//go:build !cgo

package collector

// pebbleCachesOffHeap: without cgo (the static image build), Pebble's
// memtables and block cache are Go slices. They are live heap, so a GOGC
// above 100 would let the heap grow to several times the caches, past the
// container's memory limit.
const pebbleCachesOffHeap = false
