// Command benchpg measures two cxop collector replicas over one PostgreSQL
// on this machine and prints, per round and then as the medians of the
// rounds:
//
//	pg_ingest_events_per_sec=N        durable events/s, closed loop, batches of -batch, spread over both replicas
//	pg_ack_p99_ms=N                   ack p99 at half that rate, open loop
//	pg_summary_p99_ms=N               GET /v1/summary over 28d with -answers stored
//	pg_copy_ceiling_events_per_sec=N  the same rows written by COPY, no collector in between
//
// The server is started by internal/pgtest (initdb in a temporary
// directory, fsync and synchronous_commit on) with the settings in
// serverSettings. The stored answers are loaded once, before the rounds,
// through pgstore's own append and fold in this process (see preload).
// It builds nothing: -cxop names the binary. Progress goes to stderr.
//
//	go run ./test/collector/benchpg -cxop bin/cxop -answers 200000 -duration 5s
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/loadgen"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// serverSettings size PostgreSQL as a deployment on a machine like this
// one would be, on top of pgtest's defaults (fsync on, synchronous_commit
// on, max_connections 200). Nothing here trades durability for speed.
var serverSettings = []string{
	// pgtest's 32MB suits many small test servers; a server of its own
	// gets a share of the memory (the default 128MB would make the 10M
	// answers' indexes thrash).
	"shared_buffers=1GB",
	// WAL of a few minutes of ingest between checkpoints, so that the load
	// is not dominated by checkpoint-forced full-page writes; the defaults
	// (1GB, 5min) are sized for small servers.
	"max_wal_size=8GB",
	"checkpoint_timeout=15min",
	// Statement statistics for the profile (-pg-stats); costs next to
	// nothing, and most managed services turn it on.
	"shared_preload_libraries=pg_stat_statements",
}

type config struct {
	bin                           string
	workers, batch, rounds        int
	duration, settle              time.Duration
	answers, preloadBatch         int
	preloadWorkers, foldBatch     int
	summaries, copyStreams, chunk int
	keep, pgStats, trigger        bool
	profileDir                    string
}

