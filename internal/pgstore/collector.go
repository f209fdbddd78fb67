package pgstore

// What the collector asks of any store besides records (see
// internal/collector's Storage): the embedded store's volume states have
// no counterpart here. A database that does not answer is neither a
// failure a restart repairs nor a full volume: Submit answers
// ErrUnavailable, and Ping tells the readiness probe.

// Err is always nil: whether the database takes records is known only by
// trying (Submit answers ErrUnavailable when it does not).
func (s *Store) Err() error { return nil }

// Failed is always nil: a restart of the collector does not repair a
// database, so liveness never fails on one.
func (s *Store) Failed() error { return nil }

// ReadOnly is always nil: a standby or a full disk is ErrUnavailable.
func (s *Store) ReadOnly() error { return nil }

// DiskBytes reports nothing: the data is not on the collector's volume.
func (s *Store) DiskBytes() (uint64, bool) { return 0, false }
