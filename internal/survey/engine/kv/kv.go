// Package kv is the storage the survey engine runs on: an ordered key-value
// view with atomic batches, which the embedded store (Pebble) and the
// PostgreSQL store both provide. It is its own package so that a store can
// implement it without importing the engine.
package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"
)

// ErrNotFound is returned by Get for a key that is not there.
var ErrNotFound = errors.New("not found")

// ErrNotHeld is returned by a batch's Commit when this engine no longer
// holds the right to write (another replica took the engine's lease): the
// batch wrote nothing, and its work is left to the holder.
var ErrNotHeld = errors.New("the survey engine's lease is held by another replica")

// Reader reads keys in byte order.
type Reader interface {
	// Get returns a copy of key's value, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// NewIter iterates the keys in [lower, upper); a nil bound is open.
	NewIter(lower, upper []byte) (Iterator, error)
}

// Iterator walks keys in order. Key and Value are valid until the next
// move.
type Iterator interface {
	First() bool
	Next() bool
	// SeekGE moves to the first key at or after key.
	SeekGE(key []byte) bool
	Valid() bool
	Key() []byte
	Value() []byte
	Error() error
	Close() error
}

// Batch collects writes that Commit applies atomically and durably, in
// the order they were made.
type Batch interface {
	Set(key, value []byte) error
	Delete(key []byte) error
	// DeleteRange deletes the keys in [start, end).
	DeleteRange(start, end []byte) error
	Empty() bool
	// Count is the number of writes in the batch.
	Count() int
	// Commit applies the batch, or returns ErrNotHeld and applies nothing.
	Commit() error
	// Close releases the batch, committed or not.
	Close() error
}

// Snapshot is a consistent view for reads that span many keys.
type Snapshot interface {
	Reader
	Close() error
}

// KV is the engine's storage.
type KV interface {
	Reader
	NewBatch() Batch
	NewSnapshot() (Snapshot, error)
	// Lock makes this engine the only writer among the engines sharing
	// the storage until Unlock, and fences its batches: one committed
	// after another engine took the lock fails with ErrNotHeld. With wait
	// false it returns false at once when another engine holds it; with
	// wait true it waits for it until ctx ends. An embedded store has one
	// engine, so there it always succeeds.
	Lock(ctx context.Context, wait bool) (bool, error)
	// OthersWrote, asked while the lock is held, reports whether another
	// engine may have written since this one last held it, so that what
	// this engine remembers of its queues must be read again.
	OthersWrote() bool
	// RenewLock extends the lock this engine holds, on a store where it
	// expires (RenewEvery above 0): the engine calls it every RenewEvery
	// while it holds the lock, so that a step waiting on slow webhook
	// receivers keeps it, while a replica that dies (and so renews
	// nothing) loses it soon. ErrNotHeld: another engine took it, and
	// this one's batches fail from then on.
	RenewLock(ctx context.Context) error
	// RenewEvery is how often RenewLock must be called while the lock is
	// held; 0: the lock never expires.
	RenewEvery() time.Duration
	Unlock()
	// ConfigRevision is the greatest collector config revision
	// (collectorapi.Config.Revision) that a replica sharing the storage
	// has loaded; each raises it before it accepts records under that
	// config. Read after a read of the feed, it is at least the revision
	// under which any entry read was written. An embedded store has one
	// replica, whose engine's own config is the newest: it reports 0.
	ConfigRevision() (int64, error)
	// FeedMark, taken after a read of the feed, marks the writers of feed
	// entries in flight then; ok is false when the store cannot tell (the
	// engine then reads the feed from its first key every time). It lets
	// the engine start its reads above the entries it consumed without
	// passing one committed late: see FeedSettled.
	FeedMark() (mark uint64, ok bool, err error)
	// FeedSettled reports whether every writer in flight at mark has
	// ended (committed or not). Once they have, every feed entry below the
	// last one the marked read saw is visible, or will never be: a writer
	// that began after the mark draws its sequences after it, above every
	// key that read saw.
	FeedSettled(mark uint64) (bool, error)
}

// FeedPrefix starts the keys of the record feed: stores whose record
// sequence is not in commit order (PostgreSQL) write each new record under
// FeedPrefix + big-endian sequence, in the transaction that stores it, and
// the engine deletes the entries it consumed in the batch that records what
// they caused. The value is EncodeFeed's.
const FeedPrefix = "s/feed/"

// EncodeFeed is a feed entry's value: the kind byte, the subject, a zero
// byte, the length of the contact stored with the record (4 bytes, big
// endian) and the contact (JSON as the engine's Contact; empty for none),
// the record's JSON.
func EncodeFeed(kind byte, subject string, contact, body []byte) []byte {
	v := make([]byte, 0, 6+len(subject)+len(contact)+len(body))
	v = append(v, kind)
	v = append(v, subject...)
	v = append(v, 0)
	v = binary.BigEndian.AppendUint32(v, uint32(len(contact)))
	v = append(v, contact...)
	return append(v, body...)
}

// DecodeFeed reverses EncodeFeed; contact is nil for none.
func DecodeFeed(v []byte) (kind byte, subject string, contact, body []byte, err error) {
	if len(v) < 2 {
		return 0, "", nil, nil, errors.New("feed entry too short")
	}
	end := bytes.IndexByte(v[1:], 0)
	if end < 0 {
		return 0, "", nil, nil, errors.New("feed entry without subject end")
	}
	rest := v[2+end:]
	if len(rest) < 4 {
		return 0, "", nil, nil, errors.New("feed entry without contact length")
	}
	n := binary.BigEndian.Uint32(rest)
	if uint64(n) > uint64(len(rest)-4) {
		return 0, "", nil, nil, errors.New("feed entry's contact runs past its end")
	}
	if n > 0 {
		contact = rest[4 : 4+n]
	}
	return v[0], string(v[1 : 1+end]), contact, rest[4+n:], nil
}
