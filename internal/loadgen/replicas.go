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
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ReplicaOptions configure RunReplicaCrashTest: several collector
// processes over one shared store (a database), under load from clients
// that send to all of them, while replicas are SIGKILLed in turn and the
// database goes down and comes back.
type ReplicaOptions struct {
	Binary string   // the cxop binary
	Dir    string   // working directory: config and one log per replica
	Args   []string // store flags of every replica, e.g. --store=postgres --postgres-dsn-file=F
	// Replicas is how many collectors run at once, default 2.
	Replicas int
	// Clients send batches concurrently, default 4; client c starts on
	// replica c mod Replicas and moves to the next replica after every
	// answer, so every replica takes load from every client.
	Clients int
	Batch   int // events per request, default 100
	// Kills SIGKILLs the replicas in turn (0, 1, 0, …), each restarted
	// before the next kill. A replica is killed once it has acknowledged
	// between MinAcks and MaxAcks batches (uniformly random, default 1–8)
	// since it was last ready: progress, not time, sets the cadence.
	Kills            int
	MinAcks, MaxAcks int
	// Outages takes the database down with DatabaseDown once the replicas
	// have acknowledged OutageAcks batches (default 20) since the start or
	// the last outage, waits until clients have been answered 503 with
	// Retry-After, brings it back with DatabaseUp and waits until the
	// replicas acknowledge OutageAcks batches again.
	Outages                  int
	OutageAcks               int
	DatabaseDown, DatabaseUp func() error
	// StartTimeout bounds each start until ready, default 60s.
	StartTimeout time.Duration
	Seed         uint64                           // batch contents and kill points; 0 picks one from the clock
	Log          func(format string, args ...any) // progress, one line per kill or outage
}

// ReplicaResult is what the recount found.
type ReplicaResult struct {
	Tally
	Kills     int
	Outages   int
	Summaries []int // interactions each replica's summary counts at the end
	// Resent counts batches sent again with the same ids because their
	// first outcome was unknown (no answer, or 503); ResentStored counts
	// the records of those the store already held (stored, ack lost).
	Resent, ResentStored int
	// NoAnswer counts requests that got no answer (a killed replica).
	NoAnswer int
	// Unavailable counts 503 answers with a Retry-After (the database
	// was down), each retried after the time it asked.
	Unavailable int
	// ServerErrors counts other 5xx answers, and 503s without a
	// Retry-After: neither should happen.
	ServerErrors int
}

// replicaRun is the shared state of one RunReplicaCrashTest.
type replicaRun struct {
	o      ReplicaOptions
	procs  []*Process
	client *http.Client
	token  string
	read   string // the read token, for the export and the summaries

	// acks[i] counts batches replica i acknowledged since it was last
	// ready; total all batches acknowledged; unavailable all 503s.
	acks        []atomic.Int64
	ready       []atomic.Bool // as a Service's endpoints: started and ready, not being killed
	total       atomic.Int64
	unavailable atomic.Int64
	stop        atomic.Bool // clients finish their batch in hand and end

	mu     sync.Mutex
	acked  map[string]int // batch prefix -> records
	res    ReplicaResult
	failed error
}

