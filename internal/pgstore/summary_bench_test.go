package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// BenchmarkSurveyWindow28d answers a 28-day survey summary over the rollups
// that 10M answers from 1M customers spread evenly over the 28 days leave
// (about 15,000 answers an hour: dense customer sketches in every day and
// in most hours), plus 200 answers still in the tail, as
// `make bench-collector-pg` measures it through HTTP. One op is one
// SurveyWindow. The buckets are built directly (not folded from records)
// so that the setup takes seconds.
//
//	PG_BIN=/usr/lib/postgresql/15/bin go test -run '^$' -bench SurveyWindow28d -benchmem ./internal/pgstore
func BenchmarkSurveyWindow28d(b *testing.B) {
	ctx := context.Background()
	s := open(b, server.NewDatabase(b))
	const perHour, perMinute, customers = 15_000, 250, 1_000_000
	rng := rand.New(rand.NewPCG(5, 6))
	fill := func(n int) *rollup.Survey {
		a := rollup.NewSurvey()
		for range n {
			a.Add(&rollup.Response{Time: 1, CustomerHash: rng.Uint64N(customers) * 0x9E3779B97F4A7C15, Score: rng.IntN(11)})
		}
		return a
	}
	buckets := map[bucketID]agg{}
	id := func(res rollup.Resolution, start time.Time) bucketID {
		return bucketID{rollup.KindSurvey, "nps", rollup.BucketKey{Res: res, Start: start.UnixNano()}}
	}
	first := t0.Add(-29 * 24 * time.Hour).Truncate(24 * time.Hour)
	for day := first; day.Before(t0); day = day.Add(24 * time.Hour) {
		d := rollup.NewSurvey()
		for h := day; h.Before(day.Add(24*time.Hour)) && h.Before(t0); h = h.Add(time.Hour) {
			a := fill(perHour)
			if err := d.Merge(a); err != nil {
				b.Fatal(err)
			}
			buckets[id(rollup.Hour, h)] = agg{sv: a}
		}
		buckets[id(rollup.Day, day)] = agg{sv: d}
	}
	for m := t0.Add(-48 * time.Hour); m.Before(t0); m = m.Add(time.Minute) {
		buckets[id(rollup.Minute, m)] = agg{sv: fill(perMinute)}
	}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return storeBuckets(ctx, tx, buckets) }); err != nil {
		b.Fatal(err)
	}
	// The summary's end falls inside a minute, as a request's "now" does:
	// minute tiles at both edges of the window.
	end := t0.Add(-17*time.Minute - 30*time.Second)
	var tail []store.Record
	for i := range 200 {
		tail = append(tail, answer("nps", fmt.Sprintf("t-%d", i), end.Add(-time.Duration(i)*time.Second), rng.Uint64N(customers), rng.IntN(11)))
	}
	if _, err := s.Submit(ctx, tail); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		sv, _, err := s.SurveyWindow(ctx, "nps", 28*24*time.Hour, end, end)
		if err != nil {
			b.Fatal(err)
		}
		if sv.Responses() < 27*24*perHour {
			b.Fatalf("%d responses", sv.Responses())
		}
		if sv.Customers.Estimate() == 0 {
			b.Fatal("no customers")
		}
	}
	b.StopTimer()
	if s.buckets != nil {
		n, used := s.buckets.stats()
		b.ReportMetric(float64(n), "cached-buckets")
		b.ReportMetric(float64(used), "cached-bytes")
	}
}
