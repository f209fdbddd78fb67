package pgstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/store"
)

// TestFoldOnlyByLeaseHolder: while another replica holds the fold lease this
// one folds nothing, and summaries still count every record from the tail;
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
	if n, err := s.Fold(ctx); err != nil || n != 50 {
		t.Fatalf("fold after the lease expired: %d, %v; want 50", n, err)
	}
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
// or a fold that left the tail in another transaction than it wrote the
// buckets, would count a record twice or not at all.
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

// TestFoldPlanSurvivesStaleStatistics: the tail swings between empty and
// hundreds of thousands of rows, and the planner's statistics may date from
// when it was empty. The fold's delete must still take its batch by the
// primary key's order, not compare every tail row with every row of the
// batch (a nested-loop join over a batch of 10,000 and a tail of 200,000 ran
// for minutes under load and let the tail grow without bound).
func TestFoldPlanSurvivesStaleStatistics(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t), func(o *Options) { o.FoldBatch = 10000 })
	const rows = 30000
	insert := func(first int64) {
		t.Helper()
		if _, err := s.pool.Exec(ctx, `INSERT INTO cxop_tail (seq, kind, subject, event_time, customer_hash, wait_seconds, flags, score)
SELECT g, 'e', 'chat', $1::bigint + g, g, 0, 0, 0 FROM generate_series($2::bigint, $2::bigint + $3 - 1) g`,
			t0.Add(-time.Hour).UnixNano(), first, rows); err != nil {
			t.Fatal(err)
		}
	}
	// Statistics taken just after a fold emptied the tail: pages, no rows.
	insert(1)
	if _, err := s.pool.Exec(ctx, `DELETE FROM cxop_tail`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE cxop_tail`); err != nil {
		t.Fatal(err)
	}
	insert(rows + 1)
	var plan []string
	explain, err := s.pool.Query(ctx, "EXPLAIN "+foldDeleteSQL, s.opts.FoldBatch)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	if _, err := pgx.ForEachRow(explain, []any{&line}, func() error { plan = append(plan, line); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, l := range plan {
		if strings.Contains(l, "Nested Loop") || strings.Contains(l, "Join Filter") {
			t.Fatalf("the fold's delete joins the batch against the tail:\n%s", strings.Join(plan, "\n"))
		}
	}
	n, err := s.Fold(ctx)
	if err != nil || n != 10000 {
		t.Fatalf("fold: %d, %v; want 10000", n, err)
	}
	fs, err := s.FoldState(ctx)
	if err != nil || fs.Tail != rows-10000 || fs.Folded != 10000 || fs.Watermark != rows+10000 {
		t.Errorf("fold state %+v (%v); want the lowest 10000 sequences folded and %d in the tail", fs, err, rows-10000)
	}
}