// RunReplicaCrashTest starts o.Replicas collectors over one store, drives
// load through all of them, kills and restarts them in turn and takes the
// database down and up as o asks, lets every client resend what was not
// acknowledged until it is, and then recounts the export (of one replica)
// and the summaries (of every replica) against every id acknowledged with
// a 200. The replicas are stopped with SIGTERM at the end and must exit
// cleanly. An error means the test could not run to the end or a replica
// broke the protocol; lost or doubled records are in the result.
func RunReplicaCrashTest(ctx context.Context, o ReplicaOptions) (ReplicaResult, error) {
	o.defaults()
	cfg := filepath.Join(o.Dir, "collector.yaml")
	// The survey's trigger names the touchpoint, so that every append
	// also writes the survey engine's feed entries and the engine's lease
	// moves between the replicas as they die (no page URL: no invitations).
	tokens, err := WriteConfigTriggered(cfg, true)
	if err != nil {
		return ReplicaResult{}, err
	}
	r := &replicaRun{
		o:      o,
		client: NewClient(o.Clients * o.Replicas),
		token:  tokens.Touchpoint,
		read:   tokens.Read,
		acks:   make([]atomic.Int64, o.Replicas),
		ready:  make([]atomic.Bool, o.Replicas),
		acked:  map[string]int{},
	}
	for i := range o.Replicas {
		r.procs = append(r.procs, &Process{Binary: o.Binary, Config: cfg, LogPath: filepath.Join(o.Dir, fmt.Sprintf("replica-%d.log", i))})
	}
	defer func() {
		for _, p := range r.procs {
			_ = p.Kill()
		}
	}()
	for i := range r.procs {
		if err := r.start(ctx, i); err != nil {
			return r.res, err
		}
	}
	began := time.Now()
	rng := rand.New(rand.NewPCG(o.Seed, 0x7e91))

	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	var clients sync.WaitGroup
	for c := range o.Clients {
		seed := rng.Uint64()
		clients.Go(func() { r.runClient(loadCtx, c, seed) })
	}
	drive := func() error {
		for kill := 1; kill <= o.Kills; kill++ {
			if err := r.killOne(ctx, kill, rng); err != nil {
				return err
			}
		}
		for outage := 1; outage <= o.Outages; outage++ {
			if err := r.outage(ctx, outage); err != nil {
				return err
			}
		}
		return nil
	}
	err = drive()
	r.stop.Store(true)
	if err != nil {
		cancelLoad()
	}
	clients.Wait()
	if err != nil {
		return r.result(), err
	}
	if err := r.failure(); err != nil {
		return r.result(), err
	}
	if err := r.checkAlive(); err != nil {
		return r.result(), err
	}
	if err := r.recount(ctx, began); err != nil {
		return r.result(), err
	}
	for i, p := range r.procs {
		if err := p.Stop(30 * time.Second); err != nil {
			return r.result(), fmt.Errorf("replica %d: %w", i, err)
		}
	}
	return r.result(), nil
}

