package collector

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitUntil polls cond until it holds; the deadline only ends a test
// that would otherwise hang, it is not what the test measures.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// 150 uploads that declare 4 MiB each and trickle their bytes would hold
// 600 MiB if the collector sized each body from its Content-Length or let
// every one grow. With a budget of 32 MiB the collector refuses most of
// them with 503 and Retry-After, holds at most its budget, stays Ready and
// still takes a small ingest from another client.
func TestSlowLargeUploadsKeepTheCollectorReady(t *testing.T) {
	const (
		uploads = 150
		budget  = 32 << 20
		burst   = 512 << 10 // sent at once, then a byte every 100ms
		// heapLimit is the growth of the Go heap the test allows: the
		// budget, as much again of garbage between collections, and
		// headroom for the store, the test's clients and the HTTP server.
		heapLimit = 3 * budget
	)
	c := startCollector(t, t.TempDir(), testConfig(t, ""))
	c.srv.SetMaxInflightBytes(budget)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	var peakHeap, peakInflight atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peakHeap.Load() {
				peakHeap.Store(ms.HeapAlloc)
			}
			if u := uint64(c.srv.inflight.used.Load()); u > peakInflight.Load() {
				peakInflight.Store(u)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	addr := c.ts.Listener.Addr().String()
	head := fmt.Sprintf("POST /v1/events HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", chatToken, MaxBodyBytes)
	payload := append([]byte{'['}, bytes.Repeat([]byte{' '}, burst-1)...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused, resets int
	others := map[int]int{}
	badAnswers := []string{}
	conns := make([]net.Conn, 0, uploads)
	for range uploads {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		wg.Add(2)
		go func() { // the slow client
			defer wg.Done()
			if _, err := io.WriteString(conn, head); err != nil {
				return
			}
			if _, err := conn.Write(payload); err != nil {
				return
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte{' '}); err != nil {
						return
					}
				}
			}
		}()
		go func() { // what the collector answers it
			defer wg.Done()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				var nerr net.Error
				if !errors.As(err, &nerr) && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
					badAnswers = append(badAnswers, err.Error())
				}
				select {
				case <-stop: // closed by the test
				default:
					resets++
				}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 {
				others[resp.StatusCode]++
				return
			}
			refused++
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "in flight") || !strings.Contains(string(body), "--max-inflight-bytes") {
				badAnswers = append(badAnswers, fmt.Sprintf("503 with Retry-After %q: %s", resp.Header.Get("Retry-After"), body))
			}
		}()
	}
	// Each upload held by the collector holds at least its burst, and
	// large bodies may use three quarters of the budget: at most 48 fit.
	waitUntil(t, "the collector refused the uploads that do not fit", func() bool {
		mu.Lock()
		defer mu.Unlock()
		// Without a bound the heap says so sooner.
		return refused+resets >= uploads-budget*3/4/burst || float64(peakHeap.Load())-float64(baseline) > heapLimit
	})

	// The uploads that fit are still open and trickling.
	if code := c.get("/readyz", nil); code != 200 {
		t.Errorf("/readyz answered %d during the slow uploads, want 200", code)
	}
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"small","touchpoint":"chat","customer":"c"}`); code != 200 || body["accepted"] != 1.0 {
		t.Errorf("a small ingest during the slow uploads: %d %v, want 200 and 1 accepted", code, body)
	}
	if held := c.srv.inflight.used.Load(); held < budget/2 {
		t.Errorf("the collector holds %d bytes of the uploads still open, want them held (at least %d)", held, budget/2)
	}

	close(stop)
	for _, conn := range conns {
		_ = conn.Close()
	}
	wg.Wait()
	waitUntil(t, "every body's bytes are given back", func() bool { return c.srv.inflight.used.Load() == 0 })
	close(stopSampling)
	<-sampled

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d uploads: %d refused with 503, %d cut off, other answers %v; peak in flight %d bytes (budget %d); heap peak %.0f MiB over a baseline of %.0f MiB (limit +%d MiB)",
		uploads, refused, resets, others, peakInflight.Load(), budget, float64(peakHeap.Load()-min(baseline, peakHeap.Load()))/(1<<20), float64(baseline)/(1<<20), heapLimit>>20)
	if refused == 0 || len(others) > 0 || len(badAnswers) > 0 {
		t.Errorf("answers: %d refused with 503, others %v, bad %q", refused, others, badAnswers)
	}
	if p := peakInflight.Load(); p > budget {
		t.Errorf("in flight peaked at %d bytes, over the budget of %d", p, budget)
	}
	if growth := float64(peakHeap.Load()) - float64(baseline); growth > heapLimit {
		t.Errorf("the heap grew by %.0f MiB, over the limit of %d MiB", growth/(1<<20), heapLimit>>20)
	}
}

// A body's memory follows the bytes that have arrived, whatever its
// Content-Length declares.
func TestBodyMemoryFollowsTheBytesThatArrive(t *testing.T) {
	c := startCollector(t, t.TempDir(), testConfig(t, ""))
	const arrived = 100 << 10
	conn, err := net.Dial("tcp", c.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", chatToken, MaxBodyBytes)
	if _, err := conn.Write(bytes.Repeat([]byte{' '}, arrived)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the collector holds the bytes sent", func() bool { return c.srv.inflight.used.Load() >= arrived })
	if held := c.srv.inflight.used.Load(); held > 2*arrived {
		t.Errorf("%d bytes arrived of a declared %d; the collector holds %d, want at most %d", arrived, MaxBodyBytes, held, 2*arrived)
	}
	_ = conn.Close()
	waitUntil(t, "the body's bytes are given back", func() bool { return c.srv.inflight.used.Load() == 0 })
}

func TestMaxInflightBytesFollowsTheMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int64 }{
		{math.MaxInt64, DefaultMaxInflightBytes}, // no GOMEMLIMIT
		{1 << 30, 128 << 20},
		{900 << 20, 900 << 20 / 8},
		{32 << 20, minInflightBytes},
	} {
		if got := MaxInflightBytesFor(tc.limit); got != tc.want {
			t.Errorf("memory limit %d: %d, want %d", tc.limit, got, tc.want)
		}
	}
}

// --max-inflight-bytes below two bodies of the largest size, or not a
// size, stops the collector at start with a message naming the flag.
func TestMaxInflightBytesFlagIsChecked(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "collector.yaml")
	writeFile(t, cfgPath, "touchpoints: [{name: chat}]\n")
	for _, value := range []string{"1Mi", "11Mi", "lots", "-64Mi"} {
		err := Run(context.Background(), Options{Listen: freeLoopbackAddr(t), DataDir: filepath.Join(dir, "data"), ConfigPath: cfgPath, LogLevel: "warn", MaxInflightBytes: value})
		if err == nil || !strings.Contains(err.Error(), "--max-inflight-bytes") || !strings.Contains(err.Error(), value) {
			t.Errorf("--max-inflight-bytes=%s: %v, want an error naming the flag and the value", value, err)
		}
	}
}
