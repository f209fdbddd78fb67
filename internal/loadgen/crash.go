package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CrashOptions configure RunCrashTest.
type CrashOptions struct {
	Binary  string // the cxop binary
	Dir     string // working directory (data, config, log)
	Kills   int    // SIGKILLs under load, at least 1
	Workers int    // concurrent writers
	// MinDelay and MaxDelay bound the random time between the collector
	// becoming ready and its kill.
	MinDelay, MaxDelay time.Duration
	Log                func(format string, args ...any)
}

// CrashResult is what the recount found.
type CrashResult struct {
	Acked int // ids acknowledged with a 200
	Lost  int // acknowledged ids not stored
	Dup   int // ids stored more than once, or counted more often than stored
}

type batch struct {
	prefix string
	n      int
	body   []byte
}

// RunCrashTest kills the collector with SIGKILL at random moments under
// load, restarts it on the same data, retries every request whose answer
// was lost (same ids), and finally recounts the stored records against
// every id that was acknowledged.
func RunCrashTest(ctx context.Context, o CrashOptions) (CrashResult, error) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.MaxDelay <= o.MinDelay {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 800*time.Millisecond
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	cfg := filepath.Join(o.Dir, "collector.yaml")
	tokens, err := WriteConfig(cfg)
	if err != nil {
		return CrashResult{}, err
	}
	p := &Process{Binary: o.Binary, DataDir: filepath.Join(o.Dir, "data"), Config: cfg, LogPath: filepath.Join(o.Dir, "collector.log")}
	defer p.Kill()
	client := NewClient(o.Workers)
	url := func() string { return p.URL() + "/v1/events" }
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	var mu sync.Mutex
	acked := map[string]int{} // batch prefix -> records
	var unknown []batch

	for kill := 0; kill < o.Kills; kill++ {
		if _, err := p.Start(ctx, 30*time.Second); err != nil {
			return CrashResult{}, fmt.Errorf("start %d: %w", kill, err)
		}
		// Retry what was in flight at the last kill, with the same ids.
		for _, b := range unknown {
			code, _, err := Post(ctx, client, url(), tokens.Touchpoint, b.body)
			if err != nil || code != 200 {
				return CrashResult{}, fmt.Errorf("retry %s after restart: %d %v", b.prefix, code, err)
			}
			acked[b.prefix] = b.n
		}
		unknown = nil

		loadCtx, stopLoad := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for w := range o.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wrng := rand.New(rand.NewPCG(uint64(kill), uint64(w)))
				for seq := 0; loadCtx.Err() == nil; seq++ {
					b := batch{prefix: fmt.Sprintf("k%d-w%d-s%d", kill, w, seq), n: 100}
					b.body = Events(b.prefix, b.n, time.Now(), 0, wrng)
					code, wait, err := Post(context.Background(), client, url(), tokens.Touchpoint, b.body)
					mu.Lock()
					switch {
					case err == nil && code == 200:
						acked[b.prefix] = b.n
					case err == nil && code == 429:
						unknown = append(unknown, b)
						mu.Unlock()
						time.Sleep(wait)
						continue
					default: // connection refused or reset by the kill: unknown outcome
						unknown = append(unknown, b)
						mu.Unlock()
						return
					}
					mu.Unlock()
				}
			}()
		}
		delay := o.MinDelay + time.Duration(rng.Int64N(int64(o.MaxDelay-o.MinDelay)))
		time.Sleep(delay)
		if err := p.Kill(); err != nil {
			stopLoad()
			return CrashResult{}, err
		}
		stopLoad()
		wg.Wait()
		o.Log("kill %d after %s: %d batches acknowledged so far, %d in flight", kill+1, delay.Round(time.Millisecond), len(acked), len(unknown))
	}

	if _, err := p.Start(ctx, 60*time.Second); err != nil {
		return CrashResult{}, fmt.Errorf("final start: %w", err)
	}
	for _, b := range unknown {
		code, _, err := Post(ctx, client, url(), tokens.Touchpoint, b.body)
		if err != nil || code != 200 {
			return CrashResult{}, fmt.Errorf("final retry %s: %d %v", b.prefix, code, err)
		}
		acked[b.prefix] = b.n
	}
	// A clean restart too: the recount must survive a checkpoint and a replay.
	if err := p.Stop(30 * time.Second); err != nil {
		return CrashResult{}, err
	}
	if _, err := p.Start(ctx, 60*time.Second); err != nil {
		return CrashResult{}, fmt.Errorf("clean restart: %w", err)
	}
	return recount(ctx, p.URL(), acked)
}

func recount(ctx context.Context, base string, acked map[string]int) (CrashResult, error) {
	var r CrashResult
	want := map[string]bool{}
	for prefix, n := range acked {
		for i := range n {
			want[fmt.Sprintf("%s-%d", prefix, i)] = true
		}
	}
	r.Acked = len(want)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/export?touchpoint=load", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, fmt.Errorf("export: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return r, fmt.Errorf("export: %d", resp.StatusCode)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return r, fmt.Errorf("export line %q: %w", sc.Text(), err)
		}
		seen[rec.ID]++
	}
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("export: %w", err)
	}
	for id := range want {
		if seen[id] == 0 {
			r.Lost++
		}
	}
	for _, n := range seen {
		if n > 1 {
			r.Dup += n - 1
		}
	}
	// The rollups must count exactly what is stored: a replay that counted
	// a record twice would show here even if the raw records are right.
	var sum struct {
		Interactions int `json:"interactions"`
	}
	sresp, err := http.Get(base + "/v1/summary?touchpoint=load&window=1d&end=" + time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
	if err != nil {
		return r, fmt.Errorf("summary: %w", err)
	}
	defer sresp.Body.Close()
	if err := json.NewDecoder(sresp.Body).Decode(&sum); err != nil {
		return r, fmt.Errorf("summary: %w", err)
	}
	stored := len(seen)
	switch {
	case sum.Interactions > stored:
		r.Dup += sum.Interactions - stored
		fmt.Fprintf(os.Stderr, "summary counts %d interactions, %d records are stored\n", sum.Interactions, stored)
	case sum.Interactions < stored:
		r.Lost += stored - sum.Interactions
		fmt.Fprintf(os.Stderr, "summary counts %d interactions, %d records are stored\n", sum.Interactions, stored)
	}
	return r, nil
}
