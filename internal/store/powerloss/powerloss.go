// Package powerloss cuts the power under the collector's store: writers
// submit records to a store on Pebble's crashable in-memory filesystem,
// and at random moments the filesystem is cloned as a power loss would
// leave it (everything synced, and a random share of what was not). Each
// clone is opened as a restart would open it, and every record
// acknowledged before the cut must be there, stored and counted exactly
// once. One restart in four takes more records and loses its power
// again.
//
// A SIGKILL (test/collector/crash) leaves the operating system's page
// cache intact, so it cannot catch a missing fsync; a power loss can.
package powerloss

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// Options shape a run.
type Options struct {
	// CrashPoints is how many power losses to simulate.
	CrashPoints int
	// Writers submit concurrently. Default 4.
	Writers int
	// Seed makes the cut moments and the surviving unsynced data
	// reproducible, as far as goroutine scheduling allows. 0 picks one.
	Seed uint64
	// Log receives progress lines; nil logs nothing.
	Log func(format string, args ...any)
}

// Result is what the run found.
type Result struct {
	Seed        uint64
	CrashPoints int
	// Acked is how many records were acknowledged by the end; Checked is
	// how many acknowledged records the crash points verified in all.
	Acked, Checked int
	// Lost counts acknowledged records missing from a clone; Dup counts
	// records stored or counted more than once in a clone; Phantom counts
	// stored ids that were never sent.
	Lost, Dup, Phantom int
	// Unacked counts records a clone kept although their request was not
	// acknowledged before the cut (allowed: the client retries them and
	// they are answered as duplicates).
	Unacked int
	// Failures describes the first problems found.
	Failures []string
}

func (r Result) String() string {
	return fmt.Sprintf("acked=%d lost=%d dup=%d", r.Acked, r.Lost, r.Dup)
}

// OK reports whether nothing acknowledged was lost and nothing was stored
// or counted twice.
func (r Result) OK() bool { return r.Lost == 0 && r.Dup == 0 && r.Phantom == 0 && len(r.Failures) == 0 }

const (
	dir     = "/data"
	subject = "chat"
	// window covers every record's time in the counts.
	window = 28 * 24 * time.Hour
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// record is the i-th record sent; its time is within the hour before now
// (a window's end is exclusive).
func record(id string, i int) store.Record {
	return store.Record{Kind: rollup.KindTouchpoint, Subject: subject, ID: id,
		JSON:  fmt.Appendf(nil, `{"id":%q,"touchpoint":%q}`, id, subject),
		Event: rollup.Event{Time: now.Add(-time.Duration(1+i%3600) * time.Second).UnixNano(), CustomerHash: uint64(i), HasWait: true, WaitSeconds: float64(i % 300), Assessed: true, Compliant: i%300 <= 120}}
}

func storeOptions(fs vfs.FS, checkpoint time.Duration) store.Options {
	return store.Options{
		Dir: dir, FS: fs, Now: func() time.Time { return now },
		CheckpointInterval: checkpoint,
		// Small memtables and cache, so that flushes and compactions run
		// between the cuts, and a clone opens fast.
		MemTableBytes: 256 << 10, CacheBytes: 1 << 20,
		MinFreeBytes: -1,
	}
}

// ledger is what the writers sent and what was acknowledged.
type ledger struct {
	mu    sync.Mutex
	sent  map[string]int // every id ever submitted, with its record's number
	acked []string       // in order of acknowledgement
}

// Run simulates opts.CrashPoints power losses.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.CrashPoints < 1 {
		return Result{}, errors.New("crash points: at least 1")
	}
	if opts.Writers <= 0 {
		opts.Writers = 4
	}
	if opts.Seed == 0 {
		opts.Seed = uint64(time.Now().UnixNano())
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := Result{Seed: opts.Seed}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15))
	for done := 0; done < opts.CrashPoints; done += crashPointsPerStore {
		n := min(crashPointsPerStore, opts.CrashPoints-done)
		if err := runStore(ctx, opts, rng, n, &res); err != nil {
			return res, fmt.Errorf("seed %d, crash points %d to %d: %w", opts.Seed, done+1, done+n, err)
		}
		if (done+n)%100 == 0 || done+n == opts.CrashPoints {
			logf("%d of %d power losses: %s", done+n, opts.CrashPoints, res)
		}
	}
	return res, nil
}

