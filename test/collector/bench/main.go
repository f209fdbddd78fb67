// Command bench measures a cxop collector on loopback and prints, one per
// line and in this order:
//
//	ingest_events_per_sec=N   durable events/s, closed loop, batches of -batch
//	ingest_p99_ms=N           ack p99 at half that rate, open loop
//	discard_events_per_sec=N  the same closed-loop load against a server that
//	                          reads and discards: the loopback ceiling
//	summary_p99_ms=N          GET /v1/summary over 28d with -responses stored
//	restart_ready_s=N         SIGTERM, start on the same data, until /readyz
//
// It builds nothing: -cxop names the binary. Progress goes to stderr.
//
//	go run ./test/collector/bench -cxop bin/cxop
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

type config struct {
	bin                     string
	workers, batch          int
	duration, settle        time.Duration
	responses, preloadBatch int
	preloadWorkers          int
	summaries               int
	ids                     string
	keep                    bool
	profileDir              string
}

func main() {
	// Re-executed as the discard server for the ceiling run.
	loadgen.ServeDiscardIfAsked()

	var c config
	flag.StringVar(&c.bin, "cxop", "bin/cxop", "the cxop binary")
	flag.IntVar(&c.workers, "workers", 32, "concurrent writers for the throughput runs")
	flag.IntVar(&c.batch, "batch", 100, "events per request")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "length of each load run; short runs measure little more than the store's memtable")
	flag.DurationVar(&c.settle, "settle", 5*time.Second, "pause before the half-rate run, so flushes of the saturation run are not timed")
	flag.IntVar(&c.responses, "responses", 10_000_000, "survey responses stored before the summary and restart figures")
	flag.IntVar(&c.preloadBatch, "preload-batch", 1000, "responses per preload request")
	flag.IntVar(&c.preloadWorkers, "preload-workers", 4, "concurrent preload writers")
	flag.IntVar(&c.summaries, "summaries", 2000, "summary requests timed")
	flag.StringVar(&c.ids, "ids", "worker", "event ids: worker (run-worker-seq-i), time (time-ordered, as ULIDs) or random (as UUIDv4)")
	flag.BoolVar(&c.keep, "keep", false, "keep the data directory and collector log")
	flag.StringVar(&c.profileDir, "profile-dir", "", "write the collector's CPU profile of the half-rate run into this directory")
	timeout := flag.Duration("timeout", 45*time.Minute, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, c config) error {
	if _, err := os.Stat(c.bin); err != nil {
		return fmt.Errorf("the cxop binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "cxop-bench-")
	if err != nil {
		return err
	}
	if c.keep {
		logf("data and collector.log in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	prefixes, err := idPrefixes(c.ids)
	if err != nil {
		return err
	}
	events := func(run string) loadgen.BodyFunc {
		return func(w int, seq int64, rng *rand.Rand) ([]byte, int) {
			return loadgen.Events(prefixes(run, w, seq, rng), c.batch, time.Now(), 0, rng), c.batch
		}
	}
	cfg := filepath.Join(dir, "collector.yaml")
	tokens, err := loadgen.WriteConfig(cfg)
	if err != nil {
		return err
	}

	// 1. The loopback ceiling first, while nothing else runs: the same
	// closed-loop load against a process that reads and discards.
	discard, err := discardCeiling(ctx, c, tokens.Touchpoint, events("discard"))
	if err != nil {
		return fmt.Errorf("discard ceiling: %w", err)
	}

	p := &loadgen.Process{Binary: c.bin, DataDir: filepath.Join(dir, "data"), Config: cfg}
	var startArgs []string
	profilerAddr := ""
	if c.profileDir != "" {
		if profilerAddr, err = loadgen.FreePort(); err != nil {
			return err
		}
		startArgs = append(startArgs, "--profiler-address="+profilerAddr)
	}
	if _, err := p.Start(ctx, time.Minute, startArgs...); err != nil {
		return err
	}
	defer p.Kill()
	client := loadgen.NewClient(c.workers)
	ingestURL := p.URL() + "/v1/events"

	// 2. Durable ingest, closed loop.
	st, err := loadgen.ClosedLoop(ctx, client, ingestURL, tokens.Touchpoint, c.workers, c.duration, events("max"))
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	logf("ingest: %s", st)
	ingest := st.EventsPerSec()

	// 3. Ack latency at half the durable rate, open loop, after the
	// store has settled from the saturation run.
	if err := loadgen.Sleep(ctx, c.settle); err != nil {
		return err
	}
	rate := ingest / 2 / float64(c.batch)
	inFlight := 4 * c.workers // a stall shows as latency, not as fewer requests
	metricsURL := p.MetricsURL() + "/metrics"
	before, err := loadgen.ScrapeHistograms(ctx, http.DefaultClient, metricsURL)
	if err != nil {
		return err
	}
	var profiled sync.WaitGroup
	if c.profileDir != "" {
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			path := filepath.Join(c.profileDir, "collector-half-rate-cpu.pprof")
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", profilerAddr, int(c.duration.Seconds()))
			if err := loadgen.Download(http.DefaultClient, url, path); err != nil {
				logf("cpu profile: %v", err)
				return
			}
			logf("wrote %s", path)
		}()
	}
	half, err := loadgen.OpenLoop(ctx, loadgen.NewClient(inFlight), ingestURL, tokens.Touchpoint, rate, c.duration, inFlight, events("half"))
	if err != nil {
		return fmt.Errorf("half-rate ingest: %w", err)
	}
	profiled.Wait()
	logf("half rate (%.0f requests/s scheduled): %s", rate, half)
	if err := logServerView(ctx, metricsURL, before); err != nil {
		return err
	}

	// 4. Responses spread evenly over the last 27 days, then summaries.
	if err := preload(ctx, c, p.URL()+"/v1/responses", tokens.Survey); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	summaryURL := p.URL() + "/v1/summary?" + url.Values{"survey": {loadgen.Survey}, "window": {"28d"}}.Encode()
	if err := loadgen.CheckResponses(ctx, summaryURL, tokens.Read, c.responses); err != nil {
		return err
	}
	sum, err := loadgen.SampleSummaries(ctx, loadgen.NewClient(1), summaryURL, tokens.Read, c.summaries)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	logf("summary: %d requests, p50 %s p99 %s", len(sum), sum.Percentile(0.5), sum.Percentile(0.99))

	// 5. Restart on the same data.
	if err := p.Stop(2 * time.Minute); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if du, err := dirSize(p.DataDir); err == nil {
		logf("data directory: %.1f MiB", float64(du)/(1<<20))
	}
	ready, err := p.Start(ctx, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := loadgen.CheckResponses(ctx, summaryURL, tokens.Read, c.responses); err != nil {
		return fmt.Errorf("after restart: %w", err)
	}
	if err := p.Stop(2 * time.Minute); err != nil {
		return fmt.Errorf("stop: %w", err)
	}

	fmt.Printf("ingest_events_per_sec=%d\n", int64(ingest))
	fmt.Printf("ingest_p99_ms=%.2f\n", ms(half.Percentile(0.99)))
	fmt.Printf("discard_events_per_sec=%d\n", int64(discard))
	fmt.Printf("summary_p99_ms=%.2f\n", ms(sum.Percentile(0.99)))
	fmt.Printf("restart_ready_s=%.2f\n", ready.Seconds())
	return nil
}

// idPrefixes returns how a batch's id prefix is made. Ids are unique in
// every scheme; they differ in where they land in the collector's
// idempotency index, which may matter to its write path.
func idPrefixes(scheme string) (func(run string, w int, seq int64, rng *rand.Rand) string, error) {
	switch scheme {
	case "worker":
		return func(run string, w int, seq int64, _ *rand.Rand) string {
			return run + "-" + strconv.Itoa(w) + "-" + strconv.FormatInt(seq, 10)
		}, nil
	case "time":
		return func(run string, w int, _ int64, rng *rand.Rand) string {
			return fmt.Sprintf("%016x%08x-%s", time.Now().UnixNano(), rng.Uint32(), run)
		}, nil
	case "random":
		return func(run string, _ int, _ int64, rng *rand.Rand) string {
			return fmt.Sprintf("%016x%016x-%s", rng.Uint64(), rng.Uint64(), run)
		}, nil
	}
	return nil, fmt.Errorf("-ids %q: want worker, time or random", scheme)
}

// logServerView prints what the collector itself measured since before:
// the part of the client's latency spent inside the collector, and inside
// its commits, as opposed to the client's and the loopback's share.
func logServerView(ctx context.Context, metricsURL string, before loadgen.Histograms) error {
	after, err := loadgen.ScrapeHistograms(ctx, http.DefaultClient, metricsURL)
	if err != nil {
		return err
	}
	for _, s := range []struct{ what, series string }{
		{"request", `cxop_collector_request_duration_seconds{code=200,endpoint=events}`},
		{"group commit", `cxop_collector_group_commit_duration_seconds{}`},
		{"fsync", `cxop_collector_fsync_duration_seconds{}`},
	} {
		p99, n := loadgen.QuantileSince(before, after, s.series, 0.99)
		logf("  collector's own view: %s p99 <= %.1fms (%d observed)", s.what, p99*1000, n)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func discardCeiling(ctx context.Context, c config, token string, body loadgen.BodyFunc) (float64, error) {
	d, err := loadgen.StartDiscard(ctx, 30*time.Second)
	if err != nil {
		return 0, err
	}
	defer d.Stop()
	st, err := loadgen.ClosedLoop(ctx, loadgen.NewClient(c.workers), d.URL()+"/v1/events", token, c.workers, c.duration, body)
	if err != nil {
		return 0, err
	}
	logf("discard: %s", st)
	return st.EventsPerSec(), nil
}

// preload stores c.responses answers, answer k of n at
// now - 27d*(n-k-0.5)/n, in batches over a few writers.
func preload(ctx context.Context, c config, url, token string) error {
	if c.responses <= 0 {
		return nil
	}
	per := c.preloadBatch
	batches := (c.responses + per - 1) / per
	end := time.Now()
	span := 27 * 24 * time.Hour
	step := float64(span) / float64(c.responses)
	client := loadgen.NewClient(c.preloadWorkers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next, done, throttled atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c.preloadWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= batches {
					return
				}
				first := i * per
				n := min(per, c.responses-first)
				body := loadgen.ResponsesAt("pre-"+strconv.Itoa(i), n, func(j int) time.Time {
					k := first + j
					return end.Add(-time.Duration(float64(c.responses-k)*step - step/2))
				}, rng)
				rep, th, err := loadgen.PostRetrying(ctx, client, url, token, body)
				throttled.Add(int64(th))
				if err == nil && rep.Answer.Accepted != n {
					err = fmt.Errorf("batch %d: %d of %d responses accepted", i, rep.Answer.Accepted, n)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				if d := done.Add(int64(n)); d/1_000_000 != (d-int64(n))/1_000_000 {
					logf("preload: %d responses in %s", d, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	el := time.Since(start)
	logf("preload: %d responses in %s (%.0f/s), %d throttled", done.Load(), el.Round(time.Second),
		float64(done.Load())/el.Seconds(), throttled.Load())
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	return n, err
}
