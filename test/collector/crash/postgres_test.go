package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

// TestReplicasOnPostgresSurviveKills: two `cxop collector --store=postgres`
// processes over one PostgreSQL, four clients sending to both, 20
// SIGKILLs of the replicas in turn, each restarted; then every id
// acknowledged with a 200 is exported once and counted once by both
// replicas' summaries.
func TestReplicasOnPostgresSurviveKills(t *testing.T) {
	res := runScenarioTest(t, pgDirect, loadgen.ReplicaOptions{Kills: 20})
	if res.Kills != 20 {
		t.Errorf("killed replicas %d times, want 20", res.Kills)
	}
	if res.NoAnswer == 0 {
		t.Error("no request went unanswered: the kills never cut a request off")
	}
	if res.Unavailable != 0 || res.ServerErrors != 0 {
		t.Errorf("live replicas answered %d requests 503 and %d with another 5xx; the database never went away", res.Unavailable, res.ServerErrors)
	}
}

// TestReplicasThroughPgBouncerSurviveKills: the same through PgBouncer in
// transaction pooling mode, with --postgres-statement-cache=false.
func TestReplicasThroughPgBouncerSurviveKills(t *testing.T) {
	res := runScenarioTest(t, pgBouncer, loadgen.ReplicaOptions{Kills: 20})
	if res.Kills != 20 {
		t.Errorf("killed replicas %d times, want 20", res.Kills)
	}
	if res.Unavailable != 0 || res.ServerErrors != 0 {
		t.Errorf("live replicas answered %d requests 503 and %d with another 5xx; the database never went away", res.Unavailable, res.ServerErrors)
	}
}

// TestReplicasRideOutADatabaseRestart: PostgreSQL stops (fast shutdown)
// and starts again while two replicas take load: clients are answered 503
// with Retry-After, resend the same ids, and nothing acknowledged is lost
// or stored twice.
func TestReplicasRideOutADatabaseRestart(t *testing.T) {
	res := runScenarioTest(t, pgRestart, loadgen.ReplicaOptions{Outages: 1})
	if res.Outages != 1 {
		t.Errorf("%d database restarts, want 1", res.Outages)
	}
	if res.Unavailable == 0 {
		t.Error("no client was answered 503 while the database was down")
	}
	if res.ServerErrors != 0 {
		t.Errorf("%d answers were a 5xx other than 503 with Retry-After", res.ServerErrors)
	}
	if res.NoAnswer != 0 {
		t.Errorf("%d requests went unanswered though no replica was killed", res.NoAnswer)
	}
}

// runScenarioTest runs one scenario with the test's sizes and checks the
// recount.
func runScenarioTest(t *testing.T, sc pgScenario, o loadgen.ReplicaOptions) loadgen.ReplicaResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	o.Binary, o.Replicas, o.Clients, o.Batch = cxopBinary, 2, 4, 100
	o.Log = t.Logf
	res, err := runPostgresScenario(ctx, sc, dir, o)
	if err != nil {
		for i := range 2 {
			dumpLog(t, filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)))
		}
		t.Fatalf("%s did not finish: %v", sc, err)
	}
	t.Log(describe(sc, res))
	t.Logf("%s %s", sc, res)
	if res.Acked == 0 {
		t.Fatal("nothing was acknowledged: the load never reached the replicas")
	}
	if res.Mismatch != "" {
		t.Error(res.Mismatch)
	}
	if res.Unexpected != 0 {
		t.Errorf("%d exported ids were never sent", res.Unexpected)
	}
	if res.Lost != 0 || res.Dup != 0 {
		t.Errorf("%s, want nothing lost and nothing stored or counted twice", res)
	}
	if len(res.Summaries) != 2 {
		t.Errorf("summaries of %d replicas, want 2", len(res.Summaries))
	}
	return res
}
