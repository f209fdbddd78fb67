package pgstore

import (
	"context"
	"testing"
	"time"

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
