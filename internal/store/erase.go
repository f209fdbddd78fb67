package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
)

// The store is one customerdata.Holder (the raw records) and keeps the
// audit log of erasures.
var (
	_ customerdata.Holder   = (*Store)(nil)
	_ customerdata.AuditLog = (*Store)(nil)
)

// eraseBatch bounds the deletions one batch carries: an erasure of a
// customer with a million records holds one batch of this size at a time.
const eraseBatch = 1000

// prefixErasure keys the audit log: 'e' time(8) random(8) -> Erasure.
const prefixErasure = 'e'

// keyErasureHashKey holds the random key the audit log hashes customer ids
// with.
var keyErasureHashKey = []byte("m/erasure-hash-key")

// customerOf returns the customer a record's JSON names. Records carry a
// 64-bit hash of the customer, which selects candidates; the id in the
// JSON decides, so that a hash collision never erases another customer.
func customerOf(js []byte) (string, error) {
	var v struct {
		Customer string `json:"customer"`
	}
	if err := json.Unmarshal(js, &v); err != nil {
		return "", err
	}
	return v.Customer, nil
}

func (r *Record) customerHash() uint64 {
	if r.Kind == rollup.KindSurvey {
		return r.Response.CustomerHash
	}
	return r.Event.CustomerHash
}

// customerRecords calls fn with every record of customer stored when it
// starts, in order. There is no index by customer: the walk reads every
// record's header (docs/design-notes.md, "Erasure by customer").
func (s *Store) customerRecords(ctx context.Context, customer string, fn func(key []byte, r *Record) error) error {
	h := xxhash.Sum64String(customer)
	n := 0
	return s.scan(0, true, func(_ uint64, key []byte, r *Record) error {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if r.customerHash() != h {
			return nil
		}
		c, err := customerOf(r.JSON)
		if err != nil {
			return fmt.Errorf("stored record at key %x: %w", key, err)
		}
		if c != customer {
			return nil
		}
		return fn(key, r)
	})
}

func kindName(k rollup.Kind) string {
	if k == rollup.KindSurvey {
		return customerdata.Responses
	}
	return customerdata.Events
}

// ListCustomer calls fn with the JSON of every record of customer, as
// exported, kind "events" or "responses".
func (s *Store) ListCustomer(ctx context.Context, customer string, fn func(kind string, item json.RawMessage) error) error {
	return s.customerRecords(ctx, customer, func(_ []byte, r *Record) error {
		item := r.JSON
		if len(r.Contact) > 0 {
			// The contact stored apart (contacts.go), back in its record.
			item = append(append(append(r.JSON[:len(r.JSON)-1:len(r.JSON)-1], `,"contact":`...), r.Contact...), '}')
		}
		return fn(kindName(r.Kind), item)
	})
}

