package collector

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/canaryscan"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// startPostgresEngineCollector is startEngineCollector on the database
// dsn: the collector and its survey engine on PostgreSQL, as Run starts
// them with --store=postgres (the engine stepped by the test).
func startPostgresEngineCollector(t *testing.T, dsn string) *engineCollector {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, sec := engineTestSettings(t)
	reg := prometheus.NewRegistry()
	srv := NewServer(log, cfg, reg, time.Now)
	srv.storeKind = StorePostgres
	pg, err := pgstore.Open(context.Background(), pgstore.Options{DSN: dsn, Logger: log, FoldInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sender := &recordingSender{}
	c := &engineCollector{sender: sender, log: logs}
	e, err := engine.NewOn(pg.EngineKV(), nil, sender, engine.Options{Logger: log, Registerer: reg, StaleAfter: 1000 * time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(c.ahead.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	srv.surveys.Store(e)
	srv.applySurveys(cfg, sec)
	var st Storage = pg
	srv.external.Store(&st)
	ts := httptest.NewServer(srv.Handler())
	c.testCollector, c.engine = &testCollector{t: t, srv: srv, url: ts.URL, dir: dsn, pg: pg, ts: ts}, e
	t.Cleanup(c.stop)
	c.metrics = c.metricsURL()
	return c
}

// pgExec runs statements on the database dsn, each on its own (VACUUM
// cannot run in a transaction).
func pgExec(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// onPostgresCanaries is PostgreSQL: every column of every row of every
// table (as text, bytea as bytes, each string also in base64), then every
// file of the server's data directory (table files, catalogs, the
// write-ahead log) and its log, once the server has been made to forget
// (pgtest.Forget). The server is the test's own, so that its files hold
// only this test's database.
func onPostgresCanaries(t *testing.T) canaryStore {
	server := pgtest.Start(t)
	dsn := server.NewDatabase(t)
	root := filepath.Dir(server.DataDir()) // the data directory and the server's log
	ctx := context.Background()
	return canaryStore{
		start: func(t *testing.T) *engineCollector { return startPostgresEngineCollector(t, dsn) },
		// Before the erasure, all four are in the tables, and, once
		// checkpointed, in the table files.
		stored: func(t *testing.T, _ *engineCollector, needles []string) {
			t.Helper()
			found, tables, err := pgtest.ScanTables(ctx, dsn, needles...)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"cxop_ids", "cxop_records", "cxop_tail", "cxop_rollups", "cxop_engine_kv", "cxop_erasures"} {
				if !slices.Contains(tables, want) {
					t.Errorf("the scan did not read %s: it read %v", want, tables)
				}
			}
			for _, n := range needles {
				if found[n] == "" {
					t.Fatalf("control scan: %q is in no table before the erasure (%v)", n, found)
				}
			}
			pgExec(t, dsn, "CHECKPOINT")
			onDisk, err := canaryscan.Files(root, nil, needles...)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range needles {
				if !hasPrefix(onDisk[n], "data/base/") {
					t.Fatalf("control scan: %q is in no table file before the erasure (%v)", n, onDisk[n])
				}
			}
		},
		// The erasure is durable before it answers: the rows are gone at
		// once; the bytes, once the server has forgotten.
		gone: func(t *testing.T, _ *engineCollector, needles []string) {
			t.Helper()
			if found, _, err := pgtest.ScanTables(ctx, dsn, needles...); err != nil || len(found) > 0 {
				t.Errorf("after the erasure, the tables still hold %v (%v)", found, err)
			}
			if err := pgtest.Forget(ctx, dsn); err != nil {
				t.Fatal(err)
			}
			onDisk, err := canaryscan.Files(root, nil, needles...)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range needles {
				if len(onDisk[n]) > 0 {
					t.Errorf("%q is still on disk after the erasure and VACUUM FULL, CHECKPOINT and a WAL switch, in %v", n, onDisk[n])
				}
			}
		},
	}
}

// TestErasedCanaryLeavesNoByteOnPostgres is TestErasedCanaryLeavesNoByteOnDisk
// on PostgreSQL: the same canary through every path, access request,
// erasure, second erasure and audit log, with every table and every file
// of the server scanned (onPostgresCanaries).
func TestErasedCanaryLeavesNoByteOnPostgres(t *testing.T) {
	testErasedCanaryLeavesNoByte(t, onPostgresCanaries(t))
}

// hasPrefix reports whether one of the paths starts with prefix.
func hasPrefix(paths []string, prefix string) bool {
	for _, p := range paths {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// TestInteractionContactExpiresOnPostgres is
// TestInteractionContactExpiresFromDisk on PostgreSQL: six days later the
// hourly prune keeps the contact (in a table and, checkpointed, in a table
// file); eight days later it leaves no trace of the e-mail address or
// phone number in any column of any table, nor, once the server has
// forgotten (pgtest.Forget), in any file of the server, while the record
// is still exported and its customer id still stored.
func TestInteractionContactExpiresOnPostgres(t *testing.T) {
	server := pgtest.Start(t)
	dsn := server.NewDatabase(t)
	root := filepath.Dir(server.DataDir())
	ctx := context.Background()
	inTables := func(t *testing.T) map[string]string {
		t.Helper()
		found, _, err := pgtest.ScanTables(ctx, dsn, canaryEmail, canaryPhone, "cust-5e0c2b")
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	testInteractionContactExpires(t, contactStore{
		start: func(t *testing.T, cfg *settings, clock func() time.Time) (*testCollector, *engine.Engine) {
			c := startPostgresCollector(t, dsn, cfg, clock, func(o *pgstore.Options) { o.EngineClock, o.FoldInterval = clock, -1 })
			return c, c.newSurveyEngine(nil, engine.Options{Now: clock})
		},
		before: func(*testing.T, *testCollector) {},
		kept: func(t *testing.T, _ *testCollector) {
			t.Helper()
			if found := inTables(t); len(found) != 3 {
				t.Fatalf("after 6 days, the contact is not stored for delivery: %v", found)
			}
			pgExec(t, dsn, "CHECKPOINT")
			if files, err := canaryscan.Files(root, nil, canaryEmail, canaryPhone); err != nil || !hasPrefix(files[canaryEmail], "data/base/") || !hasPrefix(files[canaryPhone], "data/base/") {
				t.Fatalf("after 6 days, the contact is in no table file: %v, %v", files, err)
			}
		},
		dropped: func(t *testing.T, _ *testCollector) {
			t.Helper()
			found := inTables(t)
			for _, s := range []string{canaryEmail, canaryPhone} {
				if where, ok := found[s]; ok {
					t.Errorf("%q is still stored after contactRetention and a prune (in %s)", s, where)
				}
			}
			if _, ok := found["cust-5e0c2b"]; !ok {
				t.Errorf("the record's customer id is not stored: the scan does not work")
			}
		},
		forget: func(t *testing.T, c *testCollector, strs ...string) map[string][]string {
			t.Helper()
			c.stop()
			if err := pgtest.Forget(ctx, dsn); err != nil {
				t.Fatal(err)
			}
			files, err := canaryscan.Files(root, nil, strs...)
			if err != nil {
				t.Fatal(err)
			}
			if !hasPrefix(files["cust-5e0c2b"], "data/base/") {
				t.Errorf("the record's customer id is in no table file: the scan does not work (%v)", files)
			}
			return files
		},
	})
}