// crashPointsPerStore is how many cuts one store's life sees before the
// next starts afresh, so that a check reads a bounded number of records.
const crashPointsPerStore = 20

// runStore writes to a fresh store and cuts its power n times.
func runStore(ctx context.Context, opts Options, rng *rand.Rand, n int, res *Result) error {
	fs := vfs.NewCrashableMem()
	// Checkpoints every few milliseconds, so that cuts fall before, during
	// and after them.
	st, err := store.Open(storeOptions(fs, 15*time.Millisecond))
	if err != nil {
		return err
	}
	l := &ledger{sent: map[string]int{}}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	werr := make(chan error, opts.Writers)
	seed := rng.Uint64()
	for w := range opts.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := write(wctx, st, l, w, seed); err != nil {
				werr <- err
			}
		}()
	}
	defer func() {
		stopWriters()
		wg.Wait()
		_ = st.Close()
	}()
	for range n {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case err := <-werr:
			return err
		default:
		}
		// Let the writers run a little: from nothing up to a few
		// milliseconds.
		if d := time.Duration(rng.IntN(4000)) * time.Microsecond; d > 0 {
			time.Sleep(d)
		}
		// Everything acknowledged so far was synced before it was
		// acknowledged, so it is in the clone taken after this line.
		l.mu.Lock()
		acked := len(l.acked)
		l.mu.Unlock()
		cfg := vfs.CrashCloneCfg{}
		if rng.IntN(4) > 0 {
			// Three cuts in four keep a random share of the unsynced
			// blocks and directory entries: torn writes.
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 1))}
		}
		clone := fs.CrashClone(cfg)
		res.CrashPoints++
		// One cut in four is followed by writes to the recovered store
		// and a second cut.
		if err := check(clone, l, acked, res, rng, rng.IntN(4) == 0); err != nil {
			return err
		}
	}
	stopWriters()
	wg.Wait()
	l.mu.Lock()
	res.Acked += len(l.acked)
	l.mu.Unlock()
	return nil
}

// write submits batches of new records, and now and then a batch that
// repeats acknowledged ids (a client's retry), until ctx ends.
func write(ctx context.Context, st *store.Store, l *ledger, w int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
	n := 0
	for ctx.Err() == nil {
		size := 1 + rng.IntN(40)
		recs := make([]store.Record, 0, size)
		ids := make([]string, 0, size)
		l.mu.Lock()
		for range size {
			if len(l.acked) > 0 && rng.IntN(10) == 0 {
				// The same record again, as a client resends it.
				id := l.acked[rng.IntN(len(l.acked))]
				recs = append(recs, record(id, l.sent[id]))
				continue
			}
			n++
			id := fmt.Sprintf("w%d-%d", w, n)
			l.sent[id] = n
			recs = append(recs, record(id, n))
			ids = append(ids, id)
		}
		l.mu.Unlock()
		_, err := st.Submit(context.Background(), recs)
		switch {
		case errors.Is(err, store.ErrOverloaded):
			time.Sleep(time.Millisecond)
			continue
		case err != nil:
			return fmt.Errorf("submit: %w", err)
		}
		l.mu.Lock()
		l.acked = append(l.acked, ids...)
		l.mu.Unlock()
		// A pause of up to half a millisecond lets a cut fall between
		// requests as well as in the middle of a group commit.
		time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
	}
	return nil
}

