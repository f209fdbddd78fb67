package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// TestExactlyOnceAcrossReplicas has two replicas (one with pgx's statement
// cache off, as behind PgBouncer in transaction mode) and three goroutines
// each append overlapping batches of the same ids, then recounts: every id
// accepted exactly once across all answers, stored once, counted once.
func TestExactlyOnceAcrossReplicas(t *testing.T) {
	dsn := server.NewDatabase(t)
	a := open(t, dsn)
	b := open(t, dsn, func(o *Options) { o.NoStatementCache = true; o.MaxGroupRecords = 300 })
	const ids = 3000
	recs := make([]store.Record, ids)
	for i := range recs {
		recs[i] = event([]string{"chat", "phone"}[i%2], fmt.Sprintf("ev-%d", i), t0.Add(-time.Duration(i)*time.Minute), uint64(i), float64(i%120))
	}
	var accepted, duplicates atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 6 {
		st := []*Store{a, b}[g%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			submit := func(batch []store.Record) {
				res, err := st.Submit(context.Background(), batch)
				if err != nil {
					errs <- err
					return
				}
				if res.Accepted+res.Duplicates != len(batch) {
					errs <- fmt.Errorf("%d accepted + %d duplicates for %d records", res.Accepted, res.Duplicates, len(batch))
				}
				accepted.Add(int64(res.Accepted))
				duplicates.Add(int64(res.Duplicates))
			}
			// Random overlapping batches of 50, some ids twice in a batch...
			for range 40 {
				batch := make([]store.Record, 50)
				for i := range batch {
					batch[i] = recs[rng.IntN(ids)]
				}
				submit(batch)
			}
			// ...then every id, in this goroutine's own order.
			perm := rng.Perm(ids)
			for i := 0; i < ids; i += 100 {
				batch := make([]store.Record, 0, 100)
				for _, j := range perm[i:min(i+100, ids)] {
					batch = append(batch, recs[j])
				}
				submit(batch)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := accepted.Load(); got != ids {
		t.Errorf("accepted %d records in all answers, want %d (each id once)", got, ids)
	}
	if got, want := duplicates.Load(), int64(6*(40*50+ids)-ids); got != want {
		t.Errorf("%d duplicates, want %d", got, want)
	}
	storedOnce(t, a, ids)
	// Both replicas fold; the lease lets one at a time, and each record is
	// folded once whoever folds it.
	var fw sync.WaitGroup
	for _, st := range []*Store{a, b} {
		fw.Add(1)
		go func() { defer fw.Done(); foldAll(t, st) }()
	}
	fw.Wait()
	foldAll(t, a)
	foldAll(t, b)
	fs, err := a.FoldState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fs.Folded != ids || fs.Tail != 0 {
		t.Errorf("fold state %+v, want %d folded and an empty tail", fs, ids)
	}
	agg, _, err := b.TouchpointWindow(context.Background(), []string{"chat", "phone"}, 28*24*time.Hour, t0.Add(time.Second), t0) // t0 holds a record; windows end before their end
	if err != nil {
		t.Fatal(err)
	}
	if agg.Interactions != ids {
		t.Errorf("summary counts %d interactions, want %d", agg.Interactions, ids)
	}
}

// TestConflictRefusesWholeRequest: an id reused for another payload refuses
// its whole request (the collector's 422), stores nothing of it, and names
// the record; a retry of the same payload is a duplicate.
func TestConflictRefusesWholeRequest(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	ctx := context.Background()
	a := event("chat", "a", t0, 1, 10)
	if res, err := s.Submit(ctx, []store.Record{a}); err != nil || res.Accepted != 1 {
		t.Fatalf("first append: %+v, %v", res, err)
	}
	changed := event("chat", "a", t0, 1, 99) // same id, another payload
	b := event("chat", "b", t0, 2, 10)
	_, err := s.Submit(ctx, []store.Record{b, changed})
	var ce *store.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrConflict) || ce.Index != 1 || ce.ID != "a" {
		t.Fatalf("reused id: err %v, want a conflict naming record 1, id a", err)
	}
	if want := `record 1: id "a" is already stored with a different payload`; err.Error() != want {
		t.Errorf("conflict message %q, want %q", err, want)
	}
	if has, _ := s.Has(ctx, rollup.KindTouchpoint, "chat", "b"); has {
		t.Error("record b of the refused request was stored")
	}
	// The same id twice in one request with two payloads.
	c1, c2 := event("chat", "c", t0, 3, 10), event("chat", "c", t0, 3, 11)
	if _, err := s.Submit(ctx, []store.Record{c1, c2}); !errors.As(err, &ce) || ce.Index != 1 {
		t.Fatalf("id reused within a request: %v, want a conflict at record 1", err)
	}
	if has, _ := s.Has(ctx, rollup.KindTouchpoint, "chat", "c"); has {
		t.Error("record c of the refused request was stored")
	}
	// Retrying the stored payload is a duplicate, beside a new record.
	res, err := s.Submit(ctx, []store.Record{b, a})
	if err != nil || res.Accepted != 1 || res.Duplicates != 1 || res.Duplicate == nil || !res.Duplicate[1] || res.Duplicate[0] {
		t.Fatalf("retry: %+v, %v; want b accepted and a a duplicate", res, err)
	}
	// An unknown fingerprint never conflicts.
	unknown := changed
	unknown.Fingerprint = 0
	if res, err := s.Submit(ctx, []store.Record{unknown}); err != nil || res.Duplicates != 1 {
		t.Fatalf("unknown fingerprint: %+v, %v; want a duplicate", res, err)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != 2 {
		t.Errorf("%d records stored, want 2 (a and b)", n)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 2 {
		t.Errorf("%d idempotency keys, want 2 (a and b)", n)
	}
}

// TestConflictInOneGroupGivesBackKeys queues requests behind a blocked
// committer so that they commit in one group: a refused request's new ids
// are given back, and a later request of the group that carries the same
// id stores it.
func TestConflictInOneGroupGivesBackKeys(t *testing.T) {
	s := open(t, server.NewDatabase(t), func(o *Options) { o.Committers = 1 })
	ctx := context.Background()
	stored := event("chat", "x", t0, 1, 10)
	if _, err := s.Submit(ctx, []store.Record{stored}); err != nil {
		t.Fatal(err)
	}
	// Hold the only committer on a lock of cxop_ids so the next three
	// requests queue up and go in one group.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE cxop_ids IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	blocker := make(chan error, 1)
	go func() { _, err := s.Submit(ctx, []store.Record{event("chat", "first", t0, 9, 1)}); blocker <- err }()
	waitFor(t, func() bool {
		return len(s.queue) == 0 && count(t, s, `SELECT count(*) FROM pg_locks WHERE NOT granted`) > 0
	})
	type answer struct {
		res store.Result
		err error
	}
	answers := make([]chan answer, 3)
	y := event("chat", "y", t0, 2, 10)
	requests := [][]store.Record{
		{y, event("chat", "x", t0, 1, 99)}, // y new, x conflicts: refused
		{event("chat", "z", t0, 3, 10), y}, // z new, y new again
		{y},                                // y a duplicate of request 2
	}
	for i, r := range requests {
		answers[i] = make(chan answer, 1)
		go func() { res, err := s.Submit(ctx, r); answers[i] <- answer{res, err} }()
		waitFor(t, func() bool { return len(s.queue) == i+1 })
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	got := []answer{<-answers[0], <-answers[1], <-answers[2]}
	var ce *store.ConflictError
	if !errors.As(got[0].err, &ce) || ce.Index != 1 {
		t.Errorf("request 1: %+v, want a conflict at record 1", got[0])
	}
	if got[1].err != nil || got[1].res.Accepted != 2 {
		t.Errorf("request 2: %+v, want both records accepted", got[1])
	}
	if got[2].err != nil || got[2].res.Duplicates != 1 {
		t.Errorf("request 3: %+v, want a duplicate", got[2])
	}
	var fp int64
	if err := s.pool.QueryRow(ctx, `SELECT fingerprint FROM cxop_ids WHERE id = 'y'`).Scan(&fp); err != nil || uint64(fp) != y.Fingerprint {
		t.Errorf("y stored with fingerprint %d (%v), want %d", fp, err, y.Fingerprint)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != 4 {
		t.Errorf("%d records, want 4 (x, first, y, z)", n)
	}
}

// waitFor polls a condition the test cannot be told about otherwise.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConcurrentConflictAcrossReplicas: eight clients on two replicas send
// the same id at once, each with its own payload. Exactly one is stored;
// every other is a conflict (422), and a client retrying the winner's
// payload is told it is a duplicate.
func TestConcurrentConflictAcrossReplicas(t *testing.T) {
	dsn := server.NewDatabase(t)
	replicas := []*Store{open(t, dsn), open(t, dsn, func(o *Options) { o.NoStatementCache = true })}
	ctx := context.Background()
	for round := range 10 {
		id := fmt.Sprintf("same-%d", round)
		start := make(chan struct{})
		type answer struct {
			rec store.Record
			res store.Result
			err error
		}
		answers := make(chan answer, 8)
		for c := range 8 {
			rec := event("chat", id, t0, uint64(c), float64(c)) // the payload differs per client
			go func() {
				<-start
				res, err := replicas[c%2].Submit(ctx, []store.Record{rec})
				answers <- answer{rec, res, err}
			}()
		}
		close(start)
		var winner *store.Record
		conflicts := 0
		for range 8 {
			a := <-answers
			switch {
			case a.err == nil && a.res.Accepted == 1:
				if winner != nil {
					t.Fatalf("round %d: two payloads stored under one id", round)
				}
				winner = &a.rec
			case errors.Is(a.err, store.ErrConflict):
				conflicts++
			default:
				t.Fatalf("round %d: %+v, %v; want stored or a conflict", round, a.res, a.err)
			}
		}
		if winner == nil || conflicts != 7 {
			t.Fatalf("round %d: winner %v, %d conflicts; want one and 7", round, winner != nil, conflicts)
		}
		res, err := replicas[round%2].Submit(ctx, []store.Record{*winner})
		if err != nil || res.Duplicates != 1 {
			t.Fatalf("round %d: retry of the stored payload: %+v, %v; want a duplicate", round, res, err)
		}
	}
	if n := count(t, replicas[0], `SELECT count(*) FROM cxop_records`); n != 10 {
		t.Errorf("%d records, want 10", n)
	}
}

// TestUnstorableRecordFailsOnlyItsRequest: a record PostgreSQL would refuse
// (NUL in an id) is refused before it can join a group, naming the record,
// and the same call's other records are not stored.
func TestUnstorableRecordFailsOnlyItsRequest(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	ctx := context.Background()
	bad := event("chat", "nul\x00id", t0, 1, 1)
	_, err := s.Submit(ctx, []store.Record{event("chat", "ok", t0, 2, 1), bad})
	if !errors.Is(err, ErrUnstorable) || !strings.Contains(err.Error(), "record 1: ") || !strings.Contains(err.Error(), "its id") {
		t.Fatalf("NUL in an id: %v", err)
	}
	if res, err := s.Submit(ctx, []store.Record{event("chat", "ok", t0, 2, 1)}); err != nil || res.Accepted != 1 {
		t.Fatalf("a good record afterwards: %+v, %v", res, err)
	}
}

// TestOverloadedAndClosed: with the committer stuck and the queue full a
// request is refused at once with store.ErrOverloaded (the collector's
// 429/503); Close commits what was queued; afterwards store.ErrClosed.
func TestOverloadedAndClosed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{DSN: server.NewDatabase(t), FoldInterval: -1, Committers: 1, QueueLength: 1})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE cxop_ids IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	answers := make(chan error, 2)
	go func() { _, err := s.Submit(ctx, []store.Record{event("chat", "1", t0, 1, 1)}); answers <- err }()
	waitFor(t, func() bool {
		return len(s.queue) == 0 && count(t, s, `SELECT count(*) FROM pg_locks WHERE NOT granted`) > 0
	})
	go func() { _, err := s.Submit(ctx, []store.Record{event("chat", "2", t0, 2, 1)}); answers <- err }()
	waitFor(t, func() bool { return len(s.queue) == 1 })
	if _, err := s.Submit(ctx, []store.Record{event("chat", "3", t0, 3, 1)}); !errors.Is(err, store.ErrOverloaded) {
		t.Fatalf("full queue: %v, want store.ErrOverloaded", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	for range 2 {
		if err := <-answers; err != nil {
			t.Errorf("a request queued before Close: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, []store.Record{event("chat", "4", t0, 4, 1)}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("after Close: %v, want store.ErrClosed", err)
	}
}

// The records, their tail rows and their feed entries of one group carry
// the same sequences, ascending in the order the records were submitted
// (export follows it), with the tail's fields as the record's.
func TestAppendNumbersRecordsTailAndFeedAlike(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	var recs []store.Record
	for i := range 60 {
		at := t0.Add(time.Duration(59-i) * time.Second) // sequence order is not time order
		if i%2 == 0 {
			recs = append(recs, event("chat", fmt.Sprintf("e%02d", i), at, uint64(i+1), float64(i)))
		} else {
			recs = append(recs, answer("nps", fmt.Sprintf("r%02d", i), at, uint64(i+1), i%11))
		}
	}
	if res, err := s.Submit(context.Background(), recs); err != nil || res.Accepted != len(recs) {
		t.Fatalf("submit: %+v %v", res, err)
	}
	rows, err := s.Pool().Query(context.Background(), `SELECT r.seq, r.id, r.event_time = t.event_time AND r.customer_hash = t.customer_hash
  AND r.wait_seconds = t.wait_seconds AND r.flags = t.flags AND r.score = t.score AND r.kind = t.kind AND r.subject = t.subject,
  f.value
FROM cxop_records r JOIN cxop_tail t USING (seq)
  JOIN cxop_engine_kv f ON f.key = '\x732f666565642f'::bytea || int8send(r.seq)
ORDER BY r.seq`)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	var last int64
	var seq int64
	var id string
	var same bool
	var feed []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &id, &same, &feed}, func() error {
		if i >= len(recs) {
			return fmt.Errorf("more rows than records: %d", seq)
		}
		r := recs[i]
		kind, subject, _, body, err := kv.DecodeFeed(feed)
		switch {
		case err != nil:
			return err
		case seq <= last, id != r.ID:
			return fmt.Errorf("row %d: sequence %d id %s, want after %d and id %s", i, seq, id, last, r.ID)
		case !same:
			return fmt.Errorf("record %s: its tail row differs", id)
		case kind != byte(r.Kind) || subject != r.Subject || string(body) != string(r.JSON):
			return fmt.Errorf("record %s: feed entry %c %s %s", id, kind, subject, body)
		}
		last = seq
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(recs) {
		t.Fatalf("%d records with tail row and feed entry, want %d", i, len(recs))
	}
}

// TestAppendFeedsOnlyWhatTheEngineWants: a record marked SkipFeed (nothing
// in the accepting collector's config acts on it) is stored and counted
// like any other but gets no feed entry, and so its contact is not kept;
// in the same group, the others get theirs under their own sequences.
func TestAppendFeedsOnlyWhatTheEngineWants(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	ctx := context.Background()
	var recs []store.Record
	for i := range 40 {
		r := event("chat", fmt.Sprintf("e%02d", i), t0.Add(time.Duration(i)*time.Second), uint64(i+1), float64(i))
		r.Contact = fmt.Appendf(nil, `{"email":"c%02d@example.com"}`, i)
		r.SkipFeed = i%4 != 0
		recs = append(recs, r)
	}
	if res, err := s.Submit(ctx, recs); err != nil || res.Accepted != len(recs) {
		t.Fatalf("submit: %+v %v", res, err)
	}
	var records, tail int
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM cxop_records), (SELECT count(*) FROM cxop_tail)`).Scan(&records, &tail); err != nil {
		t.Fatal(err)
	}
	if records != 40 || tail != 40 {
		t.Fatalf("%d records and %d tail rows stored, want 40 of each", records, tail)
	}
	rows, err := s.Pool().Query(ctx, `SELECT r.id, f.value FROM cxop_engine_kv f
  JOIN cxop_records r ON f.key = '\x732f666565642f'::bytea || int8send(r.seq) ORDER BY r.seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var id string
	var value []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &value}, func() error {
		_, _, contact, _, err := kv.DecodeFeed(value)
		got = append(got, id+" "+string(contact))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 0; i < 40; i += 4 {
		want = append(want, fmt.Sprintf(`e%02d {"email":"c%02d@example.com"}`, i, i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("feed entries:\n%q\nwant\n%q", got, want)
	}
	var all int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM cxop_engine_kv WHERE key >= '\x732f666565642f'::bytea AND key < '\x732f666565642f'::bytea || '\xff'::bytea`).Scan(&all); err != nil {
		t.Fatal(err)
	}
	if all != len(want) {
		t.Fatalf("%d feed entries in all, want %d", all, len(want))
	}
}
