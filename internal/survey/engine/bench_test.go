package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
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

// BenchmarkFeedConsume measures what the engine pays per record it takes
// from the PostgreSQL feed: each iteration appends 100 interactions (not
// timed) and steps the engine, which reads, deletes and commits them (no
// survey listens to them, so nothing else is timed). The deleted entries
// stay in the table and its index until a vacuum, so 20,000 entries are
// appended and consumed first (not timed), as between two autovacuums of a
// busy collector, while a snapshot stays open (a long export or backup),
// which keeps them from being cleaned up. from-first-key reads the feed from its first key every
// step, walking every deleted entry (as the engine did before its floor,
// and does on a store that cannot mark its writers); from-floor is the
// engine's read from its floor (feed.go).
//
//	go test ./internal/survey/engine -run '^$' -bench FeedConsume -benchtime 200x -count 3
func BenchmarkFeedConsume(b *testing.B) {
	for _, floor := range []bool{false, true} {
		name := "from-first-key"
		if floor {
			name = "from-floor"
		}
		b.Run(name, func(b *testing.B) { benchFeedConsume(b, floor) })
	}
}

// noFeedMark is a store that cannot mark the feed's writers: the engine
// reads the feed from its first key.
type noFeedMark struct{ kv.KV }

func (noFeedMark) FeedMark() (uint64, bool, error) { return 0, false, nil }

func benchFeedConsume(b *testing.B, floor bool) {
	const perStep = 100
	f := newFixtureOn(b, onPostgres, Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"elsewhere"}, SamplePercent: 100}}})
	if !floor {
		f.e.kv = noFeedMark{f.e.kv}
	}
	// A snapshot held open throughout, as a long export, a backup or a
	// replica's query does: the deleted entries stay visible to it, so
	// neither a vacuum nor an index scan can clean them up meanwhile.
	old, err := pgx.Connect(context.Background(), f.dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = old.Close(context.Background()) }()
	if _, err := old.Exec(context.Background(), `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM cxop_engine_kv`); err != nil {
		b.Fatal(err)
	}
	customers := make([]string, perStep)
	for i := range customers {
		customers[i] = fmt.Sprintf("c%d", i)
	}
	for range 200 {
		f.interact("chat", customers...)
		if err := f.e.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		f.interact("chat", customers...)
		b.StartTimer()
		if err := f.e.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perStep), "ns/entry")
	if n, err := f.e.countKeys(kv.FeedPrefix); err != nil || n != 0 {
		b.Fatalf("%d feed entries left, %v", n, err)
	}
	// What the next read touches, in buffers (8 KiB pages of the index
	// and the table), which the machine's load does not change as it
	// changes times.
	from := []byte(kv.FeedPrefix)
	if f.e.feed.low != nil {
		from = f.e.feed.low
	}
	b.ReportMetric(float64(feedReadBuffers(b, f.dsn, from)), "buffers/read")
}

// feedReadBuffers is how many buffers the engine's page read of the feed
// from from touches (EXPLAIN ANALYZE's shared hit and read blocks).
func feedReadBuffers(b *testing.B, dsn string, from []byte) int {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var plan []byte
	if err := conn.QueryRow(context.Background(), `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
SELECT key, value FROM cxop_engine_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT 512`,
		from, prefixEnd([]byte(kv.FeedPrefix))).Scan(&plan); err != nil {
		b.Fatal(err)
	}
	var out []struct {
		Plan struct {
			Hit  int `json:"Shared Hit Blocks"`
			Read int `json:"Shared Read Blocks"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal(plan, &out); err != nil || len(out) != 1 {
		b.Fatalf("plan %s: %v", plan, err)
	}
	return out[0].Plan.Hit + out[0].Plan.Read
}
