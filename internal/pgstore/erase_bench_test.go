package pgstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// eraseBenchEvent is an event as ingest stores it, about 200 bytes of
// JSON: the embedded store's benchmark record.
func eraseBenchEvent(id, customer string, at time.Time) store.Record {
	js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"time":%q,"waitSeconds":42,"resolved":true,"contact":{"email":"%s@example.com","phone":"+4930123456"}}`,
		id, customer, at.Format(time.RFC3339Nano), customer)
	return store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Event: rollup.Event{Time: at.UnixNano(), CustomerHash: xxhash.Sum64String(customer), HasWait: true, WaitSeconds: 42}}
}

// BenchmarkEraseCustomer erases a customer with 10,000 records from a
// database holding 500,000 records of 50,000 other customers (make
// bench-erasure-pg; with -short, 1,000 among 20,000). Each iteration
// stores a new customer's records (not timed) and erases them (timed:
// the committed deletion of the records, their idempotency keys and
// unfolded tail). It reports the median erasure.
func BenchmarkEraseCustomer(b *testing.B) {
	others, mine := 500_000, 10_000
	if testing.Short() {
		others, mine = 20_000, 1_000
	}
	s := open(b, server.NewDatabase(b), func(o *Options) { o.FoldInterval = 50 * time.Millisecond })
	ctx := context.Background()
	submit := func(recs []store.Record) {
		for len(recs) > 0 {
			n := min(len(recs), 5_000)
			if _, err := s.Submit(ctx, recs[:n]); err != nil {
				b.Fatal(err)
			}
			recs = recs[n:]
		}
	}
	at := t0.Add(-24 * time.Hour)
	batch := make([]store.Record, 0, 5_000)
	for i := range others {
		batch = append(batch, eraseBenchEvent(fmt.Sprintf("o%d", i), fmt.Sprintf("customer-%d", i%50_000), at.Add(time.Duration(i)*time.Millisecond)))
		if len(batch) == cap(batch) {
			submit(batch)
			batch = batch[:0]
		}
	}
	submit(batch)
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	run := 0
	for b.Loop() {
		b.StopTimer()
		run++
		customer := fmt.Sprintf("erased-%d", run)
		recs := make([]store.Record, mine)
		for i := range recs {
			recs[i] = eraseBenchEvent(fmt.Sprintf("m%d-%d", run, i), customer, at.Add(time.Duration(i)*time.Second))
		}
		submit(recs)
		b.StartTimer()
		start := time.Now()
		n, err := s.EraseCustomer(ctx, customer)
		took = append(took, time.Since(start))
		b.StopTimer()
		if err != nil || n[customerdata.Events] != mine {
			b.Fatalf("erased %v (%v), want %d events", n, err, mine)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[(len(took)-1)/2].Microseconds())/1000, "ms/erasure-median")
	b.ReportMetric(float64(others), "other-records")
	b.ReportMetric(0, "ns/op")
}