// check opens a clone as a restart would and compares it with the ledger:
// the first acked acknowledged ids must each be stored once, and the
// rollups must count exactly what is stored. With again set it then
// writes to the recovered store (a new batch, and a resent acknowledged
// record that must be a duplicate) and cuts its power too: a power loss
// soon after a restart, with the checkpoint the restart wrote in flight.
func check(clone *vfs.MemFS, l *ledger, acked int, res *Result, rng *rand.Rand, again bool) error {
	st, err := store.Open(storeOptions(clone, time.Hour))
	if err != nil {
		return fmt.Errorf("reopen after the power loss: %w", err)
	}
	defer func() { _ = st.Close() }()
	l.mu.Lock()
	ackedIDs := l.acked[:acked:acked]
	l.mu.Unlock()
	sent := func(id string) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		_, ok := l.sent[id]
		return ok
	}
	if err := verify(st, ackedIDs, sent, res); err != nil || !again {
		return err
	}

	batch := make([]store.Record, 0, 21)
	var fresh []string
	for i := range 20 {
		id := fmt.Sprintf("p%d-%d", res.CrashPoints, i)
		fresh = append(fresh, id)
		batch = append(batch, record(id, i))
	}
	var resent string
	if len(ackedIDs) > 0 {
		resent = ackedIDs[rng.IntN(len(ackedIDs))]
		l.mu.Lock()
		batch = append(batch, record(resent, l.sent[resent]))
		l.mu.Unlock()
	}
	r, err := st.Submit(context.Background(), batch)
	if err != nil {
		return fmt.Errorf("write after the restart: %w", err)
	}
	if resent != "" && (r.Duplicate == nil || !r.Duplicate[len(batch)-1]) {
		res.Dup++
		res.fail("acknowledged record %s, resent after a restart, was stored again", resent)
	}
	clone2 := clone.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 2))})
	st2, err := store.Open(storeOptions(clone2, time.Hour))
	if err != nil {
		return fmt.Errorf("reopen after a second power loss: %w", err)
	}
	defer func() { _ = st2.Close() }()
	freshSet := map[string]bool{}
	for _, id := range fresh {
		freshSet[id] = true
	}
	return verify(st2, append(ackedIDs, fresh...), func(id string) bool { return freshSet[id] || sent(id) }, res)
}

// verify checks one reopened store: every id of acked stored once, no id
// that was never sent, and rollups that count exactly what is stored.
func verify(st *store.Store, acked []string, sent func(string) bool, res *Result) error {
	stored := map[string]int{}
	err := st.Export(rollup.KindTouchpoint, subject, func(js []byte) error {
		// {"id":"w0-1","touchpoint":"chat"}
		var id string
		if _, err := fmt.Sscanf(string(js), `{"id":%q`, &id); err != nil {
			return fmt.Errorf("exported record %s: %w", js, err)
		}
		stored[id]++
		return nil
	})
	if err != nil {
		return fmt.Errorf("export after the power loss: %w", err)
	}
	ackedSet := make(map[string]bool, len(acked))
	for _, id := range acked {
		ackedSet[id] = true
		res.Checked++
		if stored[id] == 0 {
			res.Lost++
			res.fail("acknowledged record %s is missing after a power loss", id)
		}
	}
	total := 0
	for id, n := range stored {
		total += n
		if n > 1 {
			res.Dup += n - 1
			res.fail("record %s is stored %d times", id, n)
		}
		if !sent(id) {
			res.Phantom++
			res.fail("record %s was never sent", id)
		}
		if !ackedSet[id] {
			res.Unacked++
		}
	}
	agg, _, err := st.Rollups().TouchpointWindow([]string{subject}, window, now, now)
	if err != nil {
		return fmt.Errorf("count after the power loss: %w", err)
	}
	if agg.Interactions != uint64(total) {
		if agg.Interactions > uint64(total) {
			res.Dup += int(agg.Interactions) - total
		} else {
			res.Lost += total - int(agg.Interactions)
		}
		res.fail("the rollups count %d interactions, the store holds %d records", agg.Interactions, total)
	}
	return nil
}

func (r *Result) fail(format string, args ...any) {
	if len(r.Failures) < 10 {
		r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
	}
}
