package store

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// CopyRecords calls fn with every stored record from sequence from on, in
// order, whole: its Fingerprint (kept with the id) and its Contact (nil if
// it has none or it was pruned) filled in, for a copy into another store
// (cxop store copy). r is valid only during the call.
func (s *Store) CopyRecords(from uint64, fn func(seq uint64, r *Record) error) error {
	var key []byte
	return s.scan(from, true, func(seq uint64, _ []byte, r *Record) error {
		key = idKey(key, r.Kind, r.Subject, r.ID)
		v, closer, err := s.db.Get(key)
		switch {
		case err == nil:
			r.Fingerprint = storedFingerprint(v)
			_ = closer.Close()
		case errors.Is(err, pebble.ErrNotFound):
			r.Fingerprint = 0 // unknown: never a conflict
		default:
			return fmt.Errorf("read the id of record %d: %w", seq, err)
		}
		return fn(seq, r)
	})
}

// AuditHashKey is the key the erasure audit log hashes customer ids with
// (created on first use), so that a copy of the store logs an erasure of
// the same customer under the same hash.
func (s *Store) AuditHashKey() ([]byte, error) {
	k, err := s.erasureHashKey()
	return bytes.Clone(k), err
}

// SetAuditHashKey makes key the audit log's hash key; a store that has one
// already keeps it and SetAuditHashKey says whether it is the same.
func (s *Store) SetAuditHashKey(key []byte) (same bool, err error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	v, closer, err := s.db.Get(keyErasureHashKey)
	switch {
	case err == nil:
		defer closer.Close()
		return bytes.Equal(v, key), nil
	case !errors.Is(err, pebble.ErrNotFound):
		return false, fmt.Errorf("read the audit log's hash key: %w", err)
	}
	if err := s.db.Set(keyErasureHashKey, key, pebble.Sync); err != nil {
		return false, fmt.Errorf("store the audit log's hash key: %w", err)
	}
	s.hashKey = bytes.Clone(key)
	return true, nil
}
