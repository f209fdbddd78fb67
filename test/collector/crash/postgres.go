package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cxop-dev/cxop/internal/loadgen"
	"github.com/cxop-dev/cxop/internal/pgtest"
)

// pgScenario is one way of running collector replicas over PostgreSQL.
type pgScenario string

const (
	// pgDirect: the replicas connect to PostgreSQL, statement cache on.
	pgDirect pgScenario = "postgres"
	// pgBouncer: the replicas connect through PgBouncer in transaction
	// pooling mode, with --postgres-statement-cache=false.
	pgBouncer pgScenario = "postgres-pgbouncer"
	// pgRestart: the database is stopped (fast shutdown) and started
	// again under load, the replicas connected directly.
	pgRestart pgScenario = "postgres-restart"
)

// bouncerPoolSize is PgBouncer's server connections for the database:
// fewer than the replicas' pools together, so transactions of both
// replicas share server connections, as they do in production.
const bouncerPoolSize = 6

// runPostgresScenario starts a throwaway PostgreSQL (and PgBouncer) in
// dir, points o's replicas at it as the scenario says and runs the
// replica crash test. o's Binary, load and kill settings are the caller's.
func runPostgresScenario(ctx context.Context, sc pgScenario, dir string, o loadgen.ReplicaOptions) (loadgen.ReplicaResult, error) {
	srv, err := pgtest.New()
	if err != nil {
		return loadgen.ReplicaResult{}, fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer func() { _ = srv.Close() }()
	dsn := srv.DSN("postgres")
	o.Args = []string{"--store=postgres", "--postgres-dsn-file", filepath.Join(dir, "postgres.dsn")}
	switch sc {
	case pgBouncer:
		b, err := pgtest.NewPgBouncer(srv, bouncerPoolSize)
		if err != nil {
			return loadgen.ReplicaResult{}, fmt.Errorf("start PgBouncer: %w", err)
		}
		defer func() { _ = b.Close() }()
		dsn = b.DSN("postgres")
		o.Args = append(o.Args, "--postgres-statement-cache=false")
	case pgRestart:
		o.DatabaseDown, o.DatabaseUp = srv.Stop, srv.Start
	}
	if err := os.WriteFile(filepath.Join(dir, "postgres.dsn"), []byte(dsn+"\n"), 0o600); err != nil {
		return loadgen.ReplicaResult{}, err
	}
	o.Dir = dir
	return loadgen.RunReplicaCrashTest(ctx, o)
}

// describe is the one-line account of a run, without the recount line.
func describe(sc pgScenario, res loadgen.ReplicaResult) string {
	return fmt.Sprintf("%s: %d replicas, %d kills, %d database restarts; %d batches resent, %d of their records already stored; %d requests unanswered (killed replica), %d answered 503 with Retry-After; exported %d distinct ids, summaries %v",
		sc, len(res.Summaries), res.Kills, res.Outages, res.Resent, res.ResentStored, res.NoAnswer, res.Unavailable, res.Exported, res.Summaries)
}