func main() {
	var c config
	flag.StringVar(&c.bin, "cxop", "bin/cxop", "the cxop binary")
	flag.IntVar(&c.workers, "workers", 32, "concurrent writers, split over the two replicas")
	flag.IntVar(&c.batch, "batch", 100, "events per request")
	flag.IntVar(&c.rounds, "rounds", 3, "measurement rounds over the one preloaded database; the medians are printed last")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "length of each load run and of each COPY run")
	flag.DurationVar(&c.settle, "settle", 5*time.Second, "pause before the half-rate run")
	flag.IntVar(&c.answers, "answers", 10_000_000, "survey answers stored before the rounds")
	flag.IntVar(&c.preloadBatch, "preload-batch", 5000, "answers per preload append")
	flag.IntVar(&c.preloadWorkers, "preload-workers", 4, "concurrent preload appends")
	flag.IntVar(&c.foldBatch, "fold-batch", 200_000, "answers per fold transaction while preloading")
	flag.IntVar(&c.summaries, "summaries", 2000, "summary requests timed per round")
	flag.IntVar(&c.copyStreams, "copy-streams", 2, "concurrent COPY streams for the ceiling (one per core here)")
	flag.IntVar(&c.chunk, "copy-chunk", 10000, "events per COPY transaction: bulk, as a ceiling should be")
	flag.BoolVar(&c.keep, "keep", false, "keep the collectors' logs")
	flag.BoolVar(&c.trigger, "trigger", false, "let the config's survey be triggered by the load's touchpoint, so that every event also gets a feed entry for the survey engine (in the ceiling too); without it, nothing acts on the events and they get none")
	flag.BoolVar(&c.pgStats, "pg-stats", false, "print the statements that took the most time (pg_stat_statements) after each round's ingest")
	flag.StringVar(&c.profileDir, "profile-dir", "", "write replica 1's CPU profile of the first round's ingest into this directory")
	timeout := flag.Duration("timeout", 2*time.Hour, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "benchpg:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// figures are one round's results, in print order.
type figures struct {
	ingest, ackP99, summaryP99, ceiling float64
}

func (f figures) print(prefix string) {
	fmt.Printf("%spg_ingest_events_per_sec=%d\n", prefix, int64(f.ingest))
	fmt.Printf("%spg_ack_p99_ms=%.2f\n", prefix, f.ackP99)
	fmt.Printf("%spg_summary_p99_ms=%.2f\n", prefix, f.summaryP99)
	fmt.Printf("%spg_copy_ceiling_events_per_sec=%d\n", prefix, int64(f.ceiling))
}

func run(ctx context.Context, c config) error {
	if _, err := os.Stat(c.bin); err != nil {
		return fmt.Errorf("the cxop binary: %w", err)
	}
	if c.workers < 2 || c.rounds < 1 || c.batch < 1 || c.chunk < 1 || c.copyStreams < 1 {
		return fmt.Errorf("-workers must be at least 2, -rounds, -batch, -copy-chunk and -copy-streams at least 1")
	}
	dir, err := os.MkdirTemp("", "cxop-benchpg-")
	if err != nil {
		return err
	}
	if c.keep {
		logf("collector logs in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	srv, err := pgtest.NewWith(serverSettings...)
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Close(); err != nil {
			logf("stop PostgreSQL: %v", err)
		}
	}()
	logf("PostgreSQL on port %d with %v", srv.Port(), serverSettings)
	dsn, err := createDatabase(ctx, srv, "cxop", "")
	if err != nil {
		return err
	}
	if err := preload(ctx, c, dsn); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	// The ceiling writes into a copy of the preloaded database: the same
	// tables, indexes and stored answers as the replicas write into, so
	// that both start from one state, not the ceiling from empty tables.
	ceilingDSN, err := createDatabase(ctx, srv, "ceiling", "cxop")
	if err != nil {
		return err
	}

	cfg := filepath.Join(dir, "collector.yaml")
	tokens, err := loadgen.WriteConfigTriggered(cfg, c.trigger)
	if err != nil {
		return err
	}
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		return err
	}
	profilerAddr := ""
	if c.profileDir != "" {
		if profilerAddr, err = loadgen.FreePort(); err != nil {
			return err
		}
	}
	var replicas []*loadgen.Process
	for i := range 2 {
		// No data directory: the store is the database.
		r := &loadgen.Process{Binary: c.bin, Config: cfg, LogPath: filepath.Join(dir, fmt.Sprintf("replica%d.log", i+1))}
		args := []string{"--store=postgres", "--postgres-dsn-file=" + dsnFile}
		if i == 0 && profilerAddr != "" {
			args = append(args, "--profiler-address="+profilerAddr)
		}
		if _, err := r.Start(ctx, 2*time.Minute, args...); err != nil {
			return fmt.Errorf("replica %d: %w", i+1, err)
		}
		defer func() { _ = r.Kill() }()
		replicas = append(replicas, r)
	}
	summaryURL := func(p *loadgen.Process) string {
		return p.URL() + "/v1/summary?" + url.Values{"survey": {loadgen.Survey}, "window": {"28d"}}.Encode()
	}
	for _, p := range replicas {
		if err := loadgen.CheckResponses(ctx, summaryURL(p), tokens.Read, c.answers); err != nil {
			return err
		}
	}

	var all []figures
	for round := 1; round <= c.rounds; round++ {
		var f figures
		name := "r" + strconv.Itoa(round)
		// 1. The ceiling first, while the replicas are idle.
		walAt, err := startPhase(ctx, dsn, ceilingDSN)
		if err != nil {
			return err
		}
		var copied int64
		if f.ceiling, copied, err = copyCeiling(ctx, c, ceilingDSN, name); err != nil {
			return fmt.Errorf("copy ceiling: %w", err)
		}
		if err := logWAL(ctx, dsn, walAt, copied, "copy ceiling"); err != nil {
			return err
		}
		// 2. Durable ingest, closed loop, half the writers on each replica.
		if err := resetStatements(ctx, c, dsn); err != nil {
			return err
		}
		if walAt, err = startPhase(ctx, dsn, ceilingDSN); err != nil {
			return err
		}
		var profiled sync.WaitGroup
		if round == 1 && profilerAddr != "" {
			profiled.Add(1)
			go func() {
				defer profiled.Done()
				path := filepath.Join(c.profileDir, "collector-pg-ingest-cpu.pprof")
				u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", profilerAddr, int(c.duration.Seconds()))
				if err := loadgen.Download(http.DefaultClient, u, path); err != nil {
					logf("cpu profile: %v", err)
					return
				}
				logf("wrote %s", path)
			}()
		}
		st, err := both(replicas, func(i int, p *loadgen.Process) (loadgen.Stats, error) {
			return loadgen.ClosedLoop(ctx, loadgen.NewClient(c.workers/2), p.URL()+"/v1/events", tokens.Touchpoint,
				c.workers/2, c.duration, events(c.batch, fmt.Sprintf("%s-max%d", name, i)))
		})
		profiled.Wait()
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		logf("round %d ingest: %s", round, st)
		f.ingest = st.EventsPerSec()
		// The fold's WAL is in it too, up to the end of the load.
		if err := logWAL(ctx, dsn, walAt, st.Events, "ingest"); err != nil {
			return err
		}
		if err := printStatements(ctx, c, dsn); err != nil {
			return err
		}
		// 3. Ack latency at half that rate, open loop.
		if err := loadgen.Sleep(ctx, c.settle); err != nil {
			return err
		}
		rate := f.ingest / 2 / float64(c.batch) / 2 // per replica
		inFlight := 2 * c.workers
		var before []loadgen.Histograms
		for _, p := range replicas {
			h, err := loadgen.ScrapeHistograms(ctx, http.DefaultClient, p.MetricsURL()+"/metrics")
			if err != nil {
				return err
			}
			before = append(before, h)
		}
		half, err := both(replicas, func(i int, p *loadgen.Process) (loadgen.Stats, error) {
			return loadgen.OpenLoop(ctx, loadgen.NewClient(inFlight), p.URL()+"/v1/events", tokens.Touchpoint,
				rate, c.duration, inFlight, events(c.batch, fmt.Sprintf("%s-half%d", name, i)))
		})
		if err != nil {
			return fmt.Errorf("half-rate ingest: %w", err)
		}
		logf("round %d half rate (%.0f requests/s per replica scheduled): %s", round, rate, half)
		f.ackP99 = ms(half.Percentile(0.99))
		// The replicas' own view: how much of the client's p99 is spent
		// inside a collector.
		for i, p := range replicas {
			after, err := loadgen.ScrapeHistograms(ctx, http.DefaultClient, p.MetricsURL()+"/metrics")
			if err != nil {
				return err
			}
			p99, n := loadgen.QuantileSince(before[i], after, `cxop_collector_request_duration_seconds{code=200,endpoint=events}`, 0.99)
			logf("  replica %d's own view: request p99 <= %.1fms (%d observed)", i+1, p99*1000, n)
		}
		if err := logFold(ctx, dsn); err != nil {
			return err
		}
		// 4. Summaries over the stored answers, alternating replicas.
		p := replicas[round%2]
		if err := loadgen.CheckResponses(ctx, summaryURL(p), tokens.Read, c.answers); err != nil {
			return err
		}
		if err := resetStatements(ctx, c, dsn); err != nil {
			return err
		}
		sum, err := loadgen.SampleSummaries(ctx, loadgen.NewClient(1), summaryURL(p), tokens.Read, c.summaries)
		if err != nil {
			return fmt.Errorf("summary: %w", err)
		}
		if err := printStatements(ctx, c, dsn); err != nil {
			return err
		}
		logf("round %d summary: %d requests, p50 %s p99 %s", round, len(sum), sum.Percentile(0.5), sum.Percentile(0.99))
		f.summaryP99 = ms(sum.Percentile(0.99))
		if c.pgStats {
			lat, err := timeWindows(ctx, dsn, c.summaries)
			if err != nil {
				return err
			}
			logf("  pgstore.SurveyWindow in process: p50 %s p99 %s", lat.Percentile(0.5), lat.Percentile(0.99))
		}
		f.print("round" + strconv.Itoa(round) + "_")
		all = append(all, f)
	}
	for _, p := range replicas {
		if err := p.Stop(time.Minute); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
	}
	median := func(get func(figures) float64) float64 {
		v := make([]float64, len(all))
		for i, f := range all {
			v[i] = get(f)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	med := figures{
		ingest:     median(func(f figures) float64 { return f.ingest }),
		ackP99:     median(func(f figures) float64 { return f.ackP99 }),
		summaryP99: median(func(f figures) float64 { return f.summaryP99 }),
		ceiling:    median(func(f figures) float64 { return f.ceiling }),
	}
	logf("medians of %d rounds at %d stored answers:", len(all), c.answers)
	med.print("")
	return nil
}

// both runs fn against each replica at once and merges the two runs:
// events add up, the elapsed time is the longer one, latencies join.
func both(replicas []*loadgen.Process, fn func(i int, p *loadgen.Process) (loadgen.Stats, error)) (loadgen.Stats, error) {
	stats := make([]loadgen.Stats, len(replicas))
	errs := make([]error, len(replicas))
	var wg sync.WaitGroup
	for i, p := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[i], errs[i] = fn(i, p)
		}()
	}
	wg.Wait()
	var m loadgen.Stats
	for i, s := range stats {
		if errs[i] != nil {
			return m, fmt.Errorf("replica %d: %w", i+1, errs[i])
		}
		m.Events += s.Events
		m.Duplicates += s.Duplicates
		m.Requests += s.Requests
		m.Throttled += s.Throttled
		m.Elapsed = max(m.Elapsed, s.Elapsed)
		m.Latencies = append(m.Latencies, s.Latencies...)
	}
	return m, nil
}

func events(batch int, run string) loadgen.BodyFunc {
	return func(w int, seq int64, rng *rand.Rand) ([]byte, int) {
		prefix := run + "-" + strconv.Itoa(w) + "-" + strconv.FormatInt(seq, 10)
		return loadgen.Events(prefix, batch, time.Now(), 0, rng), batch
	}
}

// createDatabase creates a database, as a copy of template unless that is
// empty (nobody may be connected to the template).
func createDatabase(ctx context.Context, srv *pgtest.Server, name, template string) (string, error) {
	conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	stmt := "CREATE DATABASE " + name
	if template != "" {
		stmt += " TEMPLATE " + template
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	if template != "" {
		logf("database %s: a copy of %s, made in %s", name, template, time.Since(start).Round(time.Millisecond))
	}
	return srv.DSN(name), nil
}

// preload stores c.answers answers, answer k of n at
// now - 27d*(n-k-0.5)/n, through pgstore's own append (Submit: the claim
// of the ids and the insert of records and tail rows the collector's
// ingest runs, in batches of -preload-batch from a few writers, without
// HTTP and JSON decoding in between), then folds the whole tail with
// pgstore's own Fold, so the rollups are exactly what the replicas' fold
// would leave. Only the survey engine's feed is left out: the engine would
// read and delete those entries, and nothing in a summary depends on them.
func preload(ctx context.Context, c config, dsn string) error {
	if c.answers <= 0 {
		return nil
	}
	st, err := pgstore.Open(ctx, pgstore.Options{DSN: dsn, NoEngineFeed: true, FoldInterval: -1, Holder: preloadHolder,
		FoldBatch: c.foldBatch, MaxConns: int32(c.preloadWorkers + 2), Committers: 2})
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	per := c.preloadBatch
	batches := (c.answers + per - 1) / per
	end := time.Now()
	step := float64(27*24*time.Hour) / float64(c.answers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next, done atomic.Int64
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
				n := min(per, c.answers-first)
				recs := make([]store.Record, n)
				for j := range n {
					k := first + j
					at := end.Add(-time.Duration(float64(c.answers-k)*step - step/2))
					recs[j] = answer("pre-"+strconv.Itoa(i)+"-"+strconv.Itoa(j), at, rng)
				}
				res, err := st.Submit(ctx, recs)
				if err == nil && res.Accepted != n {
					err = fmt.Errorf("batch %d: %d of %d answers accepted", i, res.Accepted, n)
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
					logf("preload: %d answers in %s", d, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	el := time.Since(start)
	logf("preload: %d answers appended in %s (%.0f/s)", done.Load(), el.Round(time.Second), float64(done.Load())/el.Seconds())
	start = time.Now()
	folded := 0
	for {
		n, err := st.Fold(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		folded += n
	}
	fs, err := st.FoldState(ctx)
	if err != nil {
		return err
	}
	if fs.Tail != 0 || fs.Folded != int64(c.answers) {
		return fmt.Errorf("after the fold: %d folded, %d in the tail; want %d and 0", fs.Folded, fs.Tail, c.answers)
	}
	logf("preload: %d answers folded in %s", folded, time.Since(start).Round(time.Second))
	// The fold lease goes back at once, so that a replica folds the
	// ingest's tail from the start instead of after the lease's TTL.
	if _, err := st.Pool().Exec(ctx, `UPDATE cxop_leases SET holder = '', expires_at = TIMESTAMPTZ '1970-01-01 00:00:00+00'
WHERE name = 'fold' AND holder = $1`, preloadHolder); err != nil {
		return err
	}
	// What autovacuum does over the weeks real ingest takes to store this
	// many answers, done at once: the fold's deletes leave every preloaded
	// answer's tail row dead (until a vacuum the summary's index scan of
	// the tail steps over all of them), and the records, inserted in
	// minutes, would otherwise get their first insert-driven autovacuum
	// in the middle of the first round, which no database that grew over
	// weeks sees. Fresh statistics for the planner too.
	start = time.Now()
	if _, err := st.Pool().Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return err
	}
	logf("preload: vacuumed in %s", time.Since(start).Round(time.Second))
	return nil
}

// preloadHolder names the preload in lease rows.
const preloadHolder = "benchpg-preload"

// timeWindows times n SurveyWindow calls over 28d in this process, on a
// connection of its own: the database's and the decoding's share of a
// summary, without HTTP and the collector's handler.
func timeWindows(ctx context.Context, dsn string, n int) (loadgen.Latencies, error) {
	st, err := pgstore.Open(ctx, pgstore.Options{DSN: dsn, FoldInterval: -1, MaxConns: 1})
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }()
	var lat loadgen.Latencies
	for range n {
		now := time.Now()
		sv, _, err := st.SurveyWindow(ctx, loadgen.Survey, 28*24*time.Hour, now, now)
		if err != nil {
			return nil, err
		}
		if sv == nil {
			return nil, fmt.Errorf("no survey aggregate")
		}
		lat = append(lat, time.Since(now))
	}
	return lat, nil
}

// answer is a survey answer as the collector's ingest makes it from
// loadgen.ResponsesAt's JSON: the normalised JSON and its fingerprint.
func answer(id string, at time.Time, rng *rand.Rand) store.Record {
	customer := "c-" + strconv.FormatInt(rng.Int64N(1_000_000), 10)
	score := rng.IntN(11)
	js, _ := json.Marshal(struct {
		ID       string `json:"id"`
		Survey   string `json:"survey"`
		Customer string `json:"customer"`
		Score    int    `json:"score"`
		Time     string `json:"time"`
	}{id, loadgen.Survey, customer, score, at.UTC().Format(time.RFC3339Nano)})
	return store.Record{Kind: rollup.KindSurvey, Subject: loadgen.Survey, ID: id, JSON: js, Fingerprint: xxhash.Sum64(js) | 1,
		Response: rollup.Response{Time: at.UnixNano(), CustomerHash: xxhash.Sum64String(customer), Score: score}}
}

// copyCeiling writes, for -duration, the rows the replicas' ingest writes
// for interaction events (an idempotency key, a record, a tail row and,
// with -trigger, the survey engine's feed entry per event) with COPY into
// the copy of the preloaded database: -copy-streams connections, each
// committing -copy-chunk events per transaction. It returns events per second and the events
// written.
func copyCeiling(ctx context.Context, c config, dsn, run string) (float64, int64, error) {
	var total atomic.Int64
	errs := make([]error, c.copyStreams)
	var seq atomic.Int64
	// Far above any sequence the store hands out, so no run collides.
	seq.Store(time.Now().UnixNano() / 1000)
	start := time.Now()
	deadline := start.Add(c.duration)
	var wg sync.WaitGroup
	for w := range c.copyStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs[w] = err
				return
			}
			defer func() { _ = conn.Close(ctx) }()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for n := 0; time.Now().Before(deadline); n++ {
				rows := ceilingRows(fmt.Sprintf("%s-copy%d-%d", run, w, n), c.chunk, seq.Add(int64(c.chunk))-int64(c.chunk), c.trigger, rng)
				if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return rows.copy(ctx, tx) }); err != nil {
					errs[w] = err
					return
				}
				total.Add(int64(c.chunk))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	rate := float64(total.Load()) / el.Seconds()
	rows := 3
	if c.trigger {
		rows = 4
	}
	logf("copy ceiling: %d events (%d rows each) in %s: %.0f/s", total.Load(), rows, el.Round(time.Millisecond), rate)
	return rate, total.Load(), nil
}

type ceilingBatch struct{ ids, records, tail, feed [][]any }

// ceilingRows builds n events' rows as the ingest's statements write them
// (see pgstore's append.go): the event's normalised JSON as the record's
// body and, with feed (a survey's trigger names the touchpoint), in its
// feed entry.
func ceilingRows(prefix string, n int, firstSeq int64, feed bool, rng *rand.Rand) ceilingBatch {
	var b ceilingBatch
	now := time.Now()
	for i := range n {
		id := loadgen.ID(prefix, i)
		customer := "c-" + strconv.FormatInt(rng.Int64N(1_000_000), 10)
		wait := float64(rng.IntN(300_000)) / 1000
		resolved := rng.IntN(4) != 0
		js, _ := json.Marshal(struct {
			ID          string  `json:"id"`
			Touchpoint  string  `json:"touchpoint"`
			Customer    string  `json:"customer"`
			WaitSeconds float64 `json:"waitSeconds"`
			Resolved    bool    `json:"resolved"`
			Time        string  `json:"time"`
		}{id, loadgen.Touchpoint, customer, wait, resolved, now.UTC().Format(time.RFC3339Nano)})
		seq := firstSeq + int64(i)
		t, h := now.UnixNano(), int64(xxhash.Sum64String(customer))
		flags := int16(1 | 8) // has wait, has resolved
		if resolved {
			flags |= 16
		}
		b.ids = append(b.ids, []any{"e", loadgen.Touchpoint, id, int64(xxhash.Sum64(js) | 1), t})
		b.records = append(b.records, []any{seq, t, "e", loadgen.Touchpoint, id, h, wait, flags, int16(0), js})
		b.tail = append(b.tail, []any{seq, "e", loadgen.Touchpoint, t, h, wait, flags, int16(0)})
		if !feed {
			continue
		}
		key := binary.BigEndian.AppendUint64([]byte(kv.FeedPrefix), uint64(seq))
		b.feed = append(b.feed, []any{key, kv.EncodeFeed('e', loadgen.Touchpoint, nil, js)})
	}
	return b
}

func (b ceilingBatch) copy(ctx context.Context, tx pgx.Tx) error {
	for _, t := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"cxop_ids", []string{"kind", "subject", "id", "fingerprint", "event_time"}, b.ids},
		{"cxop_records", []string{"seq", "event_time", "kind", "subject", "id", "customer_hash", "wait_seconds", "flags", "score", "body"}, b.records},
		{"cxop_tail", []string{"seq", "kind", "subject", "event_time", "customer_hash", "wait_seconds", "flags", "score"}, b.tail},
		{"cxop_engine_kv", []string{"key", "value"}, b.feed},
	} {
		if len(t.rows) == 0 { // no feed entries without -trigger
			continue
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{t.table}, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", t.table, err)
		}
	}
	return nil
}

