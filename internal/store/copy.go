package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cxop-dev/cxop/internal/rollup"
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

// RollupBuckets calls fn with every rollup bucket, encoded as in a
// checkpoint: what the records ever stored add up to, including those
// erased or pruned since.
func (s *Store) RollupBuckets(fn func(key, value []byte) error) error {
	return s.rollups.Buckets(fn)
}

// ReplaceRollups makes the buckets that buckets adds the rollups of the
// closed store in opts.Dir, counting every record it holds: a copy of
// another store's records carries that store's rollups rather than the
// sums of the records copied (which miss the records erased or pruned
// there). It drops the store's rollups, writes the buckets and a
// checkpoint at its last record, in one synced batch; the next Open loads
// them and replays nothing.
func ReplaceRollups(opts Options, buckets func(add func(key, value []byte) error) error) error {
	opts.defaults()
	po := PebbleOptions(opts.CacheBytes)
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return fmt.Errorf("open store in %s: %w", opts.Dir, err)
	}
	b := db.NewBatch()
	err = func() error {
		defer func() { _ = b.Close() }()
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
		if err != nil {
			return err
		}
		var last uint64
		if it.Last() {
			last = binary.BigEndian.Uint64(it.Key()[1:])
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return fmt.Errorf("read the last record: %w", err)
		}
		if err := b.DeleteRange([]byte{rollup.KeyPrefix}, []byte{rollup.KeyPrefix + 1}, nil); err != nil {
			return err
		}
		if err := buckets(func(key, value []byte) error {
			if _, _, _, err := rollup.ParseCheckpointKey(key); err != nil {
				return err
			}
			return b.Set(key, value, nil)
		}); err != nil {
			return err
		}
		if err := b.Set(keyCheckpoint, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
			return err
		}
		return b.Commit(pebble.Sync)
	}()
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("replace the rollups: %w", err)
	}
	return db.Close()
}
