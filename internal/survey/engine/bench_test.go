package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/webhook"
)

// BenchmarkInviteAndDeliver measures the survey engine end to end on
// loopback: b.N interactions become invitations, each signed and delivered
// to a receiver that answers 204, with every step's batch synced. It
// reports deliveries per second; with -benchtime=Nx, N is the number of
// invitations. A share of the receiver's answers can be 503s (retries).
// It runs on each store (pebble/…, postgres/…).
//
//	go test ./internal/survey/engine -run '^$' -bench InviteAndDeliver -benchtime 5000x
func BenchmarkInviteAndDeliver(b *testing.B) {
	for _, kind := range []storeKind{onPebble, onPostgres} {
		for _, failEvery := range []int{0, 10} {
			name := string(kind) + "/all-2xx"
			if failEvery > 0 {
				name = fmt.Sprintf("%s/1-in-%d-503", kind, failEvery)
			}
			benchInviteAndDeliver(b, kind, name, failEvery)
		}
	}
}

func benchInviteAndDeliver(b *testing.B, kind storeKind, name string, failEvery int) {
	{
		b.Run(name, func(b *testing.B) {
			var calls, retries atomic.Int64
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if failEvery > 0 && n%int64(failEvery) == 0 {
					retries.Add(1)
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer rcv.Close()
			f := newFixtureOn(b, kind, Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
				{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: &webhook.Endpoint{URL: rcv.URL, Key: hookKey}},
			}})
			f.e.opts.RetryBase, f.e.opts.RetryMax = time.Millisecond, time.Millisecond
			f.now = time.Now()
			customers := make([]string, b.N)
			for i := range customers {
				customers[i] = fmt.Sprintf("c%d", i)
			}
			f.interact("chat", customers...)
			b.ResetTimer()
			start := time.Now()
			for {
				f.now = time.Now()
				if err := f.e.Step(context.Background()); err != nil {
					b.Fatal(err)
				}
				if s, _ := f.e.Stats("nps", f.now.Add(-time.Hour)); s[CounterDelivered] >= uint64(b.N) {
					break
				}
				if time.Since(start) > 5*time.Minute {
					b.Fatal("not delivered within 5 minutes")
				}
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(retries.Load()), "retries")
		})
	}
}
