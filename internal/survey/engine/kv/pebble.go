package kv

import (
	"context"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble is the engine's storage on a Pebble database (the embedded
// store's, shared with the records; the engine's keys start with 's').
// Batches commit with Sync; the one engine of the process needs no lock.
func Pebble(db *pebble.DB) KV { return pebbleKV{db} }

type pebbleKV struct{ db *pebble.DB }

func (p pebbleKV) Get(key []byte) ([]byte, error) { return pebbleGet(p.db, key) }

func (p pebbleKV) NewIter(lower, upper []byte) (Iterator, error) {
	return pebbleNewIter(p.db, lower, upper)
}

func (p pebbleKV) NewBatch() Batch { return pebbleBatch{p.db.NewBatch()} }

func (p pebbleKV) NewSnapshot() (Snapshot, error) { return pebbleSnapshot{p.db.NewSnapshot()}, nil }

func (pebbleKV) Lock(context.Context, bool) (bool, error) { return true, nil }

func (pebbleKV) OthersWrote() bool { return false }

func (pebbleKV) Unlock() {}

func (pebbleKV) RenewLock(context.Context) error { return nil }

func (pebbleKV) RenewEvery() time.Duration { return 0 }

func (pebbleKV) ConfigRevision() (int64, error) { return 0, nil }

// The embedded store writes no feed (the engine follows its log).
func (pebbleKV) FeedMark() (uint64, bool, error) { return 0, false, nil }

func (pebbleKV) FeedSettled(uint64) (bool, error) { return false, nil }

func pebbleGet(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

func pebbleNewIter(r pebble.Reader, lower, upper []byte) (Iterator, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	return pebbleIter{it}, nil
}

type pebbleIter struct{ it *pebble.Iterator }

func (i pebbleIter) First() bool            { return i.it.First() }
func (i pebbleIter) Next() bool             { return i.it.Next() }
func (i pebbleIter) SeekGE(key []byte) bool { return i.it.SeekGE(key) }
func (i pebbleIter) Valid() bool            { return i.it.Valid() }
func (i pebbleIter) Key() []byte            { return i.it.Key() }
func (i pebbleIter) Value() []byte          { return i.it.Value() }
func (i pebbleIter) Error() error           { return i.it.Error() }
func (i pebbleIter) Close() error           { return i.it.Close() }

type pebbleBatch struct{ b *pebble.Batch }

func (b pebbleBatch) Set(key, value []byte) error { return b.b.Set(key, value, nil) }
func (b pebbleBatch) Delete(key []byte) error     { return b.b.Delete(key, nil) }
func (b pebbleBatch) DeleteRange(start, end []byte) error {
	return b.b.DeleteRange(start, end, nil)
}
func (b pebbleBatch) Empty() bool   { return b.b.Empty() }
func (b pebbleBatch) Count() int    { return int(b.b.Count()) }
func (b pebbleBatch) Commit() error { return b.b.Commit(pebble.Sync) }
func (b pebbleBatch) Close() error  { return b.b.Close() }

type pebbleSnapshot struct{ s *pebble.Snapshot }

func (s pebbleSnapshot) Get(key []byte) ([]byte, error) { return pebbleGet(s.s, key) }
func (s pebbleSnapshot) NewIter(lower, upper []byte) (Iterator, error) {
	return pebbleNewIter(s.s, lower, upper)
}
func (s pebbleSnapshot) Close() error { return s.s.Close() }