// EraseCustomer deletes every record of customer stored when it starts,
// with its idempotency key, in batches of eraseBatch; the last batch is
// synced, which makes the earlier ones durable too, before it returns.
// Records committed while it runs may remain. The rollups keep what the
// records added to them: counts and sketches of hashed ids, no personal
// data. It returns the deleted records by kind and schedules the
// compaction that removes their bytes from disk (CompactErased).
func (s *Store) EraseCustomer(ctx context.Context, customer string) (customerdata.Counts, error) {
	counts := customerdata.Counts{}
	if err := s.Err(); err != nil {
		return counts, fmt.Errorf("erase: %w", err)
	}
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	var idk []byte
	var span keySpan
	err := s.customerRecords(ctx, customer, func(key []byte, r *Record) error {
		idk = idKey(idk, r.Kind, r.Subject, r.ID)
		_ = b.Delete(idk, nil)
		_ = b.Delete(key, nil)
		span.add(key)
		span.add(idk)
		if r.Contact != nil {
			ck := contactKey(nil, binary.BigEndian.Uint64(key[1:]))
			_ = b.Delete(ck, nil)
			span.add(ck)
		}
		counts[kindName(r.Kind)]++
		if b.Count() < 2*eraseBatch {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		b.Reset()
		return nil
	})
	if err != nil {
		return counts, fmt.Errorf("erase records: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return counts, fmt.Errorf("erase records: %w", err)
	}
	if counts.Total() > 0 {
		s.CompactErased(span.start, span.end)
	}
	return counts, nil
}

// keySpan is the smallest span holding the keys added.
type keySpan struct{ start, end []byte }

func (k *keySpan) add(key []byte) {
	if k.start == nil || bytes.Compare(key, k.start) < 0 {
		k.start = append(k.start[:0], key...)
	}
	if k.end == nil || bytes.Compare(key, k.end) >= 0 {
		k.end = append(append(k.end[:0], key...), 0) // exclusive
	}
}

// CompactErased schedules a compaction of the keys from start up to end,
// where an erasure left tombstones: Pebble keeps a deleted value in its
// table files until a compaction drops it. One compaction runs at a time
// in the background; spans scheduled meanwhile are compacted together
// after it. Before compacting, the memtable is flushed, so the write-ahead
// log that held the deleted values becomes obsolete and is deleted (the
// store never recycles one, PebbleOptions).
func (s *Store) CompactErased(start, end []byte) {
	s.compactMu.Lock()
	// Until the compaction is done, a marker says it is due, so that a
	// restart meanwhile compacts the erased ranges (resumeCompaction).
	s.setCompactionPending(true)
	s.compactSpans = append(s.compactSpans, keySpan{start: bytes.Clone(start), end: bytes.Clone(end)})
	if s.compactCtx == nil {
		s.compactCtx, s.compactCancel = context.WithCancel(context.Background())
	}
	if s.compactRunning {
		s.compactMu.Unlock()
		return
	}
	s.compactRunning = true
	s.compactMu.Unlock()
	go s.compactLoop()
}

// compactLoop compacts the scheduled spans until none is left. A
// compaction the disk refuses (full, failing) is tried again after a
// backoff while its marker is set, so that the erased bytes leave the disk
// once there is room, without waiting for a restart or another erasure.
// Only a closing store, or one that stopped writing, leaves it to the next
// start (resumeCompaction).
func (s *Store) compactLoop() {
	var backoff time.Duration
	for {
		s.compactMu.Lock()
		spans := s.compactSpans
		s.compactSpans = nil
		if len(spans) == 0 {
			s.setCompactionPending(false)
			s.compactDone()
			return
		}
		ctx := s.compactCtx
		s.compactMu.Unlock()
		start := time.Now()
		err := s.compactSpansNow(ctx, spans)
		if err == nil {
			backoff = 0
			s.opts.Logger.Info("compacted after an erasure", "spans", len(spans), "took", time.Since(start).Round(time.Millisecond))
			continue
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) || s.Err() != nil {
			s.opts.Logger.Error("compact after an erasure: the erased values stay on disk until the next start compacts them", "err", err)
			s.compactMu.Lock()
			s.compactDone()
			return
		}
		backoff = nextCompactRetry(backoff)
		s.opts.Logger.Error("compact after an erasure: the erased values stay on disk until it succeeds; retrying", "err", err, "retry_in", backoff.String())
		s.compactMu.Lock()
		s.compactSpans = append(spans, s.compactSpans...)
		s.compactMu.Unlock()
		select {
		case <-s.retryAfter(backoff):
		case <-ctx.Done():
		}
	}
}

// compactDone marks the loop stopped and wakes CompactionsIdle's waiters;
// it is called with compactMu held and releases it.
func (s *Store) compactDone() {
	s.compactRunning = false
	done := s.compactIdle
	s.compactIdle = nil
	s.compactMu.Unlock()
	for _, c := range done {
		close(c)
	}
}

// The pause before a refused compaction after an erasure is tried again:
// from minCompactRetry, doubling up to maxCompactRetry.
const (
	minCompactRetry = time.Second
	maxCompactRetry = 5 * time.Minute
)

func nextCompactRetry(d time.Duration) time.Duration {
	if d <= 0 {
		return minCompactRetry
	}
	return min(2*d, maxCompactRetry)
}

// retryAfter is the timer of the compaction's retries (compactRetryAfter
// when a test set one).
func (s *Store) retryAfter(d time.Duration) <-chan time.Time {
	if s.compactRetryAfter != nil {
		return s.compactRetryAfter(d)
	}
	return time.After(d)
}

func (s *Store) compactSpansNow(ctx context.Context, spans []keySpan) error {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	if s.Err() != nil {
		return s.Err()
	}
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if s.beforeErasureCompaction != nil {
		s.beforeErasureCompaction()
	}
	for _, sp := range spans {
		if err := ctx.Err(); err != nil {
			return err // the store is closing
		}
		if err := s.db.Compact(ctx, sp.start, sp.end, true); err != nil {
			return fmt.Errorf("compact keys %x up to %x: %w", sp.start, sp.end, err)
		}
	}
	// Pebble deletes the files a compaction made obsolete in the
	// background, and a table still read by an iterator (an export, an
	// access request) only once it is closed: wait for both, a while.
	deadline := time.Now().Add(obsoleteWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		m := s.db.Metrics()
		if m.Table.ObsoleteCount == 0 && m.Table.ZombieCount == 0 && m.WAL.ObsoleteFiles == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.opts.Logger.Warn("after an erasure, table files are still read and stay until those reads end",
				"zombie_tables", m.Table.ZombieCount, "obsolete_tables", m.Table.ObsoleteCount)
			return nil
		}
		time.Sleep(wait)
	}
}

// obsoleteWait bounds how long a compaction after an erasure waits for the
// files it made obsolete to be deleted.
const obsoleteWait = time.Minute

// keyCompactionPending marks a compaction after an erasure as due.
var keyCompactionPending = []byte("m/erasure-compaction-pending")

// erasedRanges are the ranges an erasure may leave tombstones in: ids,
// records and the survey engine's keys. A compaction resumed on start
// compacts them whole, since the exact spans were only in memory.
var erasedRanges = []keySpan{
	{start: []byte{prefixID}, end: []byte{prefixID + 1}},
	{start: []byte{prefixRecord}, end: []byte{prefixRecord + 1}},
	{start: []byte{prefixContact}, end: []byte{prefixContact + 1}},
	{start: []byte("s/"), end: []byte("s0")},
}

// setCompactionPending writes or deletes the marker, synced; under
// compactMu, so that the marker's writes are in the order of the
// decisions.
func (s *Store) setCompactionPending(on bool) {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed || s.Err() != nil {
		return
	}
	var err error
	if on {
		err = s.db.Set(keyCompactionPending, nil, pebble.Sync)
	} else {
		err = s.db.Delete(keyCompactionPending, pebble.Sync)
	}
	if err != nil {
		s.opts.Logger.Error("mark the compaction after an erasure", "err", err)
	}
}

// resumeCompaction schedules the compaction of every erased range when an
// erasure's compaction did not finish before the store last closed.
func (s *Store) resumeCompaction() {
	_, closer, err := s.db.Get(keyCompactionPending)
	if err != nil {
		return
	}
	_ = closer.Close()
	s.opts.Logger.Info("an erasure's compaction did not finish before the store closed; compacting the erased ranges")
	for _, r := range erasedRanges {
		s.CompactErased(r.start, r.end)
	}
}

// stopCompactions cancels a compaction after an erasure, for Close: the
// marker stays, and the next start compacts the erased ranges.
func (s *Store) stopCompactions() {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if s.compactCancel != nil {
		s.compactCancel()
	}
}

// CompactionsIdle returns a channel closed once no compaction scheduled
// by CompactErased is pending or running (at once when none is).
func (s *Store) CompactionsIdle() <-chan struct{} {
	c := make(chan struct{})
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if !s.compactRunning {
		close(c)
		return c
	}
	s.compactIdle = append(s.compactIdle, c)
	return c
}

// CustomerHash is the hash an erasure of customer is logged under:
// HMAC-SHA256 with a random key made on first use and kept in the store.
func (s *Store) CustomerHash(customer string) (string, error) {
	key, err := s.erasureHashKey()
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(customer))
	return hex.EncodeToString(m.Sum(nil)), nil
}

