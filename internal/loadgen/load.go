package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// NewClient is an HTTP client for conns concurrent requests to one host:
// keep-alive, enough idle connections that none is closed and redialled
// between requests, no compression (the collector does not compress).
func NewClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// Answer is the body of a 200 to POST /v1/events or /v1/responses.
type Answer struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// Reply is the outcome of one POST.
type Reply struct {
	Code       int           // 0 when no answer arrived
	Answer     Answer        // on 200
	RetryAfter time.Duration // on 429
}

// ErrStatus reports an answer other than 200 or 429; every such answer to
// the load a harness sends is a failure.
type ErrStatus struct {
	URL  string
	Code int
	Body string
}

func (e *ErrStatus) Error() string { return fmt.Sprintf("%s: %d %s", e.URL, e.Code, e.Body) }

// Post sends one JSON body with a bearer token. The error is non-nil when
// no answer arrived (Code 0), for any status but 200 and 429 (*ErrStatus),
// for a 429 without a usable Retry-After and for a 200 whose body is not
// an Answer.
func Post(ctx context.Context, c *http.Client, url, token string, body []byte) (Reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	r := Reply{Code: resp.StatusCode}
	if err != nil {
		// The status line arrived but the answer did not: the outcome is
		// as unknown as if nothing had.
		return Reply{}, fmt.Errorf("%s: read answer to %d: %w", url, resp.StatusCode, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.Unmarshal(msg, &r.Answer); err != nil {
			return r, fmt.Errorf("%s: 200 with body %q: %w", url, msg, err)
		}
		return r, nil
	case http.StatusTooManyRequests:
		wait, err := RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if err != nil {
			return r, fmt.Errorf("%s: 429: %w", url, err)
		}
		r.RetryAfter = wait
		return r, nil
	default:
		return r, &ErrStatus{URL: url, Code: resp.StatusCode, Body: string(bytes.TrimSpace(msg))}
	}
}

// RetryAfter parses a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3). A missing or malformed header is an error, because
// a 429 must tell the client when to come back.
func RetryAfter(h string, now time.Time) (time.Duration, error) {
	if h == "" {
		return 0, errors.New("no Retry-After header")
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, nil
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(0, t.Sub(now)), nil
	}
	return 0, fmt.Errorf("unusable Retry-After %q", h)
}

// PostRetrying posts body until it gets a 200, sleeping as long as each
// 429 asks. It returns the last reply and how many 429s it got.
func PostRetrying(ctx context.Context, c *http.Client, url, token string, body []byte) (Reply, int, error) {
	for throttled := 0; ; throttled++ {
		r, err := Post(ctx, c, url, token, body)
		if err != nil || r.Code == http.StatusOK {
			return r, throttled, err
		}
		if err := Sleep(ctx, r.RetryAfter); err != nil {
			return r, throttled, err
		}
	}
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// checkAnswer verifies that a 200 accounts for every record sent.
func checkAnswer(url string, a Answer, n int) error {
	if a.Accepted+a.Duplicates != n || a.Accepted < 0 || a.Duplicates < 0 {
		return fmt.Errorf("%s: sent %d records, answer says accepted=%d duplicates=%d", url, n, a.Accepted, a.Duplicates)
	}
	return nil
}

// Stats summarise a load run.
type Stats struct {
	Events     int64 // records acknowledged by a 200
	Duplicates int64 // of which the server already held
	Requests   int64 // answered by a 200
	Throttled  int64 // 429 answers, each retried after its Retry-After
	Elapsed    time.Duration
	Latencies  Latencies // per request answered by a 200
}

// EventsPerSec is the acknowledged record rate.
func (s Stats) EventsPerSec() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Events) / s.Elapsed.Seconds()
}

// Percentile of the latencies, q in [0,1].
func (s Stats) Percentile(q float64) time.Duration { return s.Latencies.Percentile(q) }

