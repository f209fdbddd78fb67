package pgstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/store"
)

// TestFoldOnlyByLeaseHolder: while another replica holds the fold lease this
// one folds nothing, and summaries still count every record from the tail
// (the records above the watermark);
// once the lease expires it takes it and folds all, and the counts do not
// move.
func TestFoldOnlyByLeaseHolder(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t))
	var recs []store.Record
	for i := range 50 {
		recs = append(recs, event("chat", string(rune('a'+i%26))+string(rune('a'+i/26)), t0.Add(-time.Duration(i)*time.Minute), uint64(i), 30))
	}
	if _, err := s.Submit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE cxop_leases SET holder = 'other', expires_at = now() + interval '1 hour' WHERE name = 'fold'`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Fold(ctx); err != nil || n != 0 {
		t.Fatalf("fold without the lease: %d, %v; want 0", n, err)
	}
	summary := func() uint64 {
		a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 2*time.Hour, t0.Add(time.Second), t0)
		if err != nil {
			t.Fatal(err)
		}
		return a.Interactions
	}
	if got := summary(); got != 50 {
		t.Errorf("summary from the tail: %d, want 50", got)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE cxop_leases SET expires_at = now() - interval '1 second' WHERE name = 'fold'`); err != nil {
		t.Fatal(err)
	}
	foldAll(t, s)
	var holder string
	if err := s.pool.QueryRow(ctx, `SELECT holder FROM cxop_leases WHERE name = 'fold'`).Scan(&holder); err != nil || holder != s.opts.Holder {
		t.Errorf("fold lease held by %q (%v), want this replica %q", holder, err, s.opts.Holder)
	}
	if got := summary(); got != 50 {
		t.Errorf("summary from the rollups: %d, want 50", got)
	}
	fs, err := s.FoldState(ctx)
	if err != nil || fs.Tail != 0 || fs.Folded != 50 || fs.Watermark == 0 {
		t.Errorf("fold state %+v (%v)", fs, err)
	}
}

// TestSummaryExactWhileFolding reads summaries while two clients append and
// a folder folds in small batches: each answer counts at least the records
// acknowledged before it was asked and at most those sent by the time it
// came back. A summary that read the rollups and the tail in two snapshots,
// or a fold that moved its watermark past a record still being appended,
// would count a record twice or not at all.
func TestSummaryExactWhileFolding(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t), func(o *Options) { o.FoldBatch = 37 })
	var sent, acked, folds atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The clients and the folder stop before the store closes, however the
	// test ends.
	defer func() { close(stop); wg.Wait() }()
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]store.Record, 10)
				for i := range batch {
					batch[i] = event("chat", fmt.Sprintf("c%d-%d-%d", c, b, i), t0.Add(-time.Duration(b%600)*time.Second), uint64(b), 1)
				}
				sent.Add(10)
				if _, err := s.Submit(ctx, batch); err != nil {
					t.Error(err)
					return
				}
				acked.Add(10)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := s.Fold(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if n > 0 {
				folds.Add(1)
			}
		}
	}()
	// Summaries go on until they have overlapped many folds.
	deadline := time.Now().Add(time.Minute)
	for reads := 0; reads < 300 || folds.Load() < 30; reads++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d summaries and %d folds in a minute", reads, folds.Load())
		}
		low := acked.Load()
		a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, time.Hour, t0.Add(time.Second), t0)
		high := sent.Load()
		if err != nil {
			t.Fatal(err)
		}
		if n := int64(a.Interactions); n < low || n > high {
			t.Fatalf("summary counted %d with %d acknowledged before and %d sent after", n, low, high)
		}
	}
}

