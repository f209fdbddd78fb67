package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// NewClient is an HTTP client keeping one connection per worker alive.
func NewClient(workers int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        workers * 2,
			MaxIdleConnsPerHost: workers * 2,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// Events builds a JSON array of n interaction events with ids
// prefix-0 … prefix-(n-1) at touchpoint "load", times at (or spread over
// the span before) at.
func Events(prefix string, n int, at time.Time, spread time.Duration, rng *rand.Rand) []byte {
	b := make([]byte, 0, n*160)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		t := at
		if spread > 0 {
			t = at.Add(-time.Duration(rng.Int64N(int64(spread))))
		}
		b = append(b, `{"id":"`...)
		b = append(b, prefix...)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `","touchpoint":"load","customer":"c-`...)
		b = strconv.AppendInt(b, rng.Int64N(1_000_000), 10)
		b = append(b, `","waitSeconds":`...)
		b = strconv.AppendFloat(b, float64(rng.IntN(300000))/1000, 'f', -1, 64)
		b = append(b, `,"resolved":`...)
		b = strconv.AppendBool(b, rng.IntN(4) != 0)
		b = append(b, `,"time":"`...)
		b = t.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// Responses builds a JSON array of n NPS answers to survey "load-nps".
func Responses(prefix string, n int, at time.Time, spread time.Duration, rng *rand.Rand) []byte {
	b := make([]byte, 0, n*120)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		t := at.Add(-time.Duration(rng.Int64N(int64(spread) + 1)))
		b = append(b, `{"id":"`...)
		b = append(b, prefix...)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `","survey":"load-nps","customer":"c-`...)
		b = strconv.AppendInt(b, rng.Int64N(1_000_000), 10)
		b = append(b, `","score":`...)
		b = strconv.AppendInt(b, int64(rng.IntN(11)), 10)
		b = append(b, `,"time":"`...)
		b = t.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// Post sends one body and returns the status code (0 on a transport
// error) and, on 429, how long the server asked to wait.
func Post(ctx context.Context, c *http.Client, url, token string, body []byte) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	var wait time.Duration
	if resp.StatusCode == http.StatusTooManyRequests {
		s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || s < 1 {
			return resp.StatusCode, 0, fmt.Errorf("429 without a usable Retry-After: %q", resp.Header.Get("Retry-After"))
		}
		wait = time.Duration(s) * time.Second
	}
	if resp.StatusCode != 200 && resp.StatusCode != 429 {
		return resp.StatusCode, 0, fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return resp.StatusCode, wait, nil
}

// Stats summarise a load run.
type Stats struct {
	Events    int64
	Requests  int64
	Throttled int64 // 429 answers
	Elapsed   time.Duration
	Latencies []time.Duration // per successful request
}

// EventsPerSec is the acknowledged event rate.
func (s Stats) EventsPerSec() float64 { return float64(s.Events) / s.Elapsed.Seconds() }

// Percentile of the latencies (q in 0..1), nearest rank.
func (s Stats) Percentile(q float64) time.Duration { return Percentile(s.Latencies, q) }

// Percentile returns the q-quantile of ds by nearest rank.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(len(s)-1, i))]
}

// BodyFunc returns the body of request seq of a worker and how many
// records it holds.
type BodyFunc func(worker int, seq int64, rng *rand.Rand) ([]byte, int)

// ClosedLoop runs workers that each send their next request as soon as
// the previous one is answered, for d. Any answer but 200 or 429 stops
// the run with an error; 429 waits Retry-After and sends again.
func ClosedLoop(ctx context.Context, c *http.Client, url, token string, workers int, d time.Duration, body BodyFunc) (Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var events, requests, throttled atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			local := make([]time.Duration, 0, 1024)
			for seq := int64(0); ctx.Err() == nil; seq++ {
				b, n := body(w, seq, rng)
				for ctx.Err() == nil {
					t := time.Now()
					code, wait, err := Post(ctx, c, url, token, b)
					if ctx.Err() != nil {
						break
					}
					if err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
						cancel()
						break
					}
					if code == 429 {
						throttled.Add(1)
						time.Sleep(wait)
						continue
					}
					local = append(local, time.Since(t))
					events.Add(int64(n))
					requests.Add(1)
					break
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return Stats{Events: events.Load(), Requests: requests.Load(), Throttled: throttled.Load(), Elapsed: time.Since(start), Latencies: lat}, firstErr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// OpenLoop sends rate requests per second on a fixed schedule for d and
// measures each latency from its scheduled send time, so a stall counts
// against every request it delays (no coordinated omission).
func OpenLoop(ctx context.Context, c *http.Client, url, token string, rate float64, d time.Duration, body BodyFunc) (Stats, error) {
	interval := time.Duration(float64(time.Second) / rate)
	total := int(d / interval)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var events, throttled atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512) // bound concurrency if the server stalls
	start := time.Now()
	rng := rand.New(rand.NewPCG(7, uint64(start.UnixNano())))
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		if ctx.Err() != nil {
			break
		}
		b, n := body(0, int64(i), rng)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			code, _, err := Post(ctx, c, url, token, b)
			l := time.Since(at)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				firstErr = cmpErr(firstErr, err)
			case code == 429:
				throttled.Add(1)
				lat = append(lat, l)
			default:
				events.Add(int64(n))
				lat = append(lat, l)
			}
		}()
	}
	wg.Wait()
	return Stats{Events: events.Load(), Requests: int64(len(lat)), Throttled: throttled.Load(), Elapsed: time.Since(start), Latencies: lat}, firstErr
}

// DiscardHandler reads each body whole and answers as the collector
// would, storing nothing: the loopback HTTP ceiling.
func DiscardHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"accepted":%d,"duplicates":0}`+"\n", n/160)
	})
}
