package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// claimCounts is what a replica's claims did: groups committed with a COPY
// claim, groups committed with INSERT … ON CONFLICT, COPY claims refused.
type claimCounts struct{ copied, inserted, refused int64 }

func claimsOf(s *Store) claimCounts {
	return claimCounts{s.claims.copied.Load(), s.claims.inserted.Load(), s.claims.refused.Load()}
}

// TestCopyClaimForNewKeys: a group whose keys are all new is claimed by
// COPY, with the same answers as ever: the same id twice in one request is
// a duplicate of the first, and a request reusing an id for another
// payload within the group is refused with nothing of it stored.
func TestCopyClaimForNewKeys(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	ctx := context.Background()
	a, b := event("chat", "a", t0, 1, 10), event("chat", "b", t0, 2, 20)
	res, err := s.Submit(ctx, []store.Record{a, b, a})
	if err != nil || res.Accepted != 2 || res.Duplicates != 1 || !res.Duplicate[2] {
		t.Fatalf("new group: %+v, %v; want a and b accepted, the second a a duplicate", res, err)
	}
	if got, want := claimsOf(s), (claimCounts{copied: 1}); got != want {
		t.Fatalf("claims %+v, want %+v", got, want)
	}
	c1, c2, d := event("chat", "c", t0, 3, 10), event("chat", "c", t0, 3, 11), event("chat", "d", t0, 4, 10)
	var ce *store.ConflictError
	if _, err := s.Submit(ctx, []store.Record{d, c1, c2}); !errors.As(err, &ce) || ce.Index != 2 || ce.ID != "c" {
		t.Fatalf("id reused within a new request: %v, want a conflict at record 2, id c", err)
	}
	if got, want := claimsOf(s), (claimCounts{copied: 2}); got != want {
		t.Fatalf("claims %+v, want %+v", got, want)
	}
	for _, id := range []string{"c", "d"} {
		if has, _ := s.Has(ctx, rollup.KindTouchpoint, "chat", id); has {
			t.Errorf("record %s of the refused request was stored", id)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 2 {
		t.Errorf("%d idempotency keys, want 2 (a and b)", n)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != 2 {
		t.Errorf("%d records, want 2 (a and b)", n)
	}
}

// TestCopyClaimMeetsStoredKey: a group holding a key stored before fails
// its COPY claim and runs again with INSERT … ON CONFLICT, which answers
// duplicate for the same payload and a conflict for another, storing
// nothing of a refused request; the replica then claims its next groups
// with INSERT … ON CONFLICT for a while before it tries COPY again.
func TestCopyClaimMeetsStoredKey(t *testing.T) {
	dsn := server.NewDatabase(t)
	s := open(t, dsn)
	ctx := context.Background()
	a := event("chat", "a", t0, 1, 10)
	if res, err := s.Submit(ctx, []store.Record{a}); err != nil || res.Accepted != 1 {
		t.Fatalf("first append: %+v, %v", res, err)
	}
	// A retry of a beside a new record b.
	b := event("chat", "b", t0, 2, 10)
	res, err := s.Submit(ctx, []store.Record{b, a})
	if err != nil || res.Accepted != 1 || res.Duplicates != 1 || res.Duplicate[0] || !res.Duplicate[1] {
		t.Fatalf("retry: %+v, %v; want b accepted and a a duplicate", res, err)
	}
	if got, want := claimsOf(s), (claimCounts{copied: 1, inserted: 1, refused: 1}); got != want {
		t.Fatalf("claims %+v, want %+v", got, want)
	}
	// Another replica, whose next group tries COPY: a reused with another
	// payload beside a new record d.
	other := open(t, dsn)
	changed, d := event("chat", "a", t0, 1, 99), event("chat", "d", t0, 4, 10)
	var ce *store.ConflictError
	if _, err := other.Submit(ctx, []store.Record{d, changed}); !errors.As(err, &ce) || ce.Index != 1 || ce.ID != "a" {
		t.Fatalf("reused id: %v, want a conflict at record 1, id a", err)
	}
	if got, want := claimsOf(other), (claimCounts{inserted: 1, refused: 1}); got != want {
		t.Fatalf("other replica's claims %+v, want %+v", got, want)
	}
	if has, _ := other.Has(ctx, rollup.KindTouchpoint, "chat", "d"); has {
		t.Error("record d of the refused request was stored")
	}
	var fp int64
	if err := s.pool.QueryRow(ctx, `SELECT fingerprint FROM cxop_ids WHERE id = 'a'`).Scan(&fp); err != nil || uint64(fp) != a.Fingerprint {
		t.Errorf("a stored with fingerprint %d (%v), want the first payload's %d", fp, err, a.Fingerprint)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 2 {
		t.Errorf("%d idempotency keys, want 2 (a and b)", n)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != 2 {
		t.Errorf("%d records, want 2 (a and b)", n)
	}
	// The pause: new groups claim with INSERT … ON CONFLICT; one that
	// meets a stored key starts the pause again.
	for i := range copyClaimPause - 1 {
		if _, err := s.Submit(ctx, []store.Record{event("chat", fmt.Sprintf("p-%d", i), t0, 5, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := s.Submit(ctx, []store.Record{a}); err != nil || res.Duplicates != 1 {
		t.Fatalf("retry in the pause: %+v, %v; want a duplicate", res, err)
	}
	if got, want := claimsOf(s), (claimCounts{copied: 1, inserted: 1 + copyClaimPause, refused: 1}); got != want {
		t.Fatalf("claims %+v after the pause, want %+v", got, want)
	}
	for i := range copyClaimPause {
		if _, err := s.Submit(ctx, []store.Record{event("chat", fmt.Sprintf("q-%d", i), t0, 5, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := claimsOf(s), (claimCounts{copied: 1, inserted: 1 + 2*copyClaimPause, refused: 1}); got != want {
		t.Fatalf("claims %+v after a second pause, want %+v", got, want)
	}
	if _, err := s.Submit(ctx, []store.Record{event("chat", "after", t0, 5, 1)}); err != nil {
		t.Fatal(err)
	}
	if got, want := claimsOf(s), (claimCounts{copied: 2, inserted: 1 + 2*copyClaimPause, refused: 1}); got != want {
		t.Fatalf("claims %+v after the pause ended, want %+v", got, want)
	}
}

// TestCopyClaimWaitsOnConcurrentClaim: a COPY claim that meets a key
// another replica's open transaction inserted waits for it; when that one
// commits, the key is a duplicate (through INSERT … ON CONFLICT), and when
// it rolls back, the COPY claims it.
func TestCopyClaimWaitsOnConcurrentClaim(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			s := open(t, server.NewDatabase(t))
			ctx := context.Background()
			k, n := event("chat", "k", t0, 1, 10), event("chat", "n", t0, 2, 10)
			// Another replica's claim of k, not yet committed.
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, `INSERT INTO cxop_ids (kind, subject, id, fingerprint, event_time) VALUES ($1, $2, $3, $4, $5)`,
				string(rune(k.Kind)), k.Subject, k.ID, int64(k.Fingerprint), k.Time()); err != nil {
				t.Fatal(err)
			}
			type answer struct {
				res store.Result
				err error
			}
			done := make(chan answer, 1)
			go func() { res, err := s.Submit(ctx, []store.Record{k, n}); done <- answer{res, err} }()
			waitFor(t, func() bool {
				return count(t, s, `SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'`) > 0
			})
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := <-done
			if got.err != nil {
				t.Fatal(got.err)
			}
			want, wantClaims := 2, claimCounts{copied: 1}
			if commit {
				want, wantClaims = 1, claimCounts{inserted: 1, refused: 1}
				if got.res.Duplicate == nil || !got.res.Duplicate[0] || got.res.Duplicate[1] {
					t.Errorf("answer %+v, want k a duplicate and n new", got.res)
				}
			}
			if got.res.Accepted != want {
				t.Errorf("%d accepted, want %d", got.res.Accepted, want)
			}
			if c := claimsOf(s); c != wantClaims {
				t.Errorf("claims %+v, want %+v", c, wantClaims)
			}
			if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != want {
				t.Errorf("%d records, want %d", n, want)
			}
			if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 2 {
				t.Errorf("%d idempotency keys, want 2", n)
			}
		})
	}
}

// TestCopyClaimAcrossReplicas: four clients on two replicas each send every
// id once, in batches of 100 in an order of their own, at the same time.
// Every id is accepted exactly once across all the answers and stored
// once; both claims ran (the first group committed anywhere found no key
// taken, and some COPY claim must meet the others' keys, since no replica
// claims with INSERT … ON CONFLICT before one of its claims met a taken key).
func TestCopyClaimAcrossReplicas(t *testing.T) {
	dsn := server.NewDatabase(t)
	replicas := []*Store{open(t, dsn), open(t, dsn, func(o *Options) { o.NoStatementCache = true })}
	const ids, clients = 2000, 4
	recs := make([]store.Record, ids)
	for i := range recs {
		recs[i] = event("chat", fmt.Sprintf("x-%d", i), t0.Add(-time.Duration(i)*time.Minute), uint64(i), float64(i%120))
	}
	var accepted, duplicates atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			perm := rand.New(rand.NewPCG(uint64(c), 11)).Perm(ids)
			for i := 0; i < ids; i += 100 {
				batch := make([]store.Record, 0, 100)
				for _, j := range perm[i : i+100] {
					batch = append(batch, recs[j])
				}
				res, err := replicas[c%2].Submit(context.Background(), batch)
				if err != nil {
					errs <- err
					return
				}
				accepted.Add(int64(res.Accepted))
				duplicates.Add(int64(res.Duplicates))
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := accepted.Load(); got != ids {
		t.Errorf("accepted %d records in all answers, want %d (each id once)", got, ids)
	}
	if got := duplicates.Load(); got != (clients-1)*ids {
		t.Errorf("%d duplicates, want %d", got, (clients-1)*ids)
	}
	storedOnce(t, replicas[0], ids)
	bothClaimPaths(t, replicas[0], replicas[1])
	foldAll(t, replicas[0])
	fs, err := replicas[1].FoldState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fs.Folded != ids || fs.Tail != 0 {
		t.Errorf("fold state %+v, want %d folded and an empty tail", fs, ids)
	}
}

// storedOnce checks that each of ids records is stored once, with one
// idempotency key.
func storedOnce(t *testing.T, s *Store, ids int) {
	t.Helper()
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != ids {
		t.Errorf("%d records stored, want %d", n, ids)
	}
	if n := count(t, s, `SELECT count(DISTINCT (kind, subject, id)) FROM cxop_records`); n != ids {
		t.Errorf("%d distinct ids stored, want %d", n, ids)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != ids {
		t.Errorf("%d idempotency keys, want %d", n, ids)
	}
}

// bothClaimPaths checks that the two replicas claimed groups by COPY, had
// COPY claims refused, and claimed groups by INSERT … ON CONFLICT.
func bothClaimPaths(t *testing.T, r1, r2 *Store) {
	t.Helper()
	a, b := claimsOf(r1), claimsOf(r2)
	t.Logf("claims: %+v and %+v", a, b)
	if a.copied+b.copied == 0 || a.refused+b.refused == 0 || a.inserted+b.inserted == 0 {
		t.Errorf("claims %+v and %+v: want groups claimed by COPY, COPY claims refused and groups claimed by INSERT", a, b)
	}
}