// TestFoldReadPlanSurvivesStaleStatistics: a fold step reads the pages of
// its batch, not the whole day, however stale the planner's statistics are
// (taken here when the day was empty) and however far behind the fold is.
func TestFoldReadPlanSurvivesStaleStatistics(t *testing.T) {
	ctx := context.Background()
	const rows, batch = 30000, 1000
	s := open(t, server.NewDatabase(t), func(o *Options) { o.FoldBatch = batch })
	if _, err := s.pool.Exec(ctx, `ANALYZE cxop_records`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO cxop_records (seq, event_time, kind, subject, id, customer_hash, wait_seconds, flags, score, body)
SELECT nextval('cxop_record_seq'), $1::bigint + g, 'e', 'chat', 'r' || g, g, 0, 0, 0, '\x7b7d' FROM generate_series(1, $2) g`,
		t0.Add(-time.Hour).UnixNano(), rows); err != nil {
		t.Fatal(err)
	}
	var pages int
	if err := s.pool.QueryRow(ctx, `SELECT pg_relation_size('cxop_records_p20261120') / current_setting('block_size')::int`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	// One batch from the middle, as a fold behind by many batches reads it.
	explain, err := s.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+foldReadSQL, rows/2, rows/2+batch)
	if err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan struct {
			Rows int `json:"Actual Rows"`
			Hit  int `json:"Shared Hit Blocks"`
			Read int `json:"Shared Read Blocks"`
		}
	}
	if _, err := pgx.ForEachRow(explain, []any{&plans}, func() error { return nil }); err != nil || len(plans) != 1 {
		t.Fatalf("explain: %v (%d plans)", err, len(plans))
	}
	p := plans[0].Plan
	if p.Rows != batch || p.Hit+p.Read > pages/4 {
		t.Errorf("a batch of %d read %d rows and %d buffers of a day of %d pages; want the batch's rows and a fraction of the pages", batch, p.Rows, p.Hit+p.Read, pages)
	}
	foldAll(t, s)
	fs, err := s.FoldState(ctx)
	if err != nil || fs.Tail != 0 || fs.Folded != rows || fs.Watermark != rows {
		t.Errorf("fold state %+v (%v); want all %d folded", fs, err, rows)
	}
	a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 2*time.Hour, t0, t0)
	if err != nil || a.Interactions != rows {
		t.Errorf("summary after the fold: %v (%v), want %d interactions", a.Interactions, err, rows)
	}
}

// TestFoldWaitsForAppendsInFlight: an append that drew its sequence and
// has not committed holds the watermark below that sequence, however many
// later appends commit and however often the fold runs; once it commits,
// its record is folded, and every summary in between counts each
// committed record once.
func TestFoldWaitsForAppendsInFlight(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t))
	summary := func() uint64 {
		t.Helper()
		a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 2*time.Hour, t0.Add(time.Second), t0)
		if err != nil {
			t.Fatal(err)
		}
		return a.Interactions
	}
	// The slow append, as the append runs: its key first, then its
	// sequence, then its record.
	slow, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	r := event("chat", "slow", t0.Add(-time.Minute), 1, 5)
	if _, err := slow.Exec(ctx, `INSERT INTO cxop_ids (kind, subject, id, fingerprint, event_time) VALUES ('e', 'chat', 'slow', 0, $1)`, r.Time()); err != nil {
		t.Fatal(err)
	}
	var seq int64
	if err := slow.QueryRow(ctx, `SELECT nextval('cxop_record_seq')`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	row := rowOf(seq, &r)
	if _, err := slow.Exec(ctx, `INSERT INTO cxop_records (seq, event_time, kind, subject, id, customer_hash, wait_seconds, flags, score, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, row.seq, row.time, row.kind, row.subject, row.id, row.hash, row.wait, row.flags, row.score, row.body); err != nil {
		t.Fatal(err)
	}
	for b := range 5 {
		var batch []store.Record
		for i := range 10 {
			batch = append(batch, event("chat", fmt.Sprintf("b%d-%d", b, i), t0.Add(-time.Duration(i)*time.Second), uint64(i), 5))
		}
		if _, err := s.Submit(ctx, batch); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := s.Fold(ctx); err != nil {
				t.Fatal(err)
			}
		}
		fs, err := s.FoldState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fs.Watermark >= seq {
			t.Fatalf("watermark %d passed sequence %d of an append still running", fs.Watermark, seq)
		}
		if got, want := summary(), uint64(10*(b+1)); got != want {
			t.Fatalf("summary %d, want %d", got, want)
		}
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := summary(); got != 51 {
		t.Fatalf("summary after the slow append committed: %d, want 51", got)
	}
	foldAll(t, s)
	fs, err := s.FoldState(ctx)
	if err != nil || fs.Folded != 51 || fs.Tail != 0 {
		t.Fatalf("fold state %+v (%v); want all 51 folded", fs, err)
	}
	if got := summary(); got != 51 {
		t.Fatalf("summary after the fold: %d, want 51", got)
	}
}

// TestFoldStallWarnsOncePerMinute: a fold that keeps waiting on an old
// transaction warns after a minute of it and then once a minute; a step
// that settles resets the clock.
func TestFoldStallWarnsOncePerMinute(t *testing.T) {
	var c stallClock
	at := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	var warned []int
	for s := 0; s <= 150; s++ {
		if c.observe(s < 130, at.Add(time.Duration(s)*time.Second)) {
			warned = append(warned, s)
		}
	}
	if !slices.Equal(warned, []int{60, 120}) {
		t.Fatalf("warned at seconds %v, want [60 120]", warned)
	}
	if c.observe(true, at.Add(200*time.Second)) {
		t.Fatal("warned at once after the stall had ended and begun again")
	}
}
