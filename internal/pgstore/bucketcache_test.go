package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/store"
	"github.com/jackc/pgx/v5"
)

// clock is a test clock several stores can read.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}
func (c *clock) set(t time.Time)        { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time         { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration)    { c.ns.Add(int64(d)) }
func withClock(c *clock) func(*Options) { return func(o *Options) { o.Now = c.now } }
func noCache(o *Options)                { o.SummaryCacheBytes = -1 }

// summaryView is everything a summary shows of a window's aggregate.
type summaryView struct {
	Names                                []string
	Window                               string
	End                                  time.Time
	Start, Stop                          int64
	Interactions, Waits, Assessed, Compl uint64
	ResolvedKnown, Resolved, Customers   uint64
	Last                                 int64
	P50, P95, P99                        *float64
	Counts                               *[11]uint64
}

// renderSummaries answers many windows at now, touchpoint and survey, and
// renders them as JSON: what two stores must agree on to the byte.
func renderSummaries(t *testing.T, s *Store, now time.Time) []byte {
	t.Helper()
	ctx := context.Background()
	var out []summaryView
	windows := []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 47 * time.Hour, 7 * 24 * time.Hour, 28 * 24 * time.Hour, 60 * 24 * time.Hour}
	ends := []time.Time{now, now.Add(-90 * time.Minute), now.Add(-37*time.Hour - 13*time.Minute), now.Add(-5 * 24 * time.Hour)}
	for _, w := range windows {
		for _, end := range ends {
			for _, names := range [][]string{{"chat"}, {"chat", "phone"}, {"chat", "chat"}} {
				a, win, err := s.TouchpointWindow(ctx, names, w, end, now)
				if err != nil {
					t.Fatal(err)
				}
				v := summaryView{Names: names, Window: w.String(), End: end, Start: win.Start, Stop: win.End,
					Interactions: a.Interactions, Waits: a.Waits, Assessed: a.Assessed, Compl: a.Compliant,
					ResolvedKnown: a.ResolvedKnown, Resolved: a.Resolved, Customers: a.Customers.Estimate(), Last: a.Last}
				for q, dst := range map[float64]**float64{0.5: &v.P50, 0.95: &v.P95, 0.99: &v.P99} {
					if x, ok := a.WaitQuantile(q); ok {
						*dst = &x
					}
				}
				out = append(out, v)
			}
			a, win, err := s.SurveyWindow(ctx, "nps", w, end, now)
			if err != nil {
				t.Fatal(err)
			}
			counts := a.Counts
			out = append(out, summaryView{Names: []string{"nps"}, Window: w.String(), End: end, Start: win.Start, Stop: win.End,
				Customers: a.Customers.Estimate(), Last: a.Last, Counts: &counts})
		}
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameSummaries fails unless the cached store answers as the uncached one.
func sameSummaries(t *testing.T, what string, cached, fresh *Store, now time.Time) {
	t.Helper()
	// Twice: the second read is answered from the cache filled by the first.
	for i := range 2 {
		got, want := renderSummaries(t, cached, now), renderSummaries(t, fresh, now)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s (read %d): the cached store's summaries differ from a fresh read's:\n%s", what, i+1, firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []byte) string {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			lo := max(0, i-12)
			return fmt.Sprintf("line %d: cached %s, fresh %s; before it:\n%s", i, la[i], lb[i], bytes.Join(lb[lo:i], []byte("\n")))
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// records makes n records at times from back before now up to now, from
// customers among many (dense sketches in the busy buckets).
func records(rng *rand.Rand, prefix string, n int, now time.Time, back time.Duration) []store.Record {
	var out []store.Record
	for i := range n {
		at := now.Add(-time.Duration(rng.Int64N(int64(back))))
		customer := rng.Uint64N(50_000) * 0x9E3779B97F4A7C15
		id := fmt.Sprintf("%s-%d", prefix, i)
		switch i % 3 {
		case 0:
			out = append(out, answer("nps", id, at, customer, rng.IntN(11)))
		case 1:
			out = append(out, event("chat", id, at, customer, rng.ExpFloat64()*40))
		default:
			out = append(out, event("phone", id, at, customer, rng.ExpFloat64()*90))
		}
	}
	return out
}

func submit(t *testing.T, s *Store, recs []store.Record) {
	t.Helper()
	for i := 0; i < len(recs); i += 500 {
		if _, err := s.Submit(context.Background(), recs[i:min(i+500, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSummaryCacheAcrossReplicas has a replica that caches buckets answer
// summaries while another replica (another Store over the database) folds,
// folds late records into old day buckets, erases a customer, and prunes
// by a clock days ahead of the reader's, and while the reader's clock
// crosses midnight; after each step its summaries must be byte-identical
// to those of a store without a cache reading the same database.
func TestSummaryCacheAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	readerClock := newClock(t0)
	otherClock := newClock(t0)
	reader := open(t, dsn, withClock(readerClock))
	fresh := open(t, dsn, withClock(readerClock), noCache)
	other := open(t, dsn, withClock(otherClock), func(o *Options) { o.FoldBatch = 700 })
	rng := rand.New(rand.NewPCG(21, 22))

	// Thirty days of records, part folded, part in the tail, with a day
	// of more than 16,384 customers (dense customer sketches).
	submit(t, other, records(rng, "a", 6000, t0, 30*24*time.Hour))
	submit(t, other, records(rng, "dense", 24000, t0.Add(-6*24*time.Hour), 24*time.Hour))
	submit(t, other, records(rng, "b", 3000, t0, 3*time.Hour))
	if n, err := other.Fold(ctx); err != nil || n != 700 {
		t.Fatalf("fold: %d, %v", n, err)
	}
	sameSummaries(t, "part folded", reader, fresh, t0)
	before := reader.decoded.Load()
	renderSummaries(t, reader, t0)
	if d := reader.decoded.Load() - before; d != 0 {
		t.Fatalf("a read with nothing folded since decoded %d buckets; want all from the cache", d)
	}
	if n, _ := reader.buckets.stats(); n == 0 {
		t.Fatal("the cache holds no bucket")
	}

	// The other replica folds the rest: the buckets it rewrote are read again.
	foldAll(t, other)
	sameSummaries(t, "all folded by another replica", reader, fresh, t0)

	// Late records into buckets of weeks ago (day and hour buckets that a
	// cache keyed on time would call closed), folded by the other replica.
	late := records(rng, "late", 400, t0.Add(-20*24*time.Hour), 5*24*time.Hour)
	submit(t, other, late)
	sameSummaries(t, "late records in the tail", reader, fresh, t0)
	submit(t, other, records(rng, "later", 200, t0.Add(-20*24*time.Hour), 5*24*time.Hour))
	sameSummaries(t, "more late records in the tail, the buckets unchanged", reader, fresh, t0)
	foldAll(t, other)
	sameSummaries(t, "late records folded", reader, fresh, t0)

	// An erasure deletes records; the rollups keep what they added, and the
	// summaries stay what a fresh read shows.
	if _, err := other.EraseCustomer(ctx, "nobody"); err != nil {
		t.Fatal(err)
	}
	sameSummaries(t, "after an erasure", reader, fresh, t0)

	// The reader's clock crosses midnight while records arrive around it.
	midnight := t0.Truncate(24 * time.Hour).Add(24 * time.Hour)
	readerClock.set(midnight.Add(-3 * time.Minute))
	submit(t, other, records(rng, "eve", 300, midnight.Add(-3*time.Minute), 2*time.Hour))
	foldAll(t, other)
	sameSummaries(t, "before midnight", reader, fresh, readerClock.now())
	readerClock.set(midnight.Add(2 * time.Minute))
	submit(t, other, records(rng, "night", 300, midnight.Add(2*time.Minute), 4*time.Minute))
	sameSummaries(t, "after midnight, new day's records in the tail", reader, fresh, readerClock.now())
	foldAll(t, other)
	sameSummaries(t, "after midnight, folded", reader, fresh, readerClock.now())

	// The other replica's clock runs three days ahead: its fold drops the
	// minute buckets the reader still counts as kept. The reader must not
	// show what the database no longer has.
	otherClock.set(readerClock.now().Add(3 * 24 * time.Hour))
	submit(t, other, records(rng, "ahead", 50, readerClock.now(), time.Hour))
	minutes := count(t, other, `SELECT count(*) FROM cxop_rollups WHERE resolution = 0`)
	foldAll(t, other)
	if after := count(t, other, `SELECT count(*) FROM cxop_rollups WHERE resolution = 0`); after >= minutes {
		t.Fatalf("the fold ahead kept %d of %d minute buckets; the test needs it to drop them", after, minutes)
	}
	sameSummaries(t, "buckets dropped by a replica whose clock is ahead", reader, fresh, readerClock.now())
}

// TestSummaryCacheReadsOnlyChangedBuckets shows what a summary fetches:
// nothing the cache holds at the row's version, and exactly the buckets a
// fold rewrote.
func TestSummaryCacheReadsOnlyChangedBuckets(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	reader := open(t, dsn)
	other := open(t, dsn)
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []store.Record
	for i := range 200 {
		recs = append(recs, answer("nps", fmt.Sprintf("r-%d", i), t0.Add(-time.Duration(rng.Int64N(int64(10*24*time.Hour)))), rng.Uint64(), rng.IntN(11)))
	}
	submit(t, other, recs)
	foldAll(t, other)
	read := func() int64 {
		before := reader.decoded.Load()
		if _, _, err := reader.SurveyWindow(ctx, "nps", 28*24*time.Hour, t0, t0); err != nil {
			t.Fatal(err)
		}
		return reader.decoded.Load() - before
	}
	if first := read(); first < 10 {
		t.Fatalf("the first read decoded %d buckets; want one per day and hour with answers", first)
	}
	if n := read(); n != 0 {
		t.Fatalf("the second read decoded %d buckets; want 0", n)
	}
	// One answer 3 days ago rewrites its minute, hour and day buckets; the
	// 28d window merges its day bucket only.
	submit(t, other, []store.Record{answer("nps", "late", t0.Add(-3*24*time.Hour-time.Hour), 77, 9)})
	if n := read(); n != 0 {
		t.Fatalf("a read with the answer in the tail decoded %d buckets; want 0", n)
	}
	foldAll(t, other)
	if n := read(); n != 1 {
		t.Fatalf("a read after its fold decoded %d buckets; want 1 (its day)", n)
	}
}

// TestSummaryCacheDatabaseRestored: a database restored from a backup
// taken before buckets the cache holds were written, and then written
// again the same way (the fold of the same records after the restore),
// must not hand those buckets back at the versions the cache holds with the
// restored content. A version drawn from a sequence did: the restored
// sequence handed out the same numbers again, in the same order.
func TestSummaryCacheDatabaseRestored(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	reader := open(t, dsn)
	fresh := open(t, dsn, noCache)
	other := open(t, dsn)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := other.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var recs []store.Record
	for d := range 5 {
		for i := range 20 {
			recs = append(recs, answer("nps", fmt.Sprintf("r-%d-%d", d, i), t0.Add(-time.Duration(d)*24*time.Hour-time.Duration(i)*time.Minute), uint64(d*100+i), d*2))
		}
	}
	submit(t, other, recs)
	foldAll(t, other)
	// -1 stands for "none held" in the summary statement.
	if n, distinct := count(t, other, `SELECT count(*) FROM cxop_rollups WHERE version >= 0`), count(t, other, `SELECT count(DISTINCT version) FROM cxop_rollups`); n < 30 || distinct != n {
		t.Fatalf("%d bucket rows with a version of 0 or more, %d distinct versions; want one distinct version of 0 or more per row", n, distinct)
	}
	// The backup: the buckets as they are now, with their versions.
	exec(`CREATE TABLE backup_rollups AS SELECT * FROM cxop_rollups`)
	var backupSeq int64
	if err := other.pool.QueryRow(ctx, `SELECT last_value FROM cxop_rollup_version`).Scan(&backupSeq); err != nil {
		t.Fatal(err)
	}
	// Answers after the backup rewrite the buckets of the two newest days;
	// the reader caches them at their new versions.
	var later []store.Record
	for d := range 2 {
		for i := range 10 {
			later = append(later, answer("nps", fmt.Sprintf("l-%d-%d", d, i), t0.Add(-time.Duration(d)*24*time.Hour-time.Duration(i)*time.Minute-30*time.Second), 1<<40+uint64(d*1000+i), 10))
		}
	}
	submit(t, other, later)
	foldAll(t, other)
	renderSummaries(t, reader, t0)
	type written struct {
		res   int16
		start int64
	}
	var rewritten []written
	rows, err := other.pool.Query(ctx, `SELECT r.resolution, r.bucket_start FROM cxop_rollups r JOIN backup_rollups b USING (kind, subject, resolution, bucket_start)
WHERE r.version <> b.version ORDER BY r.version`)
	if err != nil {
		t.Fatal(err)
	}
	var w written
	if _, err := pgx.ForEachRow(rows, []any{&w.res, &w.start}, func() error { rewritten = append(rewritten, w); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(rewritten) < 6 {
		t.Fatalf("the later answers rewrote %d buckets; want at least their minutes, hours and days", len(rewritten))
	}
	// The restore: rows and sequence as the backup has them (a data-only
	// restore writes rows without firing triggers).
	exec(`ALTER TABLE cxop_rollups DISABLE TRIGGER cxop_rollup_version`)
	exec(`DELETE FROM cxop_rollups`)
	exec(`INSERT INTO cxop_rollups SELECT * FROM backup_rollups`)
	exec(`ALTER TABLE cxop_rollups ENABLE TRIGGER cxop_rollup_version`)
	exec(`SELECT setval('cxop_rollup_version', $1)`, backupSeq)
	// After it, the same buckets are written again in the same order and by
	// the fold's statement, each with the content the backup has.
	for _, w := range rewritten {
		exec(`INSERT INTO cxop_rollups (kind, subject, resolution, bucket_start, value)
SELECT kind, subject, resolution, bucket_start, value FROM backup_rollups WHERE kind = 'r' AND subject = 'nps' AND resolution = $1 AND bucket_start = $2
ON CONFLICT (kind, subject, resolution, bucket_start) DO UPDATE SET value = excluded.value`, w.res, w.start)
	}
	got, want := renderSummaries(t, reader, t0), renderSummaries(t, fresh, t0)
	if !bytes.Equal(got, want) {
		t.Fatalf("after the restore the cached store's summaries differ:\n%s", firstDiff(got, want))
	}
}

// TestSummaryCacheBounded fills a cache far smaller than the buckets read:
// it stays within its budget and the answers stay exact.
func TestSummaryCacheBounded(t *testing.T) {
	dsn := server.NewDatabase(t)
	const budget = 40 << 10
	reader := open(t, dsn, func(o *Options) { o.SummaryCacheBytes = budget })
	fresh := open(t, dsn, noCache)
	rng := rand.New(rand.NewPCG(8, 9))
	submit(t, reader, records(rng, "x", 3000, t0, 10*24*time.Hour))
	foldAll(t, reader)
	sameSummaries(t, "a small cache", reader, fresh, t0)
	n, used := reader.buckets.stats()
	if used > budget || n == 0 {
		t.Fatalf("the cache holds %d buckets of %d bytes; budget %d", n, used, budget)
	}
	stored := count(t, reader, `SELECT count(*) FROM cxop_rollups`)
	if n >= stored {
		t.Fatalf("the cache holds %d of %d buckets: the budget did not bound it", n, stored)
	}
}

// TestSummaryCacheConcurrentReaders has readers share one cache while
// another replica appends and folds: the buckets they share are only read
// (run it with -race), and each reader's counts only grow, as the records
// committed do.
func TestSummaryCacheConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	reader := open(t, dsn)
	fresh := open(t, dsn, noCache)
	other := open(t, dsn, func(o *Options) { o.FoldBatch = 300 })
	rng := rand.New(rand.NewPCG(31, 32))
	submit(t, other, records(rng, "base", 3000, t0, 5*24*time.Hour))
	foldAll(t, other)
	done := make(chan struct{})
	errs := make(chan error, 4)
	for r := range 4 {
		go func() {
			var lastSurvey, lastChat uint64
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				sv, _, err := reader.SurveyWindow(ctx, "nps", 7*24*time.Hour, t0, t0)
				if err != nil {
					errs <- err
					return
				}
				tp, _, err := reader.TouchpointWindow(ctx, []string{"chat", "phone"}, 7*24*time.Hour, t0, t0)
				if err != nil {
					errs <- err
					return
				}
				if n := sv.Responses(); n < lastSurvey || tp.Interactions < lastChat {
					errs <- fmt.Errorf("reader %d: counts went back: %d answers after %d, %d interactions after %d", r, n, lastSurvey, tp.Interactions, lastChat)
					return
				} else {
					lastSurvey, lastChat = n, tp.Interactions
				}
			}
		}()
	}
	for i := range 10 {
		submit(t, other, records(rng, fmt.Sprintf("more%d", i), 300, t0, 5*24*time.Hour))
		if _, err := other.Fold(ctx); err != nil {
			t.Fatal(err)
		}
	}
	foldAll(t, other)
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	sameSummaries(t, "after concurrent reads", reader, fresh, t0)
}
