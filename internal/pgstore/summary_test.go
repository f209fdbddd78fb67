package pgstore

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// TestSummariesMatchEmbeddedStore feeds the same records, duplicates
// included, to the embedded store and to this one, and expects the same
// summaries to the bit for many windows: with part of the records still in
// the tail, and again once all are folded.
func TestSummariesMatchEmbeddedStore(t *testing.T) {
	ctx := context.Background()
	pg := open(t, server.NewDatabase(t), func(o *Options) { o.FoldBatch = 1500 })
	emb, err := store.Open(store.Options{Dir: t.TempDir(), Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Close() })

	rng := rand.New(rand.NewPCG(11, 12))
	var all []store.Record
	for i := range 4000 {
		// Most in the last two days (minute buckets), the rest over 60 days.
		back := time.Duration(rng.Int64N(int64(48 * time.Hour)))
		if i%3 == 0 {
			back = time.Duration(rng.Int64N(int64(60 * 24 * time.Hour)))
		}
		at := t0.Add(-back)
		customer := rng.Uint64N(900)
		switch i % 4 {
		case 0:
			all = append(all, answer("nps", fmt.Sprintf("r-%d", i), at, customer, rng.IntN(11)))
		default:
			all = append(all, event([]string{"chat", "phone", "email"}[i%3], fmt.Sprintf("e-%d", i), at, customer, rng.ExpFloat64()*40))
		}
	}
	for i := 0; i < len(all); i += 97 {
		batch := slices.Clone(all[i:min(i+97, len(all))])
		batch = append(batch, all[rng.IntN(len(all))]) // a retry of some record
		for _, st := range []func([]store.Record) (store.Result, error){
			func(b []store.Record) (store.Result, error) { return emb.Submit(ctx, b) },
			func(b []store.Record) (store.Result, error) { return pg.Submit(ctx, b) },
		} {
			if _, err := st(batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Part folded, part in the tail.
	if n := foldOnce(t, pg); n != 1500 {
		t.Fatalf("fold: %d; want 1500 folded", n)
	}
	compareSummaries(t, emb, pg)
	foldAll(t, pg)
	if fs, _ := pg.FoldState(ctx); fs.Tail != 0 || fs.Folded != int64(len(all)) {
		t.Fatalf("fold state %+v, want all %d folded", fs, len(all))
	}
	compareSummaries(t, emb, pg)
	tps, svs, err := pg.Names(ctx)
	if err != nil || !slices.Equal(tps, []string{"chat", "email", "phone"}) || !slices.Equal(svs, []string{"nps"}) {
		t.Errorf("names %v %v (%v)", tps, svs, err)
	}
}

func compareSummaries(t *testing.T, emb *store.Store, pg *Store) {
	t.Helper()
	ctx := context.Background()
	windows := []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 47 * time.Hour, 7 * 24 * time.Hour, 28 * 24 * time.Hour, 90 * 24 * time.Hour}
	ends := []time.Time{t0.Add(time.Second), t0.Add(-90 * time.Minute), t0.Add(-37*time.Hour - 13*time.Minute), t0.Add(-5 * 24 * time.Hour)}
	nonEmpty := 0
	for _, w := range windows {
		for _, end := range ends {
			for _, names := range [][]string{{"chat"}, {"chat", "phone", "email"}, {"nobody"}} {
				want, ww, err := emb.Rollups().TouchpointWindow(names, w, end, t0)
				if err != nil {
					t.Fatal(err)
				}
				got, gw, err := pg.TouchpointWindow(ctx, names, w, end, t0)
				if err != nil {
					t.Fatal(err)
				}
				if want.Interactions > 0 {
					nonEmpty++
				}
				if d := diffTouchpoint(got, want); d != "" || gw != ww {
					t.Errorf("touchpoints %v, window %s ending %s: %s; windows %+v and %+v", names, w, end, d, gw, ww)
				}
			}
			want, ww, err := emb.Rollups().SurveyWindow("nps", w, end, t0)
			if err != nil {
				t.Fatal(err)
			}
			got, gw, err := pg.SurveyWindow(ctx, "nps", w, end, t0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Counts != want.Counts || got.Last != want.Last || got.Customers.Estimate() != want.Customers.Estimate() || gw != ww {
				t.Errorf("survey, window %s ending %s: counts %v last %d customers %d; embedded %v %d %d", w, end,
					got.Counts, got.Last, got.Customers.Estimate(), want.Counts, want.Last, want.Customers.Estimate())
			}
		}
	}
	if nonEmpty < 30 {
		t.Fatalf("only %d windows held records: the comparison proves little", nonEmpty)
	}
}

func diffTouchpoint(a, b *rollup.Touchpoint) string {
	type nums struct {
		I, W, A, C, RK, R uint64
		Last              int64
		Customers         uint64
	}
	na := nums{a.Interactions, a.Waits, a.Assessed, a.Compliant, a.ResolvedKnown, a.Resolved, a.Last, a.Customers.Estimate()}
	nb := nums{b.Interactions, b.Waits, b.Assessed, b.Compliant, b.ResolvedKnown, b.Resolved, b.Last, b.Customers.Estimate()}
	if na != nb {
		return fmt.Sprintf("counts %+v, embedded %+v", na, nb)
	}
	for _, q := range []float64{0.5, 0.95, 0.99} {
		x, okx := a.WaitQuantile(q)
		y, oky := b.WaitQuantile(q)
		if x != y || okx != oky {
			return fmt.Sprintf("p%g %v (%v), embedded %v (%v)", q*100, x, okx, y, oky)
		}
	}
	return ""
}

// TestSummaryPlanReadsOnlyTheTail: over a day of many folded answers, with
// many interactions not yet folded (written since the day's statistics
// were taken), a survey's summary reads the rollups and the few answers
// above the watermark, not the day and not the other subjects' tail.
func TestSummaryPlanReadsOnlyTheTail(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t), func(o *Options) { o.FoldBatch = 50000 })
	insert := func(kind, subject string, n int) {
		t.Helper()
		if _, err := s.pool.Exec(ctx, `INSERT INTO cxop_records (seq, event_time, kind, subject, id, customer_hash, wait_seconds, flags, score, body)
SELECT nextval('cxop_record_seq'), $1::bigint + g, $3, $4, $3 || nextval('cxop_record_seq'), g, 0, 0, g % 11, '\x7b7d' FROM generate_series(1, $2) g`,
			t0.Add(-2*time.Hour).UnixNano(), n, kind, subject); err != nil {
			t.Fatal(err)
		}
	}
	const answers, tail = 200000, 40000
	insert("r", "nps", answers)
	foldAll(t, s)
	if _, err := s.pool.Exec(ctx, `ANALYZE cxop_records`); err != nil {
		t.Fatal(err)
	}
	insert("e", "chat", tail)
	submit(t, s, []store.Record{answer("nps", "late", t0.Add(-time.Minute), 1, 10)})
	var pages int
	if err := s.pool.QueryRow(ctx, `SELECT pg_relation_size('cxop_records_p20261120') / current_setting('block_size')::int`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	hint, err := s.tailHint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tiles, win := s.opts.Retention.Tiles(28*24*time.Hour, t0, t0)
	var subjects []string
	var res []int16
	var starts, versions []int64
	for _, k := range tiles {
		subjects, res, starts, versions = append(subjects, "nps"), append(res, int16(k.Res)), append(starts, k.Start), append(versions, -1)
	}
	// As readWindow runs it: a generic plan.
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		var plans []struct {
			Plan struct {
				Hit  int `json:"Shared Hit Blocks"`
				Read int `json:"Shared Read Blocks"`
			}
		}
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+windowSQL, "r", subjects, res, starts, versions, []string{"nps"}, win.Start, win.End, hint, int64(math.MaxInt64))
			if err != nil {
				return err
			}
			_, err = pgx.ForEachRow(rows, []any{&plans}, func() error { return nil })
			return err
		})
		if err != nil || len(plans) != 1 {
			t.Fatalf("explain: %v", err)
		}
		got := plans[0].Plan.Hit + plans[0].Plan.Read
		t.Logf("%s: %d buffers", mode, got)
		if got > pages/20 {
			t.Errorf("%s: a summary read %d buffers next to a day of %d pages; want the rollups' and the survey's tail's few", mode, got, pages)
		}
	}
	a, _, err := s.SurveyWindow(ctx, "nps", 28*24*time.Hour, t0, t0)
	if err != nil || a.Responses() != answers+1 {
		t.Fatalf("summary: %v answers (%v), want %d", a.Responses(), err, answers+1)
	}
}
