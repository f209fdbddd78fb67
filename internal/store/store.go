// Package store is the collector's durable state on its data directory:
// raw records (kept for export and recount), idempotency keys and
// checkpointed rollups, in one Pebble database. Writes go through a single
// committer that group-commits whatever requests are queued into one
// fsync'd batch, so concurrent requests share a sync and a record is
// counted exactly once.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// Errors a caller maps to HTTP answers.
var (
	// ErrOverloaded means the ingest queue is full: retry later.
	ErrOverloaded = errors.New("ingest queue is full")
	// ErrClosed means the store is shutting down.
	ErrClosed = errors.New("store is closed")
)

// Options configure a Store.
type Options struct {
	Dir       string
	Retention rollup.Retention
	// CheckpointInterval bounds how much a restart replays. Default 5s.
	CheckpointInterval time.Duration
	// QueueLength is how many requests may wait for the committer; beyond
	// it Submit returns ErrOverloaded. Default 256.
	QueueLength int
	// MaxGroupRecords caps one group commit. Default 20,000.
	MaxGroupRecords int
	// CacheBytes is Pebble's block cache, on top of the memtables' 128 MiB.
	// Default 128 MiB.
	CacheBytes int64
	// Rebuild drops the checkpointed rollups and recounts every raw record.
	Rebuild bool
	Logger  *slog.Logger
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; tests inject one.
	Now func() time.Time

	// FS is the filesystem the store lives on; nil is the operating
	// system's. Tests inject Pebble's crashable and error-injecting ones.
	FS vfs.FS
	// MinFreeBytes is the free space below which Open opens the store
	// read-only instead of for writing. Default DefaultMinFreeBytes; a
	// negative value turns the check off.
	MinFreeBytes int64
	// ReadOnly opens the store read-only whatever the free space.
	ReadOnly bool
	// FaultMetrics count disk faults across reopenings; nil counts
	// nothing.
	FaultMetrics *FaultMetrics
	// MemTableBytes is Pebble's memtable size; 0 is 64 MiB. Fault tests
	// set it small so that flushes and compactions happen between their
	// crash points.
	MemTableBytes int64
	// Uncompressed writes tables without compression, so that a test can
	// look for a string in every byte of the data directory.
	Uncompressed bool
}

func (o *Options) defaults() {
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 5 * time.Second
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 128 << 20
	}
	if o.QueueLength <= 0 {
		o.QueueLength = 256
	}
	if o.MaxGroupRecords <= 0 {
		o.MaxGroupRecords = 20000
	}
	if o.Retention == (rollup.Retention{}) {
		o.Retention = rollup.DefaultRetention
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultMinFreeBytes
	}
}

// Result is what a commit did with a request's records.
type Result struct {
	Accepted   int
	Duplicates int
	// Duplicate[i] is true when record i was already stored; nil when
	// there was no duplicate.
	Duplicate []bool
	// conflict refuses the whole request; Submit returns it as its error.
	conflict *ConflictError
}

// ErrConflict is what a ConflictError is (errors.Is).
var ErrConflict = errors.New("id already stored with a different payload")

