package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
)

// benchEvent is an event as ingest stores it, about 200 bytes of JSON.
func benchEvent(id, customer string, at time.Time) Record {
	js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"time":%q,"waitSeconds":42,"resolved":true,"contact":{"email":"%s@example.com","phone":"+4930123456"}}`,
		id, customer, at.Format(time.RFC3339Nano), customer)
	return Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Event: rollup.Event{Time: at.UnixNano(), CustomerHash: xxhash.Sum64String(customer), HasWait: true, WaitSeconds: 42}}
}

// BenchmarkEraseCustomer erases a customer with 10,000 records from a
// store holding 500,000 records of 50,000 other customers (make
// bench-erasure). Each iteration stores a new customer's records (not
// timed), erases them (timed: the walk over every record and the synced
// deletions) and waits for the compaction (not timed). It reports the
// median erasure.
func BenchmarkEraseCustomer(b *testing.B) {
	const others, mine = 500_000, 10_000
	s, err := Open(Options{Dir: b.TempDir(), Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	submit := func(recs []Record) {
		for len(recs) > 0 {
			n := min(len(recs), 10_000)
			if _, err := s.Submit(ctx, recs[:n]); err != nil {
				b.Fatal(err)
			}
			recs = recs[n:]
		}
	}
	at := now.Add(-24 * time.Hour)
	batch := make([]Record, 0, 10_000)
	for i := range others {
		batch = append(batch, benchEvent(fmt.Sprintf("o%d", i), fmt.Sprintf("customer-%d", i%50_000), at.Add(time.Duration(i)*time.Millisecond)))
		if len(batch) == cap(batch) {
			submit(batch)
			batch = batch[:0]
		}
	}
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	// The walk alone: a customer with nothing stored.
	start := time.Now()
	if err := s.ListCustomer(ctx, "nobody", func(string, json.RawMessage) error { return nil }); err != nil {
		b.Fatal(err)
	}
	walk := time.Since(start)
	var took []time.Duration
	run := 0
	for b.Loop() {
		b.StopTimer()
		run++
		customer := fmt.Sprintf("erased-%d", run)
		recs := make([]Record, mine)
		for i := range recs {
			recs[i] = benchEvent(fmt.Sprintf("m%d-%d", run, i), customer, at.Add(time.Duration(i)*time.Second))
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
		<-s.CompactionsIdle()
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[(len(took)-1)/2].Microseconds())/1000, "ms/erasure-median")
	b.ReportMetric(float64(walk.Microseconds())/1000, "ms/walk")
	b.ReportMetric(0, "ns/op")
}
