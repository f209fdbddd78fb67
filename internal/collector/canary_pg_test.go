package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/canaryscan"
	"github.com/cxop-dev/cxop/internal/customerdata"
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

// TestErasedCanaryLeavesNoByteOnPostgres is TestErasedCanaryLeavesNoByteOnDisk
// on PostgreSQL: a canary customer through every path (an interaction with
// contact fields, an answer with a comment, a page answer, two invitations,
// a parked message, a detractor followed up, a wave member), erased; then
// every column of every row of every table (as text, bytea as bytes, each
// string also in base64) holds none of the canary's id, e-mail, phone and
// comment, and neither does any file of the server's data directory (table
// files, catalogs, the write-ahead log) nor its log, once the server has
// been made to forget (pgtest.Forget). The same scans find all four
// before the erasure. The collector's log and /metrics never carry them.
func TestErasedCanaryLeavesNoByteOnPostgres(t *testing.T) {
	const (
		canary  = "canary-7f3a9c-customer"
		email   = "canary.7f3a9c@example.org"
		phone   = "+49 30 7f3a9c"
		comment = "canary comment 7f3a9c: the agent was rude"
	)
	needles := []string{canary, email, phone, comment}
	server := pgtest.Start(t)
	dsn := server.NewDatabase(t)
	root := filepath.Dir(server.DataDir()) // the data directory and the server's log
	c := startPostgresEngineCollector(t, dsn)
	var scrapes []string

	ok := func(code int, body map[string]any, _ http.Header) {
		t.Helper()
		if code != 200 {
			t.Fatalf("%d %v", code, body)
		}
	}
	ok(c.post("/v1/events", chatToken, "", fmt.Sprintf(`[{"id":"ev-1","touchpoint":"chat","customer":%q,"waitSeconds":30,"contact":{"email":%q,"phone":%q}},
		{"id":"ev-2","touchpoint":"chat","customer":"bystander","contact":{"email":"bystander@example.org"}}]`, canary, email, phone)))
	c.step() // invitations: csat's delivered, ces's parked (no webhook)
	var link string
	for _, inv := range c.sender.ofType("survey.invitation") {
		if inv["customer"] == canary {
			link = inv["link"].(string)
		}
	}
	if link == "" {
		t.Fatalf("no invitation for the canary: %v", c.sender.bodies)
	}
	pageURL := c.url + "/s/" + strings.TrimPrefix(link, "https://cx.example.com/s/")
	page := getPage(t, pageURL)
	form := formTokenRE.FindStringSubmatch(page.body)
	if page.status != 200 || form == nil {
		t.Fatalf("survey page: %d\n%s", page.status, page.body)
	}
	if got := postPage(t, pageURL, url.Values{"form": {form[1]}, "score": {"2"}, "comment": {comment}}, nil); got.status != 200 {
		t.Fatalf("page answer: %d\n%s", got.status, got.body)
	}
	ok(c.post("/v1/responses", csatToken, "", fmt.Sprintf(`{"id":"r-1","survey":"csat","customer":%q,"score":1,"comment":%q}`, canary, comment)))
	c.step() // detractors for the closed loop, whose webhook fails
	dets := c.sender.ofType("survey.detractor")
	if len(dets) != 2 {
		t.Fatalf("%d detractor messages, want 2: %v", len(dets), c.sender.bodies)
	}
	ok(c.post("/v1/followups/"+dets[0]["detractor"].(string), csatToken, "", ""))
	c.ahead.Store(int64(25 * time.Hour))
	c.step()
	ok(c.post("/v1/responses", csatToken, "", fmt.Sprintf(`{"id":"r-2","survey":"csat","customer":%q,"score":2,"comment":%q}`, canary, comment)))
	c.step()
	ok(c.post("/v1/waves", csatToken, "", fmt.Sprintf(`{"survey":"ces","wave":"w1","audience":[{"customer":%q,"contact":{"email":%q,"phone":%q}}]}`, canary, email, phone)))
	scrapes = append(scrapes, c.scrape())

	ctx := context.Background()
	// Control: before the erasure, all four are in the tables, and, once
	// checkpointed, in the table files.
	found, tables, err := pgtest.ScanTables(ctx, dsn, needles...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cxop_ids", "cxop_records", "cxop_tail", "cxop_rollups", "cxop_engine_kv", "cxop_erasures"} {
		if !strings.Contains(" "+strings.Join(tables, " ")+" ", " "+want+" ") {
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
	code, shown := c.call("GET", "/v1/customers/"+url.PathEscape(canary), customerToken)
	if code != 200 {
		t.Fatalf("GET the canary: %d %s", code, shown)
	}
	for _, n := range needles {
		if !strings.Contains(shown, n) {
			t.Errorf("the access request lacks %q", n)
		}
	}
	_, bystander := c.call("GET", "/v1/customers/bystander", customerToken)

	code, erased := c.call("DELETE", "/v1/customers/"+url.PathEscape(canary), customerToken)
	var answer erasureAnswer
	if err := json.Unmarshal([]byte(erased), &answer); code != 200 || err != nil {
		t.Fatalf("DELETE: %d %s", code, erased)
	}
	want := customerdata.Counts{customerdata.Events: 1, customerdata.Responses: 3, customerdata.DueEntries: 1, customerdata.Invitations: 2,
		customerdata.ContactHistory: 1, customerdata.Outbox: 1, customerdata.Parked: 1, customerdata.Failed: 2, customerdata.Detractors: 3, customerdata.FollowUps: 1}
	if fmt.Sprint(answer.Erased) != fmt.Sprint(want) || answer.Total != want.Total() || len(answer.CustomerHash) != 64 {
		t.Errorf("erased %+v, want %v", answer, want)
	}
	scrapes = append(scrapes, c.scrape())
	// The erasure is durable before it answers: the rows are gone at once.
	if found, _, err := pgtest.ScanTables(ctx, dsn, needles...); err != nil || len(found) > 0 {
		t.Errorf("after the erasure, the tables still hold %v (%v)", found, err)
	}
	if err := pgtest.Forget(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	onDisk, err = canaryscan.Files(root, nil, needles...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range needles {
		if len(onDisk[n]) > 0 {
			t.Errorf("%q is still on disk after the erasure and VACUUM FULL, CHECKPOINT and a WAL switch, in %v", n, onDisk[n])
		}
	}
	if code, body := c.call("GET", "/v1/customers/"+url.PathEscape(canary), customerToken); code != 404 {
		t.Errorf("GET the erased canary: %d %s", code, body)
	}
	if code, body := c.call("GET", "/v1/customers/bystander", customerToken); code != 200 || body != bystander {
		t.Errorf("another customer after the erasure: %d\n%s\nwant\n%s", code, body, bystander)
	}
	code, audit := c.call("GET", "/v1/erasures", customerToken)
	if code != 200 || strings.Count(audit, answer.CustomerHash) != 1 {
		t.Errorf("audit log: %d\n%s", code, audit)
	}
	scrapes = append(scrapes, c.scrape())
	for _, n := range needles {
		if strings.Contains(audit, n) {
			t.Errorf("the audit log carries %q", n)
		}
		if strings.Contains(c.log.String(), n) {
			t.Errorf("the log carries %q", n)
		}
		for i, m := range scrapes {
			if strings.Contains(m, n) {
				t.Errorf("/metrics (scrape %d) carries %q", i, n)
			}
		}
	}
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
// TestInteractionContactExpiresFromDisk on PostgreSQL: an interaction with a
// contact triggers a survey (no webhook: its message is parked at once,
// contact and all). Six days later the hourly prune keeps the contact (in
// a table and, checkpointed, in a table file); eight days later it leaves
// no trace of the e-mail address or phone number in any column of any
// table, nor, once the server has forgotten (pgtest.Forget), in any file of
// the server, while the record is still exported and its customer id
// still stored.
func TestInteractionContactExpiresOnPostgres(t *testing.T) {
	now := testNow
	clock := func() time.Time { return now }
	cfg := testConfig(t, "  - name: mail\n    type: NPS\n    trigger: {touchpoints: [chat]}\nretention: 30d\ncontactRetention: 7d\npageURL: https://cx.example.com\n")
	server := pgtest.Start(t)
	dsn := server.NewDatabase(t)
	root := filepath.Dir(server.DataDir())
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), clock)
	srv.storeKind = StorePostgres
	pg, err := pgstore.Open(context.Background(), pgstore.Options{DSN: dsn, Now: clock, EngineClock: clock, FoldInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var st Storage = pg
	srv.external.Store(&st)
	ts := httptest.NewServer(srv.Handler())
	c := &testCollector{t: t, srv: srv, url: ts.URL, dir: dsn, pg: pg, ts: ts}
	t.Cleanup(c.stop)
	e, err := engine.NewOn(pg.EngineKV(), nil, nil, engine.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	_, sec := engineTestSettings(t)
	srv.surveys.Store(e)
	srv.applySurveys(cfg, sec)
	ev := fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"cust-5e0c2b","contact":{"email":%q,"phone":%q}}`, canaryEmail, canaryPhone)
	if code, body, _ := c.post("/v1/events", chatToken, "", ev); code != 200 {
		t.Fatalf("event: %d %v", code, body)
	}
	ctx := context.Background()
	if err := e.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Outbox(); err != nil || n != 1 {
		t.Fatalf("outbox: %d, %v; want the parked invitation", n, err)
	}
	inTables := func() map[string]string {
		t.Helper()
		found, _, err := pgtest.ScanTables(ctx, dsn, canaryEmail, canaryPhone, "cust-5e0c2b")
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	now = testNow.Add(6 * 24 * time.Hour)
	srv.prune(ctx)
	if found := inTables(); len(found) != 3 {
		t.Fatalf("after 6 days, the contact is not stored for delivery: %v", found)
	}
	pgExec(t, dsn, "CHECKPOINT")
	if files, err := canaryscan.Files(root, nil, canaryEmail, canaryPhone); err != nil || !hasPrefix(files[canaryEmail], "data/base/") || !hasPrefix(files[canaryPhone], "data/base/") {
		t.Fatalf("after 6 days, the contact is in no table file: %v, %v", files, err)
	}

	now = testNow.Add(8 * 24 * time.Hour)
	srv.prune(ctx)
	found := inTables()
	for _, s := range []string{canaryEmail, canaryPhone} {
		if where, ok := found[s]; ok {
			t.Errorf("%q is still stored after contactRetention and a prune (in %s)", s, where)
		}
	}
	if _, ok := found["cust-5e0c2b"]; !ok {
		t.Errorf("the record's customer id is not stored: the scan does not work")
	}
	code, body := c.exportBody("/v1/export?touchpoint=chat")
	if want := `{"id":"e1","touchpoint":"chat","customer":"cust-5e0c2b","time":"` + testNow.Format(time.RFC3339Nano) + `"}` + "\n"; code != 200 || body != want {
		t.Errorf("export after the prune: %d %q, want %q", code, body, want)
	}
	c.stop()
	if err := pgtest.Forget(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	files, err := canaryscan.Files(root, nil, canaryEmail, canaryPhone, "cust-5e0c2b")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{canaryEmail, canaryPhone} {
		if len(files[s]) > 0 {
			t.Errorf("%q is still on disk after contactRetention, a prune and VACUUM FULL, CHECKPOINT and a WAL switch (in %v)", s, files[s])
		}
	}
	if !hasPrefix(files["cust-5e0c2b"], "data/base/") {
		t.Errorf("the record's customer id is in no table file: the scan does not work (%v)", files)
	}
}