// ConflictError refuses a request one of whose records reuses the id of
// a stored record (or of an earlier record of the same commit) with a
// different fingerprint: the stored record stands and nothing of the
// request is stored, as the IETF Idempotency-Key draft and Stripe answer a
// key reused for another payload.
type ConflictError struct {
	Index int // the record of the request
	ID    string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("record %d: id %q is already stored with a different payload", e.Index, e.ID)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// storedFingerprint reads the fingerprint after the sequence in an id's
// value; 0 (unknown) for ids stored before fingerprints were kept.
func storedFingerprint(v []byte) uint64 {
	if len(v) < 16 {
		return 0
	}
	return binary.BigEndian.Uint64(v[8:16])
}

func (r *Result) markDuplicate(i, n int) {
	if r.Duplicate == nil {
		r.Duplicate = make([]bool, n)
	}
	r.Duplicate[i] = true
	r.Duplicates++
}

type request struct {
	records []Record
	done    chan reply
}

type reply struct {
	res Result
	err error
}

// Store is an open data directory.
type Store struct {
	opts    Options
	db      *pebble.DB
	rollups *rollup.Set
	metrics *metrics

	queue   chan *request
	stopped chan struct{}
	closeMu sync.RWMutex
	closed  bool
	seq     uint64 // last record sequence applied; committer only after Open
	// durable is the last record sequence synced and counted in the
	// rollups; syncer only after Open. committed is durable for readers
	// outside the syncer.
	durable   uint64
	committed atomic.Uint64
	failed    error // a commit error that makes the store read-only
	failedMu  sync.Mutex
	// readOnly says why the store was opened read-only; nil when it
	// writes.
	readOnly error
	fs       *faultFS
	// readers are scans and lookups in flight; Close waits for them so
	// that a read-only store can be closed and reopened for writing under
	// a serving collector.
	readers  sync.RWMutex
	dbClosed bool // under readers
	// failedCh is closed with the first failure: requests waiting for a
	// commit that may never come (a write stalled behind memtables that
	// cannot flush) are answered with it.
	failedCh chan struct{}
	// Compactions after erasures and the audit log's hash key (erase.go).
	compactMu      sync.Mutex
	compactSpans   []keySpan
	compactRunning bool
	compactIdle    []chan struct{}
	compactCtx     context.Context
	compactCancel  context.CancelFunc
	// compactRetryAfter and beforeErasureCompaction are set by tests: the
	// timer of a refused compaction's retries (nil: time.After), and a
	// hook run between an erasure compaction's flush and its compaction.
	compactRetryAfter       func(time.Duration) <-chan time.Time
	beforeErasureCompaction func()
	hashKey                 []byte
}

// Open opens or creates the store, loads the last checkpoint and replays
// the records written after it. The store is ready when Open returns.
//
// When the data volume has less than MinFreeBytes free, or the disk
// refuses a write while the store opens, the store opens read-only: it
// answers reads and refuses records with ErrReadOnly (Err says why), and
// its engine does no background work that could fail and retry.
func Open(opts Options) (*Store, error) {
	opts.defaults()
	if _, err := opts.FS.Stat(opts.Dir); err != nil {
		// A new store: with no room to create it there is nothing to serve.
		if err := opts.FS.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	if opts.ReadOnly {
		return openReadOnly(opts, "opened read-only")
	}
	if reason := roomToWrite(opts.FS, opts.Dir, opts.MinFreeBytes); reason != "" {
		return openReadOnly(opts, reason)
	}
	s, err := openStore(opts, "")
	if err != nil && s != nil && (s.fs.faulted() != nil || IsDiskFault(err)) {
		// The disk refused a write while opening: serve what is stored.
		fault := s.fs.faulted()
		if fault == nil {
			fault = err
		}
		return openReadOnly(opts, fmt.Sprintf("a write failed while opening the store: %v", fault))
	}
	return s, err
}

// openReadOnly opens the store without writing anything, and logs why.
func openReadOnly(opts Options, reason string) (*Store, error) {
	opts.Logger.Error("opening the store read-only: records are refused until it has room to write", "reason", reason, "dir", opts.Dir)
	s, err := openStore(opts, reason)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// openStore opens the store, read-only when readOnly gives a reason. On error
// it returns the closed store, whose faultFS tells whether the disk
// refused a write.
func openStore(opts Options, readOnly string) (*Store, error) {
	s := &Store{
		opts:     opts,
		rollups:  rollup.NewSet(opts.Retention),
		queue:    make(chan *request, opts.QueueLength),
		stopped:  make(chan struct{}),
		failedCh: make(chan struct{}),
		fs:       newFaultFS(opts.FS, opts.FaultMetrics),
	}
	if readOnly != "" {
		s.readOnly = &readOnlyError{reason: readOnly}
	}
	po := PebbleOptions(opts.CacheBytes)
	po.FS = s.fs
	if opts.MemTableBytes > 0 {
		po.MemTableSize = uint64(opts.MemTableBytes)
	}
	if opts.Uncompressed {
		po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	}
	po.ReadOnly = readOnly != ""
	po.Logger = pebbleLogger{opts.Logger}
	po.EventListener = s.eventListener()
	defer po.Cache.Unref()
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return s, fmt.Errorf("open store in %s: %w", opts.Dir, err)
	}
	s.db = db
	// Registered once the store is open for writing: a read-only store
	// is replaced by a writable one later, which registers them then.
	s.metrics = newMetrics()
	if err := s.recover(); err != nil {
		_ = db.Close()
		if cerr := s.Failed(); cerr != nil {
			// The engine named the damaged file and key range.
			return s, fmt.Errorf("%w; %w", err, cerr)
		}
		return s, err
	}
	if err := s.Failed(); err != nil {
		// Corruption found while opening.
		_ = db.Close()
		return s, err
	}
	if readOnly == "" {
		s.metrics.registerOnce(opts.Registerer, func() float64 { return float64(len(s.queue)) })
		s.resumeCompaction()
	}
	go s.commitLoop()
	return s, nil
}

// memTableBytes is Pebble's memtable size: large enough that a burst of
// ingest flushes rarely, small enough for a pod's memory limit.
const memTableBytes = 64 << 20

// PebbleOptions are the store's Pebble options with a block cache of
// cacheBytes. The caller owns the cache reference (Unref after Open).
//
// Pebble reserves the memory of every live memtable (up to two at the
// default stop-writes threshold) out of the block cache. A cache no larger
// than the memtables therefore caches nothing, and every idempotency lookup
// reads and checksums a bloom filter block from disk; so the memtables'
// share is added on top of cacheBytes.
func PebbleOptions(cacheBytes int64) *pebble.Options {
	po := &pebble.Options{
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: 2,
		BytesPerSync:                1 << 20,
		WALBytesPerSync:             1 << 20,
		// Obsolete logs are deleted, not recycled with old data in them.
		Cleaner: deleteWithoutRecycling{},
	}
	po.Cache = pebble.NewCache(cacheBytes + int64(po.MemTableStopWritesThreshold)*memTableBytes)
	// Every record costs an idempotency lookup; with the bloom filters and
	// index blocks cached, a lookup of a new id rarely touches the disk.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return po
}

// recover loads the checkpoint and replays the records after it.
func (s *Store) recover() error {
	start := time.Now()
	var checkpoint uint64
	if s.opts.Rebuild && s.readOnly != nil {
		// Recount every record in memory; the stored rollups stay as they
		// are until the store can write.
	} else if s.opts.Rebuild {
		if err := s.db.DeleteRange([]byte{rollup.KeyPrefix}, []byte{rollup.KeyPrefix + 1}, pebble.Sync); err != nil {
			return fmt.Errorf("drop checkpointed rollups: %w", err)
		}
		if err := s.db.Delete(keyCheckpoint, pebble.Sync); err != nil {
			return fmt.Errorf("drop checkpoint: %w", err)
		}
	} else {
		v, closer, err := s.db.Get(keyCheckpoint)
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return fmt.Errorf("read checkpoint: %w", err)
		default:
			if len(v) != 8 {
				_ = closer.Close()
				return fmt.Errorf("read checkpoint: %d bytes, want 8", len(v))
			}
			checkpoint = binary.BigEndian.Uint64(v)
			_ = closer.Close()
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{rollup.KeyPrefix}, UpperBound: []byte{rollup.KeyPrefix + 1}})
		if err != nil {
			return fmt.Errorf("read rollups (keys %x up to %x): %w", rollup.KeyPrefix, rollup.KeyPrefix+1, err)
		}
		for it.First(); it.Valid(); it.Next() {
			if err := s.rollups.Load(it.Key(), it.Value()); err != nil {
				_ = it.Close()
				return fmt.Errorf("load checkpoint: rollup at key %q: %w; run with --rebuild to recount it from the records", it.Key(), err)
			}
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("read rollups (keys %x up to %x): %w; run with --rebuild to recount them from the records", rollup.KeyPrefix, rollup.KeyPrefix+1, err)
		}
	}

	replayed := 0
	s.seq = checkpoint
	var b rollup.Batch
	err := s.scanRecords(checkpoint+1, func(seq uint64, _ []byte, r *Record) error {
		appendToBatch(&b, r)
		s.seq = seq
		replayed++
		if len(b.Events)+len(b.Responses) >= 10000 {
			s.rollups.Apply(&b)
			b.Events, b.Responses = b.Events[:0], b.Responses[:0]
		}
		return nil
	})
	if err != nil {
		// Never skip what cannot be read: a record left out would be
		// missing from every count and export without a trace.
		return fmt.Errorf("replay the records after the checkpoint (sequence %d on, keys %x up to %x): %w; the store does not open rather than skip it",
			checkpoint+1, recordKey(checkpoint+1), []byte{prefixRecord + 1}, err)
	}
	s.rollups.Apply(&b)
	s.durable = s.seq
	s.committed.Store(s.seq)
	if err := s.checkpoint(); err != nil {
		return err
	}
	if s.readOnly != nil {
		s.opts.Logger.Warn("store ready read-only", "dir", s.opts.Dir, "checkpoint", checkpoint, "replayed", replayed,
			"reason", s.readOnly, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	s.opts.Logger.Info("store ready", "dir", s.opts.Dir, "checkpoint", checkpoint, "replayed", replayed,
		"rebuild", s.opts.Rebuild, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func appendToBatch(b *rollup.Batch, r *Record) {
	switch r.Kind {
	case rollup.KindTouchpoint:
		b.Events = append(b.Events, rollup.NamedEvent{Touchpoint: r.Subject, Event: r.Event})
	case rollup.KindSurvey:
		b.Responses = append(b.Responses, rollup.NamedResponse{Survey: r.Subject, Response: r.Response})
	}
}

// Rollups answers windows; it is safe to read while the store writes.
func (s *Store) Rollups() *rollup.Set { return s.rollups }

// Submit stores records durably and returns once they are fsync'd (or
// known duplicates). All records of one call commit together or not at
// all. It returns ErrOverloaded at once when the queue is full, and a
// *ConflictError, storing nothing, when a record reuses a stored id for a
// different payload.
func (s *Store) Submit(ctx context.Context, records []Record) (Result, error) {
	if err := s.Err(); err != nil {
		return Result{}, err
	}
	req := &request{records: records, done: make(chan reply, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return Result{}, ErrClosed
	}
	select {
	case s.queue <- req:
		s.closeMu.RUnlock()
	default:
		s.closeMu.RUnlock()
		return Result{}, ErrOverloaded
	}
	select {
	case r := <-req.done:
		return r.result()
	case <-ctx.Done():
		// The commit goes ahead; the caller answers an error and a retry
		// of the same ids is reported as duplicates.
		return Result{}, ctx.Err()
	case <-s.failedCh:
		// The commit may never finish; its records are not acknowledged,
		// and a retry after the restart stores them or finds them stored.
		select {
		case r := <-req.done:
			return r.result()
		default:
			return Result{}, s.Failed()
		}
	}
}

// result is what Submit answers for a finished commit: a request refused
// for a conflicting id stored nothing and is an error, whichever way its
// reply arrived.
func (r reply) result() (Result, error) {
	if r.err == nil && r.res.conflict != nil {
		return Result{}, r.res.conflict
	}
	return r.res, r.err
}

// Err is why the store refuses records, if it does: a commit failure
// (Failed) or a read-only opening (ReadOnly).
func (s *Store) Err() error {
	if s.readOnly != nil {
		return s.readOnly
	}
	return s.Failed()
}

// Failed is the write or sync failure that stopped ingest after the store
// opened, if any. The engine's state after a failed write-ahead log write
// is unknown, so only reopening the store (a restart) clears it.
func (s *Store) Failed() error {
	s.failedMu.Lock()
	defer s.failedMu.Unlock()
	return s.failed
}

// ReadOnly is why the store was opened read-only, or nil when it writes.
func (s *Store) ReadOnly() error { return s.readOnly }

// A group passes two goroutines in order. The committer looks up its ids
// and applies its batch to Pebble without waiting for the WAL sync; the
// batch is visible at once, so the next group's lookups see its ids. The
// syncer waits for each group's sync in the same order, then counts it and
// answers its requests. So the committer builds group N+1 while group N's
// fsync is in flight, and Pebble folds the syncs of groups queued behind
// one another into one.
//
// A group is answered only after every group before it is durable: a
// duplicate may name a record of the previous group, which must not be
// acknowledged as stored before it is.
type pending struct {
	group   []*request
	results []Result
	batch   *pebble.Batch // nil when every record was a duplicate
	counted rollup.Batch
	seq     uint64 // last record sequence once this group is durable
	records int
	start   time.Time
	err     error
}

// syncDepth bounds the groups applied but not yet durable.
const syncDepth = 8

func (s *Store) commitLoop() {
	synced := make(chan *pending, syncDepth)
	go s.syncLoop(synced)
	defer close(synced)
	for req := range s.queue {
		group := []*request{req}
		n := len(req.records)
	drain:
		for n < s.opts.MaxGroupRecords {
			select {
			case more, ok := <-s.queue:
				if !ok {
					break drain
				}
				group = append(group, more)
				n += len(more.records)
			default:
				break drain
			}
		}
		synced <- s.apply(group)
	}
}

// syncLoop answers groups in order once durable, and checkpoints the
// rollups, which only it changes after Open.
func (s *Store) syncLoop(synced <-chan *pending) {
	defer close(s.stopped)
	tick := time.NewTicker(s.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case p, ok := <-synced:
			if !ok {
				if err := s.checkpoint(); err != nil {
					s.opts.Logger.Error("final checkpoint", "err", err)
				}
				return
			}
			s.finish(p)
		case <-tick.C:
			if err := s.checkpoint(); err != nil {
				s.opts.Logger.Error("checkpoint", "err", err)
			}
		}
	}
}

// apply looks up a group's ids and applies its new records to Pebble, not
// waiting for the sync.
func (s *Store) apply(group []*request) *pending {
	p := &pending{group: group, results: make([]Result, len(group)), start: time.Now(), seq: s.seq}
	if p.err = s.Err(); p.err != nil {
		return p
	}
	events, responses, size := 0, 0, 0
	for _, req := range group {
		for i := range req.records {
			r := &req.records[i]
			if r.Kind == rollup.KindTouchpoint {
				events++
			} else {
				responses++
			}
			size += 2*len(r.Subject) + 2*len(r.ID) + len(r.JSON) + 64
			if len(r.Contact) > 0 {
				size += len(r.Contact) + 32
			}
		}
	}
	// Sized once: growing a batch record by record copies it each time.
	batch := s.db.NewBatchWithSize(size)
	inGroup := make(map[string]uint64, events+responses) // id key -> fingerprint
	p.counted.Events = make([]rollup.NamedEvent, 0, events)
	p.counted.Responses = make([]rollup.NamedResponse, 0, responses)
	var key, value []byte
	// One iterator for the whole group: its per-table readers, index and
	// bloom filter blocks are opened once instead of once per lookup.
	ids, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixID}, UpperBound: []byte{prefixID + 1}})
	if err != nil {
		_ = batch.Close()
		p.err = fmt.Errorf("look up ids: %w", err)
		return p
	}
	seq := s.seq
	var added []string // this request's ids, taken back if it is refused
	// The commit time is the clock of the contacts' retention.
	committed := s.opts.Now().UnixNano()
	// backdated is the last sequence whose contact is stored with a time
	// before the commit (ContactSince), 0 for none.
	var backdated uint64
	for gi, req := range group {
		// Every id is looked up before any record is written: a request
		// that reuses a stored id for a different payload is refused whole.
		added = added[:0]
		for i := range req.records {
			r := &req.records[i]
			key = idKey(key, r.Kind, r.Subject, r.ID)
			stored, dup := inGroup[string(key)]
			if !dup && ids.SeekPrefixGE(key) && bytes.Equal(ids.Key(), key) {
				v, err := ids.ValueAndErr()
				if err != nil {
					_ = ids.Close()
					_ = batch.Close()
					p.err = fmt.Errorf("look up ids: %w", err)
					return p
				}
				stored, dup = storedFingerprint(v), true
			}
			if !dup {
				k := string(key)
				inGroup[k] = r.Fingerprint
				added = append(added, k)
				continue
			}
			if stored != 0 && r.Fingerprint != 0 && stored != r.Fingerprint {
				for _, k := range added {
					delete(inGroup, k)
				}
				p.results[gi] = Result{conflict: &ConflictError{Index: i, ID: r.ID}}
				break
			}
			p.results[gi].markDuplicate(i, len(req.records))
		}
		if p.results[gi].conflict != nil {
			continue
		}
		for i := range req.records {
			if p.results[gi].Duplicate != nil && p.results[gi].Duplicate[i] {
				continue
			}
			r := &req.records[i]
			seq++
			var idv [16]byte
			binary.BigEndian.PutUint64(idv[:8], seq)
			binary.BigEndian.PutUint64(idv[8:], r.Fingerprint)
			idValue := idv[:]
			if r.Fingerprint == 0 {
				idValue = idv[:8]
			}
			_ = batch.Set(idKey(key, r.Kind, r.Subject, r.ID), idValue, nil)
			value = appendRecord(value[:0], r) // Set copies it
			_ = batch.Set(recordKey(seq), value, nil)
			if len(r.Contact) > 0 {
				// In the record's batch: a record is never stored
				// without its contact, nor a contact without its record.
				at := committed
				if r.ContactSince > 0 && r.ContactSince < committed {
					at, backdated = r.ContactSince, seq
				}
				key = contactKey(key, seq)
				value = appendContact(value[:0], at, r.Contact)
				_ = batch.Set(key, value, nil)
			}
			appendToBatch(&p.counted, r)
			p.results[gi].Accepted++
			p.records++
		}
	}
	if err := ids.Close(); err != nil {
		_ = batch.Close()
		p.err = fmt.Errorf("look up ids: %w", err)
		return p
	}
	if backdated > 0 {
		_ = batch.Set(keyBackdatedContacts, binary.BigEndian.AppendUint64(nil, backdated), nil)
	}
	if p.records == 0 {
		_ = batch.Close()
		return p
	}
	if err := s.db.ApplyNoSyncWait(batch, pebble.Sync); err != nil {
		_ = batch.Close()
		p.err = fmt.Errorf("commit: %w", err)
		s.setFailed(p.err)
		return p
	}
	p.batch, p.seq = batch, seq
	s.seq = seq
	return p
}

// finish waits for a group's sync, counts it and answers it.
func (s *Store) finish(p *pending) {
	if p.batch != nil {
		syncStart := time.Now()
		err := p.batch.SyncWait()
		_ = p.batch.Close()
		if err != nil && p.err == nil {
			p.err = fmt.Errorf("commit: %w", err)
		}
		s.metrics.fsync.Observe(time.Since(syncStart).Seconds())
	}
	// After a failure, a later group that did sync is still answered with
	// the error: the store stops at the first one it cannot vouch for.
	if p.err == nil {
		p.err = s.Err()
	}
	if p.err != nil {
		s.fail(p.group, p.err)
		return
	}
	if p.batch != nil {
		s.rollups.Apply(&p.counted)
		s.durable = p.seq
		s.committed.Store(p.seq)
	}
	s.metrics.groupRecords.Observe(float64(p.records))
	s.metrics.commit.Observe(time.Since(p.start).Seconds())
	for gi, req := range p.group {
		req.done <- reply{res: p.results[gi]}
	}
}

// fail answers the group with err and stops ingest: after a failed sync
// the state of the write-ahead log is unknown, so the only safe next step
// is a restart, which replays what did reach the disk.
func (s *Store) fail(group []*request, err error) {
	s.setFailed(err)
	for _, req := range group {
		req.done <- reply{err: err}
	}
}

// setFailed records the first commit failure; later ones only add to the
// log.
func (s *Store) setFailed(err error) {
	s.failedMu.Lock()
	defer s.failedMu.Unlock()
	if s.failed == nil {
		s.opts.Logger.Error("store failed; restart the collector", "err", err)
		s.failed = err
		close(s.failedCh)
	}
}

// checkpoint persists changed rollups with the sequence they cover.
func (s *Store) checkpoint() error {
	if s.Err() != nil {
		// Nothing may be written: the store is read-only, or a commit
		// failed and the write-ahead log cannot be trusted with another
		// write (Pebble ends the process on a commit to a failed log).
		return nil
	}
	defer func(start time.Time) { s.metrics.checkpoint.Observe(time.Since(start).Seconds()) }(time.Now())
	entries, err := s.rollups.Flush(s.opts.Now())
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	for _, e := range entries {
		if e.Value == nil {
			_ = b.Delete(e.Key, nil)
		} else {
			_ = b.Set(e.Key, e.Value, nil)
		}
	}
	var seqb [8]byte
	binary.BigEndian.PutUint64(seqb[:], s.durable)
	_ = b.Set(keyCheckpoint, seqb[:], nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// stuckCloseWait is how long Close waits for the committer of a failed
// store.
const stuckCloseWait = 2 * time.Second

// Close stops accepting records, commits what is queued, writes a final
// checkpoint and closes the database.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.queue)
	s.closeMu.Unlock()
	select {
	case <-s.stopped:
	case <-s.failedCh:
		// A failed store's committer may be stalled in the engine for
		// good; the process is about to exit, and what was acknowledged
		// is synced, so it is left as it is.
		select {
		case <-s.stopped:
		case <-time.After(stuckCloseWait):
			return fmt.Errorf("close: the store failed (%w) and its last write never finished; not closed cleanly", s.Failed())
		}
	}
	s.stopCompactions()
	s.readers.Lock()
	defer s.readers.Unlock()
	s.dbClosed = true
	return s.db.Close()
}

// Export calls fn with the JSON of every stored record of one subject, in
// the order they were stored.
func (s *Store) Export(kind rollup.Kind, subject string, fn func(json []byte) error) error {
	return s.scanRecords(0, func(_ uint64, _ []byte, r *Record) error {
		if r.Kind != kind || r.Subject != subject {
			return nil
		}
		return fn(r.JSON)
	})
}

// Has reports whether a record of subject with this idempotency key is
// stored.
func (s *Store) Has(kind rollup.Kind, subject, id string) (bool, error) {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return false, ErrClosed
	}
	_, closer, err := s.db.Get(idKey(nil, kind, subject, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// LastSeq is the sequence of the last committed record.
func (s *Store) LastSeq() uint64 { return s.committed.Load() }

// DB is the store's database, shared with the survey engine, whose keys
// start with 's' and which the store never reads.
func (s *Store) DB() *pebble.DB { return s.db }

// scanRecords calls fn with every stored record from sequence from on, in
// order, without their contacts. The record's JSON is only valid during
// the call.
func (s *Store) scanRecords(from uint64, fn func(seq uint64, key []byte, r *Record) error) error {
	return s.scan(from, false, fn)
}

// scan is scanRecords, with each record's Contact read too when contacts
// is set.
func (s *Store) scan(from uint64, contacts bool, fn func(seq uint64, key []byte, r *Record) error) error {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(from), UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return fmt.Errorf("read records: %w", err)
	}
	defer func() { _ = it.Close() }()
	var cr *contactReader
	if contacts {
		ci, err := s.db.NewIter(&pebble.IterOptions{LowerBound: contactKey(nil, from), UpperBound: []byte{prefixContact + 1}})
		if err != nil {
			return fmt.Errorf("read contacts: %w", err)
		}
		defer func() { _ = ci.Close() }()
		cr = &contactReader{it: ci}
	}
	for it.First(); it.Valid(); it.Next() {
		r, err := decodeRecord(it.Value())
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		if err != nil {
			return fmt.Errorf("stored record at key %x (sequence %d): %w", it.Key(), seq, err)
		}
		if cr != nil && r.Kind == rollup.KindTouchpoint {
			if r.Contact, err = cr.contact(seq); err != nil {
				return fmt.Errorf("read contacts: %w", err)
			}
		}
		if err := fn(seq, it.Key(), &r); err != nil {
			return err
		}
	}
	return it.Error()
}

// PruneRecords deletes raw records (and their idempotency keys) whose
// event time is before cutoff, as PruneExpired does, and returns how many
// it deleted.
func (s *Store) PruneRecords(cutoff time.Time) (int, error) {
	r, err := s.PruneExpired(cutoff, cutoff)
	return r.Deleted, err
}

// Copy writes a consistent copy of the database to dir (a backup).
func (s *Store) Copy(dir string) error { return s.db.Checkpoint(dir) }

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}

var _ io.Closer = (*Store)(nil)