func (o *ReplicaOptions) defaults() {
	if o.Replicas < 1 {
		o.Replicas = 2
	}
	if o.Clients < 1 {
		o.Clients = 4
	}
	if o.Batch < 1 {
		o.Batch = 100
	}
	if o.MinAcks < 1 {
		o.MinAcks = 1
	}
	if o.MaxAcks < o.MinAcks {
		o.MaxAcks = max(o.MinAcks, 8)
	}
	if o.OutageAcks < 1 {
		o.OutageAcks = 20
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

func (r *replicaRun) start(ctx context.Context, i int) error {
	if _, err := r.procs[i].Start(ctx, r.o.StartTimeout, r.o.Args...); err != nil {
		return fmt.Errorf("start replica %d: %w", i, err)
	}
	r.acks[i].Store(0)
	r.ready[i].Store(true)
	return nil
}

// killOne waits until the replica whose turn it is has acknowledged its
// share since it was ready, SIGKILLs it and restarts it.
func (r *replicaRun) killOne(ctx context.Context, kill int, rng *rand.Rand) error {
	i := (kill - 1) % r.o.Replicas
	want := int64(r.o.MinAcks + rng.IntN(r.o.MaxAcks-r.o.MinAcks+1))
	if err := r.waitFor(ctx, fmt.Sprintf("replica %d to acknowledge %d batches before kill %d", i, want, kill),
		func() bool { return r.acks[i].Load() >= want }); err != nil {
		return err
	}
	if err := r.checkAlive(); err != nil {
		return err
	}
	acked := r.acks[i].Load()
	r.ready[i].Store(false)
	if err := r.procs[i].Kill(); err != nil {
		return err
	}
	r.mu.Lock()
	r.res.Kills++
	r.mu.Unlock()
	if err := r.start(ctx, i); err != nil {
		return fmt.Errorf("after kill %d: %w", kill, err)
	}
	r.o.Log("kill %d/%d: replica %d after %d batches acknowledged since ready; restarted", kill, r.o.Kills, i, acked)
	return nil
}

// outage takes the database down under load until clients have been told
// 503, brings it back and waits until the replicas take load again.
func (r *replicaRun) outage(ctx context.Context, n int) error {
	if r.o.DatabaseDown == nil || r.o.DatabaseUp == nil {
		return errors.New("outages need DatabaseDown and DatabaseUp")
	}
	from := r.total.Load()
	want := int64(r.o.OutageAcks)
	if err := r.waitFor(ctx, fmt.Sprintf("%d batches acknowledged before outage %d", want, n),
		func() bool { return r.total.Load()-from >= want }); err != nil {
		return err
	}
	refused := r.unavailable.Load()
	if err := r.o.DatabaseDown(); err != nil {
		return fmt.Errorf("outage %d: take the database down: %w", n, err)
	}
	downAt := r.total.Load()
	if err := r.waitFor(ctx, fmt.Sprintf("a 503 during outage %d", n),
		func() bool { return r.unavailable.Load() > refused }); err != nil {
		return err
	}
	if err := r.o.DatabaseUp(); err != nil {
		return fmt.Errorf("outage %d: bring the database back: %w", n, err)
	}
	upFrom := r.total.Load()
	if err := r.waitFor(ctx, fmt.Sprintf("%d batches acknowledged after outage %d", want, n),
		func() bool { return r.total.Load()-upFrom >= want }); err != nil {
		return err
	}
	if err := r.checkAlive(); err != nil {
		return err
	}
	r.mu.Lock()
	r.res.Outages++
	r.mu.Unlock()
	r.o.Log("outage %d/%d: database down after %d batches acknowledged, %d more acknowledged while it went down, %d answers 503 so far; back up and taking load",
		n, r.o.Outages, downAt, upFrom-downAt, r.unavailable.Load())
	return nil
}

// waitFor polls cond until it holds, a client failed or ctx ends.
func (r *replicaRun) waitFor(ctx context.Context, what string, cond func() bool) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if err := r.failure(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// checkAlive fails the run when a replica ended without being killed.
func (r *replicaRun) checkAlive() error {
	for i, p := range r.procs {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("replica %d exited on its own (%v); see %s", i, err, p.LogPath)
		}
	}
	return nil
}

func (r *replicaRun) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *replicaRun) result() ReplicaResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	res.Unavailable = int(r.unavailable.Load())
	return res
}

// runClient sends batches until told to stop, each until a replica
// acknowledges it, as a real client behind a Service does: each request
// goes to the next ready replica (a Service routes to ready endpoints
// only; a replica is killed while requests to it are in flight), and a
// batch whose outcome is unknown (no answer, 503) is sent again with the
// same ids, to the next ready replica, after the Retry-After the answer
// asked for.
func (r *replicaRun) runClient(ctx context.Context, c int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(c)))
	replica := c % r.o.Replicas
	for seq := 0; !r.stop.Load(); seq++ {
		b := &batch{prefix: fmt.Sprintf("c%d-%d", c, seq), n: r.o.Batch}
		b.body = Events(b.prefix, b.n, time.Now(), time.Minute, rng)
		for {
			if ctx.Err() != nil || r.failure() != nil {
				return
			}
			target, ok := r.nextReady(replica)
			if !ok { // every replica is being restarted: wait for one
				if Sleep(ctx, time.Millisecond) != nil {
					return
				}
				continue
			}
			done, wait := r.sendTo(target, b)
			replica = (target + 1) % r.o.Replicas
			if done {
				break
			}
			if wait > 0 && Sleep(ctx, wait) != nil {
				return
			}
		}
	}
}