func (s Stats) String() string {
	return fmt.Sprintf("%d records (%d duplicates) in %d requests over %s, %d throttled: %.0f/s, p50 %s p99 %s",
		s.Events, s.Duplicates, s.Requests, s.Elapsed.Round(time.Millisecond), s.Throttled, s.EventsPerSec(),
		s.Percentile(0.5).Round(10*time.Microsecond), s.Percentile(0.99).Round(10*time.Microsecond))
}

// Latencies are request durations.
type Latencies []time.Duration

// Percentile returns the q-quantile by nearest rank (0 when empty).
func (l Latencies) Percentile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(len(s)-1, i))]
}

// BodyFunc returns the body of request seq of a worker and how many
// records it holds. Ids must be unique across all calls of a run.
type BodyFunc func(worker int, seq int64, rng *rand.Rand) ([]byte, int)

// recorder collects the outcome of concurrent requests.
type recorder struct {
	events, dups, requests, throttled atomic.Int64
	mu                                sync.Mutex
	lat                               Latencies
	err                               error
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

func (r *recorder) stats(elapsed time.Duration) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Events: r.events.Load(), Duplicates: r.dups.Load(), Requests: r.requests.Load(),
		Throttled: r.throttled.Load(), Elapsed: elapsed, Latencies: r.lat}
}

// send posts one body until it is acknowledged and records the outcome;
// latency runs from since (the send time, or the scheduled time).
func (r *recorder) send(ctx context.Context, c *http.Client, url, token string, body []byte, n int, since time.Time) (time.Duration, bool) {
	rep, throttled, err := PostRetrying(ctx, c, url, token, body)
	r.throttled.Add(int64(throttled))
	if err == nil {
		err = checkAnswer(url, rep.Answer, n)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.fail(err)
		}
		return 0, false
	}
	l := time.Since(since)
	r.events.Add(int64(n))
	r.dups.Add(int64(rep.Answer.Duplicates))
	r.requests.Add(1)
	return l, true
}

// ClosedLoop runs workers that each send their next request as soon as
// the previous one is acknowledged, starting requests for d and then
// waiting for those in flight (so Elapsed covers every counted record).
// A 429 is retried after its Retry-After; any other failure ends the run
// and is returned with the stats so far.
func ClosedLoop(ctx context.Context, c *http.Client, url, token string, workers int, d time.Duration, body BodyFunc) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var rec recorder
	var wg sync.WaitGroup
	start := time.Now()
	stopAt := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			local := make(Latencies, 0, 4096)
			for seq := int64(0); ctx.Err() == nil && time.Now().Before(stopAt); seq++ {
				b, n := body(w, seq, rng)
				l, ok := rec.send(ctx, c, url, token, b, n, time.Now())
				if !ok {
					cancel()
					break
				}
				local = append(local, l)
			}
			rec.mu.Lock()
			rec.lat = append(rec.lat, local...)
			rec.mu.Unlock()
		}()
	}
	wg.Wait()
	return rec.stats(time.Since(start)), rec.err
}

// OpenLoop sends rate requests per second on a fixed schedule for d,
// whatever the server does, and measures each latency from the request's
// scheduled send time to its 200 (Retry-After waits included), so a stall
// counts against every request it delays (no coordinated omission). At
// most maxInFlight requests are outstanding; a schedule that cannot be
// kept shows up as latency, not as fewer requests.
func OpenLoop(ctx context.Context, c *http.Client, url, token string, rate float64, d time.Duration, maxInFlight int, body BodyFunc) (Stats, error) {
	if rate <= 0 {
		return Stats{}, fmt.Errorf("open loop: rate %v must be > 0", rate)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	interval := time.Duration(float64(time.Second) / rate)
	total := int64(d / interval)
	var rec recorder
	rec.lat = make(Latencies, 0, total)
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, maxInFlight))
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if err := Sleep(ctx, time.Until(at)); err != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			b, n := body(0, i, rng)
			l, ok := rec.send(ctx, c, url, token, b, n, at)
			if !ok {
				cancel()
				return
			}
			rec.mu.Lock()
			rec.lat = append(rec.lat, l)
			rec.mu.Unlock()
		}()
	}
	wg.Wait()
	return rec.stats(time.Since(start)), rec.err
}
