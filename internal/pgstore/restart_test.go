package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/store"
)

// TestDatabaseRestartMidIngest stops PostgreSQL (fast shutdown: open
// transactions roll back, connections drop) while four clients append,
// and starts it again. While it is down every append fails with an error
// that is ErrUnavailable (the collector's 503); each client retries its
// batch until it is acknowledged. Afterwards every acknowledged id is
// stored exactly once and nothing else is.
func TestDatabaseRestartMidIngest(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	s := open(t, dsn, func(o *Options) { o.FoldInterval = 50 * time.Millisecond; o.CommitTimeout = 20 * time.Second })
	const clients, size = 4, 20
	var acked atomic.Int64
	var refused atomic.Int64
	down := make(chan struct{})       // closed once the server is stopped
	sawFailure := make(chan struct{}) // closed at the first refusal after that
	stopIngest := make(chan struct{}) // clients finish their batch in hand and stop
	var failOnce sync.Once
	var mu sync.Mutex
	var ackedIDs []string
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stopIngest:
					return
				default:
				}
				batch := make([]store.Record, size)
				for i := range batch {
					batch[i] = event("chat", fmt.Sprintf("c%d-b%d-r%d", c, b, i), t0.Add(-time.Duration(b%600)*time.Second), uint64(i), 3)
				}
				// A batch is retried until it is acknowledged, as a client
				// does after a 503.
				for {
					res, err := s.Submit(context.Background(), batch)
					if err == nil {
						if res.Accepted+res.Duplicates != size {
							errs <- fmt.Errorf("batch %d/%d: %+v", c, b, res)
							return
						}
						mu.Lock()
						for _, r := range batch {
							ackedIDs = append(ackedIDs, r.ID)
						}
						mu.Unlock()
						acked.Add(size)
						break
					}
					if !errors.Is(err, ErrUnavailable) {
						errs <- fmt.Errorf("batch %d/%d refused with %v, which the collector could not map to 503", c, b, err)
						return
					}
					refused.Add(1)
					select {
					case <-down:
						failOnce.Do(func() { close(sawFailure) })
					default:
					}
					time.Sleep(20 * time.Millisecond) // a client's retry delay
				}
			}
		}()
	}
	// Clients stop before the store closes, however the test ends.
	stopOnce := sync.OnceFunc(func() { close(stopIngest); wg.Wait() })
	defer stopOnce()
	waitFor(t, func() bool { return acked.Load() >= 400 })
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	close(down)
	select {
	case <-sawFailure:
	case err := <-errs:
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Ingest goes on after the restart.
	resumed := acked.Load()
	waitFor(t, func() bool { return acked.Load() >= resumed+400 })
	stopOnce()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range ackedIDs {
		want[id] = true
	}
	if len(want) != len(ackedIDs) {
		t.Fatalf("%d acknowledgements for %d ids", len(ackedIDs), len(want))
	}
	t.Logf("%d appends refused while the database was down, then retried", refused.Load())
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, `SELECT id, count(*) FROM cxop_records GROUP BY id`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("id %s stored %d times", id, n)
		}
		stored[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for id := range want {
		if !stored[id] {
			lost++
		}
	}
	if lost != 0 || len(stored) != len(want) {
		t.Errorf("acked=%d stored=%d lost=%d", len(want), len(stored), lost)
	}
	foldAll(t, s)
	a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 24*time.Hour, t0.Add(time.Second), t0)
	if err != nil || a.Interactions != uint64(len(want)) {
		t.Errorf("rollups count %d (%v), want %d", a.Interactions, err, len(want))
	}
}
