package pgstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/store"
)

// BenchmarkSubmitTwoReplicas appends batches of 100 new records from eight
// clients spread over two replicas of one database (fsync and synchronous
// commit on), as the collector's clients would, and reports events/s and
// the fold's rate afterwards. One op is one batch.
//
//	go test -run '^$' -bench SubmitTwoReplicas -benchtime 2000x ./internal/pgstore
func BenchmarkSubmitTwoReplicas(b *testing.B) {
	dsn := server.NewDatabase(b)
	replicas := []*Store{open(b, dsn), open(b, dsn)}
	const clients, size = 8, 100
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := replicas[c%2]
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				batch := make([]store.Record, size)
				for i := range batch {
					batch[i] = event("chat", fmt.Sprintf("b%d-%d", n, i), t0.Add(-time.Duration(i)*time.Second), uint64(n*size)+uint64(i), float64(i))
				}
				if _, err := st.Submit(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/elapsed.Seconds(), "events/s")
	foldStart := time.Now()
	foldAll(b, replicas[0])
	b.ReportMetric(float64(b.N*size)/time.Since(foldStart).Seconds(), "folded/s")
}
