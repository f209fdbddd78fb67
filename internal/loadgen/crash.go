package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Options configure RunCrashTest.
type Options struct {
	Binary  string // the cxop binary
	Dir     string // working directory: data, config and collector log
	Kills   int    // SIGKILLs under load, at least 1
	Workers int    // concurrent writers, default 4
	Batch   int    // events per request, default 100
	// MinDelay and MaxDelay bound the uniformly random time between the
	// collector answering /readyz and its SIGKILL; default 50ms–800ms.
	MinDelay, MaxDelay time.Duration
	// Every LongEvery-th kill comes instead between LongMin and LongMax
	// after ready (default 4s–11s), so that some kills land before,
	// during and after the collector's periodic rollup checkpoint (every
	// 5s) and a restart must replay from a checkpoint rather than from the
	// start. 0 disables long runs.
	LongEvery        int
	LongMin, LongMax time.Duration
	// StartTimeout bounds each start until ready, default 60s.
	StartTimeout time.Duration
	Seed         uint64                           // kill delays; 0 picks one from the clock
	Log          func(format string, args ...any) // progress, one line per kill
}

// Result is what the recount found.
type Result struct {
	Tally
	Kills int
	// Summary is the interactions the summary counts over the whole run
	// after the final clean restart; SummaryAfterCrash the same right
	// after the restart that followed the last kill (a replay).
	Summary, SummaryAfterCrash int
	// Retried counts batches whose outcome a kill made unknown and that
	// were sent again with the same ids; RetriedStored counts the records
	// of those retries the collector already held (stored, ack lost).
	Retried, RetriedStored int
	// ServerErrors counts 5xx answers; their batches were resent like
	// those a kill cut off, but a collector that said it was ready should
	// not give any.
	ServerErrors int
}

// batch is one request's worth of events; its ids are prefix-0…prefix-(n-1).
type batch struct {
	prefix string
	n      int
	body   []byte
	sends  int // earlier attempts whose outcome is unknown
}

// crashRun is the shared state of one crash test.
type crashRun struct {
	o      Options
	p      *Process
	client *http.Client
	token  string
	read   string // the read token, for the export and the summary

	mu      sync.Mutex
	acked   map[string]int // batch prefix -> records
	pending []*batch       // sent, outcome unknown: send again with the same ids
	res     Result
	failed  error // a protocol violation: stops the run
}

// RunCrashTest kills the collector with SIGKILL at random moments under
// load, restarts it on the same data dir, resends every batch whose answer
// it never got (same ids), and at the end restarts cleanly and recounts
// the export and the summary against every id acknowledged with a 200.
// An error means the test could not run to the end (or the collector
// broke the protocol); lost or doubled records are in the Result.
func RunCrashTest(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	cfg := filepath.Join(o.Dir, "collector.yaml")
	tokens, err := WriteConfig(cfg)
	if err != nil {
		return Result{}, err
	}
	r := &crashRun{
		o:      o,
		p:      &Process{Binary: o.Binary, DataDir: filepath.Join(o.Dir, "data"), Config: cfg, LogPath: filepath.Join(o.Dir, "collector.log")},
		client: NewClient(o.Workers),
		token:  tokens.Touchpoint,
		read:   tokens.Read,
		acked:  map[string]int{},
	}
	defer r.p.Kill()
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	began := time.Now()

	for kill := 1; kill <= o.Kills; kill++ {
		if _, err := r.p.Start(ctx, o.StartTimeout); err != nil {
			return r.res, fmt.Errorf("start before kill %d: %w", kill, err)
		}
		readyAt := time.Now()
		lo, hi := o.MinDelay, o.MaxDelay
		if o.LongEvery > 0 && kill%o.LongEvery == 0 {
			lo, hi = o.LongMin, o.LongMax
		}
		delay := lo + time.Duration(rng.Int64N(int64(hi-lo)))
		before := r.ackedRecords()
		r.load(ctx, kill, readyAt.Add(delay))
		if r.failed != nil {
			return r.res, r.failed
		}
		if ctx.Err() != nil {
			return r.res, fmt.Errorf("kill %d: %w", kill, ctx.Err())
		}
		r.res.Kills++
		o.Log("kill %d/%d %s after ready: %d records acknowledged in this run, %d batches in flight",
			kill, o.Kills, delay.Round(time.Millisecond), r.ackedRecords()-before, len(r.pending))
	}

	// Resend what the last kill left unknown, then restart cleanly so the
	// recount also sees a graceful shutdown and a replay.
	if _, err := r.p.Start(ctx, o.StartTimeout); err != nil {
		return r.res, fmt.Errorf("start after the last kill: %w", err)
	}
	if err := r.drain(ctx); err != nil {
		return r.res, err
	}
	if r.res.SummaryAfterCrash, err = r.interactions(ctx, began); err != nil {
		return r.res, err
	}
	if err := r.p.Stop(30 * time.Second); err != nil {
		return r.res, err
	}
	if _, err := r.p.Start(ctx, o.StartTimeout); err != nil {
		return r.res, fmt.Errorf("clean restart: %w", err)
	}
	err = r.recount(ctx, began)
	if stopErr := r.p.Stop(30 * time.Second); err == nil {
		err = stopErr
	}
	return r.res, err
}

