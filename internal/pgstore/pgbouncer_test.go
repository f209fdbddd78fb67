package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/store"
)

// TestThroughPgBouncerTransactionMode runs two replicas, with pgx's
// statement cache off, through a PgBouncer 1.18 in transaction pooling
// mode with two server connections for sixteen client connections:
// migrations, partitions, overlapping appends, folds under the lease and
// retention all go through it, and the recount is exact.
func TestThroughPgBouncerTransactionMode(t *testing.T) {
	ctx := context.Background()
	bouncer := pgtest.StartPgBouncer(t, server, 2)
	dsn := bouncer.DSN(server.CreateDatabase(t))
	noCache := func(o *Options) { o.NoStatementCache = true }
	replicas := []*Store{open(t, dsn, noCache), open(t, dsn, noCache)}
	const ids = 1000
	recs := make([]store.Record, ids)
	for i := range recs {
		// Over four days, so that appends make partitions.
		recs[i] = event("chat", fmt.Sprintf("pb-%d", i), t0.Add(-time.Duration(i)*5*time.Minute), uint64(i), float64(i%90))
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			perm := rng.Perm(ids)
			for i := 0; i < ids; i += 50 {
				batch := make([]store.Record, 0, 50)
				for _, j := range perm[i:min(i+50, ids)] {
					batch = append(batch, recs[j])
				}
				res, err := replicas[g%2].Submit(ctx, batch)
				if err != nil {
					errs <- err
					return
				}
				accepted.Add(int64(res.Accepted))
			}
		}()
	}
	// Both replicas fold while the appends run.
	stop := make(chan struct{})
	var folders sync.WaitGroup
	for _, st := range replicas {
		folders.Add(1)
		go func() {
			defer folders.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.Fold(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	folders.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := accepted.Load(); got != ids {
		t.Errorf("accepted %d records in all, want %d", got, ids)
	}
	// Both claims ran through it: COPY for the first group, and INSERT …
	// ON CONFLICT after a COPY met a taken key (claim_test.go).
	bothClaimPaths(t, replicas[0], replicas[1])
	foldAll(t, replicas[0])
	a, _, err := replicas[1].TouchpointWindow(ctx, []string{"chat"}, 7*24*time.Hour, t0.Add(time.Second), t0)
	if err != nil || a.Interactions != ids {
		t.Errorf("summary through PgBouncer: %d (%v), want %d", a.Interactions, err, ids)
	}
	if n := count(t, replicas[0], `SELECT count(*) FROM cxop_records`); n != ids {
		t.Errorf("%d records, want %d", n, ids)
	}
	// Retention under its lease, dropping partitions through PgBouncer.
	n, err := replicas[1].PruneRecords(ctx, t0.Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range recs {
		if r.Time() < t0.Add(-48*time.Hour).UnixNano() {
			want++
		}
	}
	if n != want || want == 0 {
		t.Errorf("pruned %d, want %d", n, want)
	}
}
