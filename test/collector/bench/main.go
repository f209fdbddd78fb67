// Command bench measures a real collector on loopback and prints, one per
// line: ingest_events_per_sec, ingest_p99_ms, discard_events_per_sec,
// summary_p99_ms and restart_ready_s.
//
//	go run ./test/collector/bench -cxop bin/cxop
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

// discardEnv makes the binary serve loadgen.DiscardHandler instead, so
// the ceiling is measured against a separate process like the collector.
const discardEnv = "CXOP_BENCH_DISCARD_ADDR"

func main() {
	if addr := os.Getenv(discardEnv); addr != "" {
		srv := &http.Server{Addr: addr, Handler: loadgen.DiscardHandler(), ReadHeaderTimeout: 5 * time.Second}
		fmt.Fprintln(os.Stderr, srv.ListenAndServe())
		os.Exit(1)
	}
	bin := flag.String("cxop", "bin/cxop", "the cxop binary")
	workers := flag.Int("workers", 32, "concurrent writers for the throughput runs")
	batch := flag.Int("batch", 100, "events per request")
	dur := flag.Duration("duration", 10*time.Second, "length of each load run")
	preload := flag.Int("responses", 10_000_000, "survey responses stored before the summary and restart figures")
	summaries := flag.Int("summaries", 2000, "summary requests timed")
	flag.DurationVar(&settle, "settle", 5*time.Second, "pause before the half-rate run")
	flag.Parse()
	if err := run(*bin, *workers, *batch, *dur, *preload, *summaries); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var settle time.Duration

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(bin string, workers, batchSize int, dur time.Duration, preload, summaries int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cxop-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "collector.yaml")
	tokens, err := loadgen.WriteConfig(cfg)
	if err != nil {
		return err
	}
	p := &loadgen.Process{Binary: bin, DataDir: filepath.Join(dir, "data"), Config: cfg}
	if _, err := p.Start(ctx, time.Minute); err != nil {
		return err
	}
	defer p.Kill()
	client := loadgen.NewClient(workers)
	events := func(run string) loadgen.BodyFunc {
		return func(w int, seq int64, rng *rand.Rand) ([]byte, int) {
			return loadgen.Events(run+"-"+strconv.Itoa(w)+"-"+strconv.FormatInt(seq, 10), batchSize, time.Now(), 0, rng), batchSize
		}
	}

	// 1. Durable ingest, closed loop.
	st, err := loadgen.ClosedLoop(ctx, client, p.URL()+"/v1/events", tokens.Touchpoint, workers, dur, events("max"))
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	ingest := st.EventsPerSec()
	logf("ingest: %d events in %s, %d requests, %d throttled, p50 %s p99 %s", st.Events, st.Elapsed.Round(time.Millisecond),
		st.Requests, st.Throttled, st.Percentile(0.5), st.Percentile(0.99))

	// 2. The loopback ceiling: the same load against a reader that discards.
	discard, err := discardCeiling(ctx, workers, dur, events("discard"), tokens.Touchpoint)
	if err != nil {
		return fmt.Errorf("discard: %w", err)
	}

	// 3. Latency at half the durable rate, open loop, after the store
	// has settled from the saturation runs (flushes, compactions).
	time.Sleep(settle)
	rate := ingest / 2 / float64(batchSize)
	half, err := loadgen.OpenLoop(ctx, client, p.URL()+"/v1/events", tokens.Touchpoint, rate, dur, events("half"))
	if err != nil {
		return fmt.Errorf("half-rate ingest: %w", err)
	}
	logf("half rate: %.0f requests/s, %d answered, %d throttled, p50 %s p99 %s", rate, half.Requests, half.Throttled,
		half.Percentile(0.5), half.Percentile(0.99))

	// 4. Preload responses over the last 27 days, then time summaries.
	if err := preloadResponses(ctx, client, p.URL(), tokens.Survey, preload); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	sumLat, err := timeSummaries(ctx, p.URL(), summaries)
	if err != nil {
		return err
	}
	logf("summary: p50 %s p99 %s over %d requests", loadgen.Percentile(sumLat, 0.5), loadgen.Percentile(sumLat, 0.99), len(sumLat))

	// 5. Restart on the same data.
	if err := p.Stop(time.Minute); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	ready, err := p.Start(ctx, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if du, err := dirSize(p.DataDir); err == nil {
		logf("data directory: %.1f MiB", float64(du)/(1<<20))
	}

	fmt.Printf("ingest_events_per_sec=%.0f\n", ingest)
	fmt.Printf("ingest_p99_ms=%.2f\n", ms(half.Percentile(0.99)))
	fmt.Printf("discard_events_per_sec=%.0f\n", discard)
	fmt.Printf("summary_p99_ms=%.2f\n", ms(loadgen.Percentile(sumLat, 0.99)))
	fmt.Printf("restart_ready_s=%.2f\n", ready.Seconds())
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func discardCeiling(ctx context.Context, workers int, dur time.Duration, body loadgen.BodyFunc, token string) (float64, error) {
	addr, err := loadgen.FreePort()
	if err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), discardEnv+"="+addr)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 500 {
			return 0, fmt.Errorf("discard server did not listen on %s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := loadgen.ClosedLoop(ctx, loadgen.NewClient(workers), "http://"+addr+"/v1/events", token, workers, dur, body)
	if err != nil {
		return 0, err
	}
	logf("discard: %d events in %s, p99 %s", st.Events, st.Elapsed.Round(time.Millisecond), st.Percentile(0.99))
	return st.EventsPerSec(), nil
}

func preloadResponses(ctx context.Context, client *http.Client, base, token string, total int) error {
	const per = 1000
	batches := (total + per - 1) / per
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	now := time.Now()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for {
				i := next.Add(1) - 1
				if i >= int64(batches) {
					return
				}
				n := min(per, total-int(i)*per)
				body := loadgen.Responses("pre-"+strconv.FormatInt(i, 10), n, now, 27*24*time.Hour, rng)
				for {
					code, wait, err := loadgen.Post(ctx, client, base+"/v1/responses", token, body)
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						return
					}
					if code == 429 {
						time.Sleep(wait)
						continue
					}
					break
				}
				if i%1000 == 999 {
					logf("preload: %d responses in %s", (i+1)*per, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	logf("preload: %d responses in %s", total, time.Since(start).Round(time.Second))
	return firstErr
}

func timeSummaries(ctx context.Context, base string, n int) ([]time.Duration, error) {
	client := loadgen.NewClient(1)
	lat := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/summary?survey=load-nps&window=28d", nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("summary: %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(t))
	}
	return lat, nil
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
