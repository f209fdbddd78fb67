// Command crash kills a cxop collector with SIGKILL at random moments
// under load, restarts it on the same data, resends what was in flight,
// recounts, and prints "acked=N lost=L dup=D". With -power-loss N it then
// cuts the power under the store N times (internal/store/powerloss: only
// what was synced survives, and a random share of what was not) and
// prints "power-loss crash-points=N acked=A lost=L dup=D" as its last
// line. It exits 1 unless nothing acknowledged was lost and nothing was
// stored or counted twice, and 2 when the test could not run to the end.
//
// With -store postgres it runs two collector replicas
// (--store=postgres) over a throwaway PostgreSQL instead (internal/pgtest:
// PG_BIN, PGBOUNCER), with clients sending to both: first -kills SIGKILLs
// of the replicas in turn with the replicas connected directly, then as
// many through PgBouncer in transaction pooling mode
// (--postgres-statement-cache=false), then -db-restarts restarts of the
// database under load; it prints one "SCENARIO replicas=2 … acked=N
// lost=L dup=D" line for each.
//
//	go run ./test/collector/crash -cxop bin/cxop -kills 20 -power-loss 1000
//	go run ./test/collector/crash -cxop bin/cxop -store postgres -kills 60 -db-restarts 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
	"github.com/cxop-dev/cxop/internal/store/powerloss"
)

func main() {
	bin := flag.String("cxop", "bin/cxop", "the cxop binary")
	kills := flag.Int("kills", 20, "how many times to SIGKILL the collector under load (0: none)")
	powerLosses := flag.Int("power-loss", 0, "how many power losses to simulate under the store after the kills (0: none)")
	workers := flag.Int("workers", 4, "concurrent writers")
	batch := flag.Int("batch", 100, "events per request")
	minDelay := flag.Duration("min-delay", 50*time.Millisecond, "shortest time from ready to kill")
	maxDelay := flag.Duration("max-delay", 800*time.Millisecond, "longest time from ready to kill")
	longEvery := flag.Int("long-every", 5, "make every Nth kill a long one, across the collector's 5s checkpoints (0: never)")
	seed := flag.Uint64("seed", 0, "seed of the kill delays (0: from the clock)")
	keep := flag.Bool("keep", false, "keep the data directory and collector log")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	storeKind := flag.String("store", "embedded", "the collector's store: embedded, or postgres (two replicas over a throwaway PostgreSQL)")
	dbRestarts := flag.Int("db-restarts", 3, "with -store postgres: database restarts under load after the kills (0: none)")
	flag.Parse()
	switch *storeKind {
	case "embedded":
	case "postgres":
		os.Exit(runPostgres(*bin, *kills, *dbRestarts, *workers, *batch, *seed, *keep, *timeout))
	default:
		fmt.Fprintf(os.Stderr, "crash: -store %q: want embedded or postgres\n", *storeKind)
		os.Exit(2)
	}
	if *kills < 0 || *powerLosses < 0 || *kills+*powerLosses == 0 {
		fmt.Fprintln(os.Stderr, "crash: -kills or -power-loss must be at least 1")
		os.Exit(2)
	}
	code := 0
	if *kills > 0 {
		code = run(*bin, loadgen.Options{
			Kills: *kills, Workers: *workers, Batch: *batch, MinDelay: *minDelay, MaxDelay: *maxDelay,
			LongEvery: *longEvery, Seed: *seed,
		}, *keep, *timeout)
	}
	if *powerLosses > 0 && code != 2 {
		code = max(code, runPowerLoss(*powerLosses, *workers, *seed, *timeout))
	}
	os.Exit(code)
}

