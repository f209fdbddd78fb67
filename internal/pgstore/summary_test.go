package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

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
	// Bursts as live ingest folds them: runs of one subject within a
	// minute, the runs crossing minute boundaries and taking turns.
	for i := range 600 {
		at := t0.Add(-10*time.Minute + time.Duration(i)*170*time.Millisecond)
		all = append(all, event([]string{"chat", "phone"}[i/50%2], fmt.Sprintf("burst-%d", i), at, rng.Uint64N(900), rng.ExpFloat64()*40))
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
	if n, err := pg.Fold(ctx); err != nil || n != 1500 {
		t.Fatalf("fold: %d, %v; want 1500 folded", n, err)
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
	ends := []time.Time{t0.Add(time.Second), t0.Add(-9*time.Minute + 30*time.Second), t0.Add(-90 * time.Minute), t0.Add(-37*time.Hour - 13*time.Minute), t0.Add(-5 * 24 * time.Hour)}
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
