package collector

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// The record-level tests run over both engines: the embedded store and
// PostgreSQL (a throwaway server from internal/pgtest, started on first use
// and shared by the package's tests, each on a database of its own).

// testEngine starts collectors on one engine.
type testEngine struct {
	name string
	// fresh returns a new, empty place to keep records: a directory or a
	// database's connection string.
	fresh func(t testing.TB) string
	// start starts a collector keeping its records at where, with the
	// clock now; another start at the same place is a restart.
	start func(t testing.TB, where string, cfg *settings, now func() time.Time) *testCollector
	// runOn points o at a fresh place to keep data, as the collector
	// command's flags do: a data directory, or a database named by a DSN
	// file.
	runOn func(t testing.TB, o *Options)
	// startWithEngine starts a collector with its survey engine, stepped
	// by the test (engineCollector).
	startWithEngine func(t *testing.T) *engineCollector
}

var testEngines = []testEngine{
	{
		name: StoreEmbedded, fresh: func(t testing.TB) string { return t.TempDir() }, start: func(t testing.TB, dir string, cfg *settings, now func() time.Time) *testCollector {
			return startCollectorAt(t, dir, cfg, now)
		},
		runOn:           func(t testing.TB, o *Options) { o.DataDir = filepath.Join(t.TempDir(), "data") },
		startWithEngine: func(t *testing.T) *engineCollector { return startEngineCollector(t, t.TempDir()) },
	},
	{
		name: StorePostgres, fresh: func(t testing.TB) string { return testPostgres(t).NewDatabase(t) }, start: func(t testing.TB, dsn string, cfg *settings, now func() time.Time) *testCollector {
			return startPostgresCollector(t, dsn, cfg, now)
		},
		runOn: func(t testing.TB, o *Options) {
			dsnFile := filepath.Join(t.TempDir(), "dsn")
			if err := os.WriteFile(dsnFile, []byte(testPostgres(t).NewDatabase(t)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			o.Store, o.PostgresDSNFile, o.PostgresStatementCache = StorePostgres, dsnFile, true
		},
		startWithEngine: func(t *testing.T) *engineCollector {
			return startPostgresEngineCollector(t, testPostgres(t).NewDatabase(t))
		},
	},
}

// forEachEngine runs f as a subtest on each engine.
func forEachEngine(t *testing.T, f func(t *testing.T, e testEngine)) {
	for _, e := range testEngines {
		t.Run(e.name, func(t *testing.T) { f(t, e) })
	}
}

// sharedPostgres is the package's test PostgreSQL, started on first use
// and stopped by TestMain.
var sharedPostgres pgtest.Shared

// testPostgres is the package's shared test PostgreSQL.
func testPostgres(t testing.TB) *pgtest.Server {
	t.Helper()
	return sharedPostgres.Server(t)
}

func TestMain(m *testing.M) { os.Exit(sharedPostgres.Main(m)) }

// startPostgresCollector starts a collector on the database dsn, as Run
// does with --store=postgres; mods adjust the store's options.
func startPostgresCollector(t testing.TB, dsn string, cfg *settings, now func() time.Time, mods ...func(*pgstore.Options)) *testCollector {
	t.Helper()
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), now)
	srv.storeKind = StorePostgres
	o := pgstore.Options{DSN: dsn, Now: now, FoldInterval: 20 * time.Millisecond}
	for _, mod := range mods {
		mod(&o)
	}
	pg, err := pgstore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var st Storage = pg
	srv.external.Store(&st)
	ts := httptest.NewServer(srv.Handler())
	c := &testCollector{t: t, srv: srv, url: ts.URL, dir: dsn, pg: pg, ts: ts}
	t.Cleanup(c.stop)
	return c
}

// newSurveyEngine returns a survey engine over c's store, as Run builds
// it: on the embedded store over its database, reading its record log; on
// PostgreSQL over the engine's tables, the records arriving in the store's
// feed. The test steps it.
func (c *testCollector) newSurveyEngine(sender engine.Sender, opts engine.Options) *engine.Engine {
	c.t.Helper()
	var e *engine.Engine
	var err error
	if c.pg != nil {
		e, err = engine.NewOn(c.pg.EngineKV(), nil, sender, opts)
	} else {
		e, err = engine.NewOn(c.st.EngineKV(), c.st, sender, opts)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return e
}

// startFresh starts a collector on a fresh, empty place of the engine with
// the fixed clock testNow.
func (e testEngine) startFresh(t testing.TB, cfg *settings) *testCollector {
	t.Helper()
	return e.start(t, e.fresh(t), cfg, func() time.Time { return testNow })
}
