package store

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// deleteWithoutRecycling is Pebble's delete cleaner that also turns off
// the recycling of write-ahead logs. A recycled log is overwritten from
// its start, so the tail of what it held before (records since deleted,
// contacts since dropped) would stay on disk for as long as the file is
// reused; without recycling an obsolete log is deleted once its memtable
// is flushed. A cleaner tells Pebble that it needs whole files, which is
// what stops the recycling, by embedding ArchiveCleaner (the unexported
// base.NeedsFileContents); DeleteCleaner, embedded less deep, is the one
// whose Clean runs, so files are deleted, not archived.
type deleteWithoutRecycling struct {
	pebble.DeleteCleaner
	needsWholeFiles
}

type needsWholeFiles struct{ pebble.ArchiveCleaner }

// RecordsPruned is what PruneExpired did and saw.
type RecordsPruned struct {
	// Deleted records were past retention.
	Deleted int
	// Kept records remain; Recent of them have an event time at or after
	// the recentSince given, and Oldest is the earliest event time kept.
	Kept, Recent int
	Oldest       time.Time
}

// pruneRecordsHook, when set by a test, runs before each batch; an error
// stops the prune there, as a crash would.
var pruneRecordsHook func() error

// pruneRecordsBatch bounds the records one prune batch reads; each batch
// commits on its own and holds no iterator or lock between batches.
const pruneRecordsBatch = 5000

// PruneExpired deletes raw records (and their idempotency keys and
// contacts) whose event time is before cutoff, in batches that each
// commit on their own, and counts the records it keeps: all of them, and
// those at or after recentSince (what the retention estimate needs).
// Ingest refuses records older than the retention, so a deleted id cannot
// come back.
func (s *Store) PruneExpired(cutoff, recentSince time.Time) (RecordsPruned, error) {
	var out RecordsPruned
	from := uint64(0)
	for {
		if err := s.Err(); err != nil {
			return out, fmt.Errorf("prune: %w", err)
		}
		if pruneRecordsHook != nil {
			if err := pruneRecordsHook(); err != nil {
				return out, err
			}
		}
		next, err := s.pruneRecordsBatch(from, cutoff.UnixNano(), recentSince.UnixNano(), &out)
		if err != nil {
			return out, fmt.Errorf("prune: %w", err)
		}
		if next == 0 {
			return out, nil
		}
		from = next
	}
}

// pruneRecordsBatch prunes up to pruneRecordsBatch records from sequence
// from on and returns the sequence to go on from, 0 when done.
func (s *Store) pruneRecordsBatch(from uint64, cutoff, recent int64, out *RecordsPruned) (uint64, error) {
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	n := 0
	var next uint64
	errFull := fmt.Errorf("batch full")
	var key []byte
	// With the contacts: a record stored with an event time long past
	// goes before its contact would, and takes it along.
	err := s.scan(from, true, func(seq uint64, rkey []byte, r *Record) error {
		if n == pruneRecordsBatch {
			next = seq
			return errFull
		}
		n++
		t := r.Time()
		if t >= cutoff {
			out.Kept++
			if t >= recent {
				out.Recent++
			}
			if tt := time.Unix(0, t); out.Oldest.IsZero() || tt.Before(out.Oldest) {
				out.Oldest = tt
			}
			return nil
		}
		_ = b.Delete(idKey(key, r.Kind, r.Subject, r.ID), nil)
		_ = b.Delete(rkey, nil)
		if r.Contact != nil {
			_ = b.Delete(contactKey(key, seq), nil)
		}
		out.Deleted++
		return nil
	})
	if err != nil && err != errFull {
		return 0, err
	}
	if !b.Empty() {
		if err := b.Commit(pebble.Sync); err != nil {
			return 0, err
		}
	}
	return next, nil
}