// resetStatements clears pg_stat_statements before a timed ingest.
func resetStatements(ctx context.Context, c config, dsn string) error {
	if !c.pgStats {
		return nil
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// printStatements logs the statements that took the most time since
// resetStatements.
func printStatements(ctx context.Context, c config, dsn string) error {
	if !c.pgStats {
		return nil
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, `SELECT calls, total_exec_time, mean_exec_time, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 16`)
	if err != nil {
		return err
	}
	var calls, nrows int64
	var total, mean float64
	var q string
	_, err = pgx.ForEachRow(rows, []any{&calls, &total, &mean, &nrows, &q}, func() error {
		logf("  pg: %7d calls %9.0fms total %7.2fms mean %9d rows  %s", calls, total, mean, nrows, q)
		return nil
	})
	return err
}

// startPhase checkpoints the server before a timed phase and returns its
// WAL position. Each phase then starts from the same state: no dirty pages
// of the phase before left to write back, and the WAL segments the
// checkpoint recycled to write into. Without it, whichever phase came
// after a long stretch without a checkpoint (max_wal_size is 8GB here)
// created and zero-filled a new 16 MB WAL file every few thousand events,
// in its commits' path while holding the WAL write lock, and the other
// one wrote into recycled files.
//
// Before that it vacuums both databases (vacuum first waits, up to two
// minutes, for autovacuum workers to finish). Each phase's writes call
// for vacuum: the replicas' fold deletes every tail row, and the
// ceiling's inserts pass autovacuum's insert threshold. Left to
// autovacuum, that work ran into whichever phase came next: the vacuum of
// one round's deleted tail rows into the next round's ceiling, the
// ceiling's into the ingest after it.
func startPhase(ctx context.Context, dsn string, vacuum ...string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	if err := awaitAutovacuum(ctx, conn); err != nil {
		return "", err
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, "VACUUM"); err != nil {
		return "", fmt.Errorf("vacuum: %w", err)
	}
	for _, d := range vacuum {
		if err := vacuumDatabase(ctx, d); err != nil {
			return "", err
		}
	}
	logf("  vacuumed before the phase in %s", time.Since(start).Round(100*time.Millisecond))
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	var lsn string
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	return lsn, err
}

func vacuumDatabase(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "VACUUM"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

// awaitAutovacuum waits, up to two minutes, until no autovacuum worker
// runs, so that a VACUUM does not queue behind one.
func awaitAutovacuum(ctx context.Context, conn *pgx.Conn) error {
	start := time.Now()
	for {
		var workers int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`).Scan(&workers); err != nil {
			return err
		}
		if workers == 0 {
			break
		}
		if time.Since(start) > 2*time.Minute {
			logf("  %d autovacuum workers still running after %s; starting anyway", workers, time.Since(start).Round(time.Second))
			break
		}
		if err := loadgen.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	if waited := time.Since(start); waited > time.Second {
		logf("  waited %s for autovacuum", waited.Round(100*time.Millisecond))
	}
	return nil
}

// logWAL logs the WAL written since a phase's start per event it wrote.
func logWAL(ctx context.Context, dsn, from string, events int64, phase string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	var bytes float64
	if err := conn.QueryRow(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8", from).Scan(&bytes); err != nil {
		return err
	}
	logf("  %s: %.0f MB of WAL, %.0f bytes per event", phase, bytes/1e6, bytes/float64(max(events, 1)))
	return nil
}

// logFold logs how far the replicas' fold is behind.
func logFold(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	var folded, tail int64
	if err := conn.QueryRow(ctx, `SELECT folded, (SELECT count(*) FROM cxop_tail) FROM cxop_fold WHERE name = 'rollups'`).Scan(&folded, &tail); err != nil {
		return err
	}
	logf("  fold: %d records folded, %d in the tail", folded, tail)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
