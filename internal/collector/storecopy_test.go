package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/storecopy"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// A namespace moved from the embedded store to PostgreSQL and back
// (internal/storecopy, cxop store copy): the same summaries, exports and
// audit log on each side, a copy run twice or interrupted and run again
// changes nothing, and the survey engine on the target invites for the
// interactions the source's engine had not read yet, once, and for no
// other.

// moveCollector is a collector with its survey engine stepped by the test,
// on a fixed clock, on either store.
type moveCollector struct {
	*testCollector
	engine *engine.Engine
	sender *recordingSender
}

// startMoveCollector starts a collector at where: a data directory, or a
// database's connection string when pg.
func startMoveCollector(t *testing.T, where string, pg bool) *moveCollector {
	t.Helper()
	cfg, sec := engineTestSettings(t)
	now := func() time.Time { return testNow }
	log := slog.New(slog.DiscardHandler)
	srv := NewServer(log, cfg, prometheus.NewRegistry(), now)
	c := &moveCollector{sender: &recordingSender{}}
	tc := &testCollector{t: t, srv: srv, dir: where}
	opts := engine.Options{Logger: log, StaleAfter: 1000 * time.Hour, Now: now}
	var err error
	if pg {
		srv.storeKind = StorePostgres
		tc.pg, err = pgstore.Open(context.Background(), pgstore.Options{DSN: where, Now: now, FoldInterval: 20 * time.Millisecond,
			LeaseTTL: 500 * time.Millisecond, EngineLeaseTTL: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var st Storage = tc.pg
		srv.external.Store(&st)
		c.engine, err = engine.NewOn(tc.pg.EngineKV(), nil, c.sender, opts)
	} else {
		tc.st, err = store.Open(store.Options{Dir: where, Now: now, Uncompressed: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.store.Store(tc.st)
		c.engine, err = engine.New(tc.st.DB(), tc.st, c.sender, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.surveys.Store(c.engine)
	srv.applySurveys(cfg, sec)
	tc.ts = httptest.NewServer(srv.Handler())
	tc.url = tc.ts.URL
	c.testCollector = tc
	t.Cleanup(tc.stop)
	return c
}

func (c *moveCollector) step() {
	c.t.Helper()
	if err := c.engine.Step(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

func (c *moveCollector) ok(path, token, body string) {
	c.t.Helper()
	if code, resp, _ := c.post(path, token, "", body); code != 200 {
		c.t.Fatalf("POST %s: %d %v", path, code, resp)
	}
}

// invited lists the customers invitations were sent to, sorted.
func (c *moveCollector) invited() []string {
	var out []string
	for _, b := range c.sender.ofType("survey.invitation") {
		out = append(out, fmt.Sprint(b["survey"], "/", b["customer"]))
	}
	sort.Strings(out)
	return out
}

// snapshot is everything a reader sees of the namespace: every summary
// of every subject over several windows, every export, the audit log.
func (c *moveCollector) snapshot() map[string]string {
	c.t.Helper()
	snap := map[string]string{}
	get := func(path, token string) {
		code, body := c.call("GET", path, token)
		if code != 200 {
			c.t.Fatalf("GET %s: %d %s", path, code, body)
		}
		snap[path] = body
	}
	for _, w := range []string{"1h", "1d", "30d"} {
		for _, tp := range []string{"chat", "phone"} {
			get("/v1/summary?window="+w+"&touchpoint="+tp, readToken)
		}
		for _, sv := range []string{"nps", "csat", "ces"} {
			get("/v1/summary?window="+w+"&survey="+sv, readToken)
		}
	}
	for _, q := range []string{"touchpoint=chat", "touchpoint=phone", "survey=nps", "survey=csat", "survey=ces"} {
		get("/v1/export?"+q, readToken)
	}
	get("/v1/erasures", customerToken)
	return snap
}

func sameSnapshot(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s differs:\nbefore: %s\nafter:  %s", what, k, w, got[k])
		}
	}
}

// copyTwice runs copyFn interrupted after two batches, then to the end,
// then once more, and checks what each run stored.
func copyTwice(t *testing.T, copyFn func(ctx context.Context, opts storecopy.Options) (storecopy.Report, error)) storecopy.Report {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	partial, err := copyFn(ctx, storecopy.Options{Batch: 2, AfterBatch: func(n int) {
		if n == 2 {
			cancel()
		}
	}})
	cancel()
	if !errors.Is(err, context.Canceled) || partial.New == 0 {
		t.Fatalf("interrupted copy: %+v, %v; want context.Canceled after storing some", partial, err)
	}
	full, err := copyFn(context.Background(), storecopy.Options{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if full.New+partial.New != full.Records || full.Duplicates < partial.New || len(full.Conflicts) != 0 || full.Erasures != 1 || full.NewErasures != 1 || full.EngineKeys == 0 || full.AuditKeyDiffers {
		t.Errorf("copy after the interrupted one: %+v (interrupted: %+v)", full, partial)
	}
	again, err := copyFn(context.Background(), storecopy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Records != full.Records || again.New != 0 || again.Duplicates != full.Records || again.NewErasures != 0 || again.EngineKeys != full.EngineKeys {
		t.Errorf("copy run again: %+v, want every record a duplicate and nothing new (first: %+v)", again, full)
	}
	return full
}

func TestMoveNamespaceToPostgresAndBack(t *testing.T) {
	// The source: an embedded store with interactions, answers with
	// comments, invitations delivered and parked, detractors whose
	// delivery fails (they wait in the outbox), an erasure.
	src := startMoveCollector(t, t.TempDir(), false)
	src.ok("/v1/events", chatToken, `[{"id":"ev-1","touchpoint":"chat","customer":"c-1","waitSeconds":30,"contact":{"email":"c1@example.org"}},
		{"id":"ev-2","touchpoint":"chat","customer":"c-2","waitSeconds":300,"resolved":true,"contact":{"email":"c2@example.org"}},
		{"id":"ev-3","touchpoint":"chat","customer":"c-3","contact":{"phone":"+49 30 3"}},
		{"id":"ev-4","touchpoint":"chat","customer":"c-4"}]`)
	src.ok("/v1/events", phoneToken, `[{"id":"ph-1","touchpoint":"phone","customer":"c-1","waitSeconds":45}]`)
	src.step() // csat invitations delivered, ces's parked (no webhook)
	src.ok("/v1/responses", csatToken, `[{"id":"r-1","survey":"csat","customer":"c-1","score":1,"comment":"slow and rude"},
		{"id":"r-2","survey":"csat","customer":"c-2","score":5,"comment":"fine"}]`)
	src.ok("/v1/responses", npsToken, `[{"id":"n-1","survey":"nps","customer":"c-4","score":9,"comment":"great"}]`)
	src.step() // the detractor's message fails and waits for its retry
	if code, body := src.call("DELETE", "/v1/customers/c-3", customerToken); code != 200 {
		t.Fatalf("erase: %d %s", code, body)
	}
	// Interactions the engine has not read yet when ingest stops.
	src.ok("/v1/events", chatToken, `[{"id":"ev-5","touchpoint":"chat","customer":"c-5","contact":{"email":"c5@example.org"}},
		{"id":"ev-6","touchpoint":"chat","customer":"c-6","contact":{"email":"c6@example.org"}}]`)
	invitedAtSource := src.invited()
	if want := "[csat/c-1 csat/c-2 csat/c-3 csat/c-4]"; fmt.Sprint(invitedAtSource) != want {
		t.Fatalf("invited at the source: %v, want %s", invitedAtSource, want)
	}
	if n := len(src.sender.ofType("survey.detractor")); n != 1 {
		t.Fatalf("%d detractor messages at the source, want 1", n)
	}
	before := src.snapshot()
	srcDir := src.dir
	src.stop()

	// Embedded -> PostgreSQL.
	dsn := testPostgres(t).NewDatabase(t)
	copyTwice(t, func(ctx context.Context, opts storecopy.Options) (storecopy.Report, error) {
		st, err := store.Open(store.Options{Dir: srcDir, Now: func() time.Time { return testNow }})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		pg, err := storecopy.OpenPostgres(context.Background(), pgstore.Options{DSN: dsn, Now: func() time.Time { return testNow }})
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		return storecopy.EmbeddedToPostgres(ctx, st, pg, opts)
	})
	onPG := startMoveCollector(t, dsn, true)
	sameSnapshot(t, "embedded -> PostgreSQL", before, onPG.snapshot())
	onPG.step()
	onPG.step()
	// Only the interactions the source's engine had not read invite now.
	if got := fmt.Sprint(onPG.invited()); got != "[csat/c-5 csat/c-6]" {
		t.Errorf("invited on PostgreSQL after the move: %s, want only c-5 and c-6", got)
	}

	// An interaction the engine on PostgreSQL does not read before the
	// move back.
	onPG.ok("/v1/events", chatToken, `[{"id":"ev-7","touchpoint":"chat","customer":"c-7","contact":{"email":"c7@example.org"}}]`)
	middle := onPG.snapshot()

	// A copy out of a database a collector runs on is refused, and
	// writes nothing.
	backDir := t.TempDir()
	copyBack := func(ctx context.Context, opts storecopy.Options) (storecopy.Report, error) {
		pg, err := storecopy.OpenPostgres(context.Background(), pgstore.Options{DSN: dsn, Now: func() time.Time { return testNow }})
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		return storecopy.PostgresToEmbedded(ctx, pg, store.Options{Dir: backDir, Now: func() time.Time { return testNow }}, opts)
	}
	if rep, err := copyBack(context.Background(), storecopy.Options{}); !errors.Is(err, storecopy.ErrBusy) || rep.Records != 0 {
		t.Fatalf("copy from a database a collector runs on: %+v, %v; want ErrBusy and nothing copied", rep, err)
	}
	onPG.stop() // gives its leases up

	// PostgreSQL -> embedded.
	copyTwice(t, copyBack)
	back := startMoveCollector(t, backDir, false)
	sameSnapshot(t, "PostgreSQL -> embedded", middle, back.snapshot())
	back.step()
	back.step()
	if got := fmt.Sprint(back.invited()); got != "[csat/c-7]" {
		t.Errorf("invited on the embedded store after the move back: %s, want only c-7", got)
	}
	// The audit log's hash key came along: the same customer's erasure
	// logged after the moves has the source's hash.
	if code, body := back.call("DELETE", "/v1/customers/c-3", customerToken); code != 200 {
		t.Fatalf("erase: %d %s", code, body)
	}
	_, audit := back.call("GET", "/v1/erasures", customerToken)
	lines := strings.Split(strings.TrimSpace(audit), "\n")
	if len(lines) != 2 || hashOf(lines[0]) == "" || hashOf(lines[0]) != hashOf(lines[1]) {
		t.Errorf("audit log after the moves: %s; want two entries under one hash", audit)
	}
}

func hashOf(line string) string {
	const k = `"customerHash":"`
	i := strings.Index(line, k)
	if i < 0 {
		return ""
	}
	rest := line[i+len(k):]
	return rest[:strings.IndexByte(rest, '"')]
}