// nextReady is the first ready replica from i on.
func (r *replicaRun) nextReady(i int) (int, bool) {
	for k := range r.o.Replicas {
		if j := (i + k) % r.o.Replicas; r.ready[j].Load() {
			return j, true
		}
	}
	return 0, false
}

// sendTo posts b to replica i once. It reports whether b was
// acknowledged, and otherwise how long the answer asked to wait.
func (r *replicaRun) sendTo(i int, b *batch) (bool, time.Duration) {
	p := r.procs[i]
	url := "http://" + p.Addr + "/v1/events"
	// Not tied to the run's context: cancelling would close the
	// connection from the client's side, which is not the fault tested.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	code, answer, retryAfter, body, err := postEvents(rctx, r.client, url, r.token, b.body)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil: // no answer: the replica was killed; the outcome is unknown
		r.res.NoAnswer++
		b.sends++
		return false, 0
	case code == http.StatusOK:
		if err := checkAck(b, answer, fmt.Sprintf("replica %d", i)); err != nil {
			r.failLocked(err)
			return false, 0
		}
		if b.sends > 0 {
			r.res.Resent++
			r.res.ResentStored += answer.Duplicates
		}
		r.acked[b.prefix] = b.n
		r.acks[i].Add(1)
		r.total.Add(1)
		return true, 0
	case code == http.StatusTooManyRequests && retryAfter > 0: // not stored
		return false, retryAfter
	case code == http.StatusServiceUnavailable && retryAfter > 0:
		// The database is down, or the commit's outcome is unknown.
		if r.unavailable.Add(1) <= 3 {
			r.o.Log("batch %s: replica %d answered 503 (retry after %s): %s", b.prefix, i, retryAfter, body)
		}
		b.sends++
		return false, retryAfter
	case code >= 500:
		r.res.ServerErrors++
		r.o.Log("batch %s: replica %d answered %d without a usable Retry-After: %s", b.prefix, i, code, body)
		b.sends++
		return false, time.Second
	default:
		r.failLocked(fmt.Errorf("batch %s: replica %d answered %d: %s", b.prefix, i, code, body))
		return false, 0
	}
}

func (r *replicaRun) failLocked(err error) {
	if r.failed == nil {
		r.failed = err
	}
}

// postEvents sends one batch and returns the status, the answer of a 200,
// the Retry-After of any other answer (0 when missing or unusable) and
// the body of an answer that is not a 200. err is non-nil only when no
// whole answer arrived.
func postEvents(ctx context.Context, c *http.Client, url, token string, body []byte) (int, Answer, time.Duration, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, Answer{}, 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, Answer{}, 0, "", err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, Answer{}, 0, "", fmt.Errorf("%s: read answer to %d: %w", url, resp.StatusCode, err)
	}
	var a Answer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(msg, &a); err != nil {
			return resp.StatusCode, a, 0, string(msg), nil
		}
		return resp.StatusCode, a, 0, "", nil
	}
	wait, _ := RetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if wait == 0 && resp.Header.Get("Retry-After") == "0" {
		wait = time.Millisecond
	}
	return resp.StatusCode, a, wait, string(bytes.TrimSpace(msg)), nil
}

// recount compares the export of the first replica and every replica's
// summary with what was acknowledged.
func (r *replicaRun) recount(ctx context.Context, began time.Time) error {
	seen, lines, err := exportIDs(ctx, r.procs[0].URL(), r.read)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &r.res
	res.Tally = tallyExport(r.acked, seen, lines)
	var over, under int
	var msgs []string
	for i, p := range r.procs {
		n, err := countInteractions(ctx, r.client, p.URL(), r.read, began)
		if err != nil {
			return fmt.Errorf("replica %d: %w", i, err)
		}
		res.Summaries = append(res.Summaries, n)
		o, u, msg := summaryMismatch(fmt.Sprintf("replica %d's summary", i), n, res.Exported)
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