func (s *Store) erasureHashKey() ([]byte, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if s.hashKey != nil {
		return s.hashKey, nil
	}
	v, closer, err := s.db.Get(keyErasureHashKey)
	switch {
	case err == nil:
		s.hashKey = bytes.Clone(v)
		_ = closer.Close()
		return s.hashKey, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return nil, fmt.Errorf("read the audit log's hash key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := s.db.Set(keyErasureHashKey, key, pebble.Sync); err != nil {
		return nil, fmt.Errorf("store the audit log's hash key: %w", err)
	}
	s.hashKey = key
	return key, nil
}

func erasureKey(t time.Time) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixErasure}, uint64(max(t.UnixNano(), 0)))
	var r [8]byte
	_, _ = rand.Read(r[:])
	return append(k, r[:]...)
}

// AppendErasure records an erasure in the audit log, synced.
func (s *Store) AppendErasure(e customerdata.Erasure) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := s.db.Set(erasureKey(e.Time), v, pebble.Sync); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Erasures calls fn with the audit log's entries from since on, oldest
// first.
func (s *Store) Erasures(since time.Time, fn func(customerdata.Erasure) error) error {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: binary.BigEndian.AppendUint64([]byte{prefixErasure}, uint64(max(since.UnixNano(), 0))), UpperBound: []byte{prefixErasure + 1}})
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	for it.First(); it.Valid(); it.Next() {
		var e customerdata.Erasure
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return fmt.Errorf("audit log entry %x: %w", it.Key(), err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return it.Error()
}

// PruneErasures deletes the audit log's entries from before cutoff.
func (s *Store) PruneErasures(cutoff time.Time) error {
	if err := s.Err(); err != nil {
		return err
	}
	return s.db.DeleteRange([]byte{prefixErasure}, binary.BigEndian.AppendUint64([]byte{prefixErasure}, uint64(max(cutoff.UnixNano(), 0))), pebble.Sync)
}