// runPowerLoss simulates power losses under the store in this process.
func runPowerLoss(n, workers int, seed uint64, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	res, err := powerloss.Run(ctx, powerloss.Options{CrashPoints: n, Writers: workers, Seed: seed,
		Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash: power loss (seed %d) after %d crash points: %v\n", res.Seed, res.CrashPoints, err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "%d power losses in %s (seed %d): %d acknowledged records checked across them, %d unacknowledged records kept (allowed)\n",
		res.CrashPoints, time.Since(start).Round(time.Second), res.Seed, res.Checked, res.Unacked)
	for _, f := range res.Failures {
		fmt.Fprintln(os.Stderr, "FAILURE:", f)
	}
	if res.Phantom != 0 {
		fmt.Fprintf(os.Stderr, "UNEXPECTED: %d stored ids were never sent\n", res.Phantom)
	}
	fmt.Printf("power-loss crash-points=%d %s\n", res.CrashPoints, res)
	if !res.OK() {
		return 1
	}
	return 0
}

func run(bin string, o loadgen.Options, keep bool, timeout time.Duration) int {
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintln(os.Stderr, "crash: the cxop binary:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "cxop-crash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash:", err)
		return 2
	}
	if keep {
		fmt.Fprintln(os.Stderr, "crash: data and collector.log in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	o.Binary, o.Dir = bin, dir
	o.Log = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	res, err := loadgen.RunCrashTest(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "crash: after %d kills: %v\n", res.Kills, err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "%d kills in %s; %d batches resent after a kill, %d of their records were already stored; exported %d distinct ids, summary counts %d after the last kill and %d after a clean restart\n",
		res.Kills, time.Since(start).Round(time.Second), res.Retried, res.RetriedStored, res.Exported, res.SummaryAfterCrash, res.Summary)
	if res.Mismatch != "" {
		fmt.Fprintln(os.Stderr, "MISMATCH:", res.Mismatch)
	}
	if res.ServerErrors != 0 {
		fmt.Fprintf(os.Stderr, "SERVER ERRORS: %d requests answered with a 5xx after ready (resent)\n", res.ServerErrors)
	}
	if res.Unexpected != 0 {
		fmt.Fprintf(os.Stderr, "UNEXPECTED: %d exported ids were never sent\n", res.Unexpected)
	}
	fmt.Println(res)
	if !res.OK() {
		return 1
	}
	return 0
}

// runPostgres runs the PostgreSQL scenarios one after the other and prints
// a recount line for each.
func runPostgres(bin string, kills, restarts, workers, batch int, seed uint64, keep bool, timeout time.Duration) int {
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintln(os.Stderr, "crash: the cxop binary:", err)
		return 2
	}
	if kills < 0 || restarts < 0 || kills+restarts == 0 {
		fmt.Fprintln(os.Stderr, "crash: -kills or -db-restarts must be at least 1")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	type run struct {
		sc pgScenario
		o  loadgen.ReplicaOptions
	}
	var runs []run
	if kills > 0 {
		runs = append(runs, run{pgDirect, loadgen.ReplicaOptions{Kills: kills}}, run{pgBouncer, loadgen.ReplicaOptions{Kills: kills}})
	}
	if restarts > 0 {
		runs = append(runs, run{pgRestart, loadgen.ReplicaOptions{Outages: restarts}})
	}
	code := 0
	for _, r := range runs {
		dir, err := os.MkdirTemp("", "cxop-crash-pg-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "crash:", err)
			return 2
		}
		if keep {
			fmt.Fprintf(os.Stderr, "crash: %s: config and replica logs in %s\n", r.sc, dir)
		}
		start := time.Now()
		o := r.o
		o.Binary, o.Replicas, o.Clients, o.Batch, o.Seed, o.Log = bin, 2, workers, batch, seed, logf
		res, err := runPostgresScenario(ctx, r.sc, dir, o)
		if !keep {
			_ = os.RemoveAll(dir)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "crash: %s after %d kills and %d database restarts: %v\n", r.sc, res.Kills, res.Outages, err)
			return 2
		}
		fmt.Fprintf(os.Stderr, "%s in %s\n", describe(r.sc, res), time.Since(start).Round(time.Second))
		if res.Mismatch != "" {
			fmt.Fprintln(os.Stderr, "MISMATCH:", res.Mismatch)
		}
		if res.ServerErrors != 0 {
			fmt.Fprintf(os.Stderr, "SERVER ERRORS: %d answers a 5xx other than 503 with Retry-After (resent)\n", res.ServerErrors)
		}
		if res.Unexpected != 0 {
			fmt.Fprintf(os.Stderr, "UNEXPECTED: %d exported ids were never sent\n", res.Unexpected)
		}
		fmt.Printf("%s replicas=%d kills=%d db-restarts=%d %s\n", r.sc, len(res.Summaries), res.Kills, res.Outages, res)
		if !res.OK() {
			code = 1
		}
	}
	return code
}