func (o *Options) defaults() {
	if o.Kills < 1 {
		o.Kills = 1
	}
	if o.Workers < 1 {
		o.Workers = 4
	}
	if o.Batch < 1 {
		o.Batch = 100
	}
	if o.MinDelay <= 0 && o.MaxDelay <= 0 {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 800*time.Millisecond
	}
	if o.MaxDelay <= o.MinDelay {
		o.MaxDelay = o.MinDelay + time.Millisecond
	}
	if o.LongMin <= 0 && o.LongMax <= 0 {
		o.LongMin, o.LongMax = 4*time.Second, 11*time.Second
	}
	if o.LongMax <= o.LongMin {
		o.LongMax = o.LongMin + time.Millisecond
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
}

func (r *crashRun) ackedRecords() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.acked {
		n += k
	}
	return n
}

// load runs the writers until killAt, kills the collector and waits for
// every writer to see it. Writers first resend the pending batches.
func (r *crashRun) load(ctx context.Context, kill int, killAt time.Time) {
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range r.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(kill), uint64(w)))
			for seq := 0; loadCtx.Err() == nil; {
				b := r.next()
				if b == nil {
					b = &batch{prefix: fmt.Sprintf("k%d-w%d-s%d", kill, w, seq), n: r.o.Batch}
					b.body = Events(b.prefix, b.n, time.Now(), 0, rng)
					seq++
				}
				if !r.send(loadCtx, b) {
					return
				}
			}
		}()
	}
	if err := Sleep(ctx, time.Until(killAt)); err == nil {
		if exited, status := r.p.Exited(); exited {
			r.mu.Lock()
			r.fail(fmt.Errorf("the collector exited on its own (%v) before kill %d; see %s", status, kill, r.p.LogPath))
			r.mu.Unlock()
		}
		_ = r.p.Kill()
	}
	stop()
	wg.Wait()
	_ = r.p.Kill() // when ctx ended first
}

// next takes a pending batch, if any.
func (r *crashRun) next() *batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	b := r.pending[len(r.pending)-1]
	r.pending = r.pending[:len(r.pending)-1]
	return b
}

// send posts one batch and files it as acknowledged or pending. It
// returns false when the writer should stop: the collector is gone (or
// the run failed).
func (r *crashRun) send(ctx context.Context, b *batch) bool {
	// The request is not tied to ctx: cancelling it would close the
	// connection from our side, which is not the crash being tested.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	rep, err := Post(rctx, r.client, r.p.URL()+"/v1/events", r.token, b.body)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	var status *ErrStatus
	switch {
	case err == nil && rep.Code == http.StatusOK:
		if err := r.checkAck(b, rep.Answer); err != nil {
			r.fail(err)
			return false
		}
		r.acked[b.prefix] = b.n
		return true
	case err == nil: // 429: not stored; resend after Retry-After
		r.pending = append(r.pending, b)
		r.mu.Unlock()
		werr := Sleep(ctx, rep.RetryAfter)
		r.mu.Lock()
		return werr == nil
	case errors.As(err, &status) && status.Code < 500:
		// A 4xx to a well-formed batch is a harness or collector bug,
		// never a crash symptom.
		r.fail(fmt.Errorf("batch %s: %w", b.prefix, err))
		return false
	default: // broken connection or 5xx: the outcome is unknown
		if status != nil {
			r.res.ServerErrors++
			r.o.Log("batch %s: %v", b.prefix, err)
		}
		b.sends++
		r.pending = append(r.pending, b)
		return false
	}
}

// checkAck verifies a 200 to b and counts a resent batch.
func (r *crashRun) checkAck(b *batch, a Answer) error {
	if err := checkAck(b, a, "the collector"); err != nil {
		return err
	}
	if b.sends > 0 {
		r.res.Retried++
		r.res.RetriedStored += a.Duplicates
	}
	return nil
}

func (r *crashRun) fail(err error) {
	if r.failed == nil {
		r.failed = err
	}
}

// drain resends every pending batch until it is acknowledged.
func (r *crashRun) drain(ctx context.Context) error {
	for _, b := range r.pending {
		rep, _, err := PostRetrying(ctx, r.client, r.p.URL()+"/v1/events", r.token, b.body)
		if err != nil {
			return fmt.Errorf("resend %s after the last restart: %w", b.prefix, err)
		}
		if err := r.checkAck(b, rep.Answer); err != nil {
			return err
		}
		r.acked[b.prefix] = b.n
	}
	r.pending = nil
	return nil
}

// recount compares the export and the summary with what was acknowledged.
func (r *crashRun) recount(ctx context.Context, began time.Time) error {
	seen, lines, err := exportIDs(ctx, r.p.URL(), r.read)
	if err != nil {
		return err
	}
	res := &r.res
	res.Tally = tallyExport(r.acked, seen, lines)

	// The rollups must count exactly what is stored: a replay that
	// counted a record twice shows here even when the raw records are
	// right.
	if res.Summary, err = r.interactions(ctx, began); err != nil {
		return err
	}
	var over, under int
	var msgs []string
	for _, c := range []struct {
		when  string
		count int
	}{{"after the last kill", res.SummaryAfterCrash}, {"after a clean restart", res.Summary}} {
		o, u, msg := summaryMismatch(c.when+" the summary", c.count, res.Exported)
		over, under = max(over, o), max(under, u)
		if msg != "" {
			msgs = append(msgs, msg)
		}
	}
	res.Dup += over
	res.Lost += under
	res.Mismatch = strings.Join(msgs, "; ")
	return nil
}

// interactions asks the collector's summary how many interactions the
// touchpoint had over a window covering the whole run.
func (r *crashRun) interactions(ctx context.Context, began time.Time) (int, error) {
	return countInteractions(ctx, r.client, r.p.URL(), r.read, began)
}
