package collector

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/canaryscan"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/webhook"
)

const customerToken = "customer-data-token-0123456789"

// lockedBuffer collects a logger's output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recordingSender delivers every invitation and keeps every body; the
// detractor webhook answers 500.
type recordingSender struct {
	mu     sync.Mutex
	bodies []map[string]any
}

func (r *recordingSender) Send(_ context.Context, _ webhook.Endpoint, m webhook.Message) webhook.Result {
	var b map[string]any
	_ = json.Unmarshal(m.Body, &b)
	r.mu.Lock()
	r.bodies = append(r.bodies, b)
	r.mu.Unlock()
	if b["type"] == "survey.detractor" {
		return webhook.Result{Outcome: webhook.Retry, Status: 500, Err: errors.New("500 Internal Server Error")}
	}
	return webhook.Result{Outcome: webhook.Delivered, Status: 200}
}

func (r *recordingSender) ofType(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, b := range r.bodies {
		if b["type"] == typ {
			out = append(out, b)
		}
	}
	return out
}

// engineCollector is a collector with its survey engine, stepped by the
// test, logging at debug level into log.
type engineCollector struct {
	*testCollector
	engine *engine.Engine
	sender *recordingSender
	// ahead is how far the engine's clock is ahead of the server's.
	ahead   atomic.Int64
	log     *lockedBuffer
	metrics string
}

// engineTestSettings are the surveys of the engine collectors: csat with
// an invitation webhook and a closed loop, ces with neither (its messages
// are parked), a customer-data token and the hosted page.
func engineTestSettings(t *testing.T) (*settings, *secrets) {
	t.Helper()
	cfg := testConfig(t, fmt.Sprintf(`    question: How likely are you to recommend us?
    trigger: {touchpoints: [chat]}
    webhook: {url: "https://hooks.example.com/nps", key: hook}
    detractorWebhook: {url: "https://hooks.example.com/detractors", key: hook}
  - name: ces
    type: CES
    tokenSHA256: [%s]
    trigger: {touchpoints: [chat]}
customerDataTokenSHA256: [%s]
pageURL: https://cx.example.com
`, collectorapi.HashToken(csatToken), collectorapi.HashToken(customerToken)))
	sec, err := parseSecrets([]byte(fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("W", 32))))))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, sec
}

func startEngineCollector(t *testing.T, dir string) *engineCollector {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, sec := engineTestSettings(t)
	reg := prometheus.NewRegistry()
	srv := NewServer(log, cfg, reg, time.Now)
	st, err := store.Open(store.Options{Dir: dir, Logger: log, Registerer: reg, Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.store.Store(st)
	sender := &recordingSender{}
	c := &engineCollector{sender: sender, log: logs}
	e, err := engine.New(st.DB(), st, sender, engine.Options{Logger: log, Registerer: reg, StaleAfter: 1000 * time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(c.ahead.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	srv.surveys.Store(e)
	srv.applySurveys(cfg, sec)
	ts := httptest.NewServer(srv.Handler())
	c.testCollector, c.engine = &testCollector{t: t, srv: srv, url: ts.URL, dir: dir, st: st, ts: ts}, e
	t.Cleanup(c.stop)
	c.metrics = c.metricsURL()
	return c
}

func (c *engineCollector) step() {
	c.t.Helper()
	if err := c.engine.Step(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

func (c *engineCollector) scrape() string {
	c.t.Helper()
	resp, err := http.Get(c.metrics + "/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// call sends a request with token and returns the status and body.
func (c *testCollector) call(method, path, token string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// filesContaining returns, for each needle, the files of dir holding its
// bytes, as they are or inside base64 (canaryscan.Forms).
func filesContaining(t *testing.T, dir string, needles []string) map[string][]string {
	t.Helper()
	found, err := canaryscan.Files(dir, nil, needles...)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// canaryStore is where an erasure test's collector keeps its data and how
// the test reads every byte of it.
type canaryStore struct {
	start func(t *testing.T) *engineCollector
	// stored fails the test unless each needle is stored (the control
	// of the scan, before the erasure).
	stored func(t *testing.T, c *engineCollector, needles []string)
	// gone fails the test if any needle is left once the erasure has
	// answered.
	gone func(t *testing.T, c *engineCollector, needles []string)
	// goneAfterRestart, when set, fails the test if any needle is left
	// after the collector has stopped and its store reopened.
	goneAfterRestart func(t *testing.T, c *engineCollector, needles []string)
}

// onDiskCanaries is the embedded store: every file of the data directory,
// with table compression off so that the scan sees every value.
var onDiskCanaries = canaryStore{
	start: func(t *testing.T) *engineCollector { return startEngineCollector(t, t.TempDir()) },
	// Before the erasure, all four are on disk, in the write-ahead log,
	// then, once flushed, in a table.
	stored: func(t *testing.T, c *engineCollector, needles []string) {
		t.Helper()
		for _, flush := range []bool{false, true} {
			if flush {
				if err := c.st.DB().Flush(); err != nil {
					t.Fatal(err)
				}
			}
			before := filesContaining(t, c.dir, needles)
			for _, n := range needles {
				if len(before[n]) == 0 {
					t.Fatalf("control scan (flushed: %v): %q is nowhere on disk before the erasure", flush, n)
				}
			}
		}
	},
	gone: func(t *testing.T, c *engineCollector, needles []string) {
		t.Helper()
		<-c.st.CompactionsIdle()
		after := filesContaining(t, c.dir, needles)
		for _, n := range needles {
			if len(after[n]) > 0 {
				t.Errorf("%q is still on disk after the erasure, in %v", n, after[n])
			}
		}
	},
	// A restart rewrites the MANIFEST, where a key holding the customer
	// id may have bounded a table file: none of the four remains after it.
	goneAfterRestart: func(t *testing.T, c *engineCollector, needles []string) {
		t.Helper()
		c.stop()
		st, err := store.Open(store.Options{Dir: c.dir, Uncompressed: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if after := filesContaining(t, c.dir, needles); len(after) > 0 {
			t.Errorf("after a restart: %v", after)
		}
	},
}

// TestErasedCanaryLeavesNoByteOnDisk writes a canary customer through
// every path (an interaction with contact fields, an answer with a comment,
// a page answer, two invitations, a parked message, a detractor followed
// up, a wave member), erases it, waits for the compaction, and scans every
// file of the data directory for the canary's id, e-mail, phone and
// comment, before and after a restart. The same scan finds all four
// before the erasure. The log and /metrics never carry them.
func TestErasedCanaryLeavesNoByteOnDisk(t *testing.T) {
	testErasedCanaryLeavesNoByte(t, onDiskCanaries)
}

// testErasedCanaryLeavesNoByte is the erasure proof on a store: the canary
// through every path, the access request showing all of it, the erasure
// leaving none of its bytes and the bystander's untouched, a second
// erasure answering zeros, and the audit log, the log and /metrics
// carrying none of it.
func testErasedCanaryLeavesNoByte(t *testing.T, cs canaryStore) {
	const (
		canary  = "canary-7f3a9c-customer"
		email   = "canary.7f3a9c@example.org"
		phone   = "+49 30 7f3a9c"
		comment = "canary comment 7f3a9c: the agent was rude"
	)
	needles := []string{canary, email, phone, comment}
	c := cs.start(t)
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
	// The page answer, through the hosted page.
	pageURL := c.url + "/s/" + strings.TrimPrefix(link, "https://cx.example.com/s/")
	page := getPage(t, pageURL)
	form := formTokenRE.FindStringSubmatch(page.body)
	if page.status != 200 || form == nil {
		t.Fatalf("survey page: %d\n%s", page.status, page.body)
	}
	if got := postPage(t, pageURL, url.Values{"form": {form[1]}, "score": {"2"}, "comment": {comment}}, nil); got.status != 200 {
		t.Fatalf("page answer: %d\n%s", got.status, got.body)
	}
	// An answer through the API, with the comment.
	ok(c.post("/v1/responses", csatToken, "", fmt.Sprintf(`{"id":"r-1","survey":"csat","customer":%q,"score":1,"comment":%q}`, canary, comment)))
	c.step() // detractors for the closed loop, whose webhook fails
	dets := c.sender.ofType("survey.detractor")
	if len(dets) != 2 {
		t.Fatalf("%d detractor messages, want 2: %v", len(dets), c.sender.bodies)
	}
	ok(c.post("/v1/followups/"+dets[0]["detractor"].(string), csatToken, "", ""))
	// A day later their retries have run out: failed. A third detractor
	// waits in the outbox for its retry.
	c.ahead.Store(int64(25 * time.Hour))
	c.step()
	ok(c.post("/v1/responses", csatToken, "", fmt.Sprintf(`{"id":"r-2","survey":"csat","customer":%q,"score":2,"comment":%q}`, canary, comment)))
	c.step()
	// A wave member, left due.
	ok(c.post("/v1/waves", csatToken, "", fmt.Sprintf(`{"survey":"ces","wave":"w1","audience":[{"customer":%q,"contact":{"email":%q,"phone":%q}}]}`, canary, email, phone)))
	scrapes = append(scrapes, c.scrape())

	cs.stored(t, c, needles)
	code, shown := c.call("GET", "/v1/customers/"+url.PathEscape(canary), customerToken)
	if code != 200 {
		t.Fatalf("GET the canary: %d %s", code, shown)
	}
	var access struct {
		Customer string
		Items    []struct {
			Kind string
			Item json.RawMessage
		}
		Counts customerdata.Counts
	}
	if err := json.Unmarshal([]byte(shown), &access); err != nil {
		t.Fatalf("access answer: %v\n%s", err, shown)
	}
	want := customerdata.Counts{customerdata.Events: 1, customerdata.Responses: 3, customerdata.DueEntries: 1, customerdata.Invitations: 2,
		customerdata.ContactHistory: 1, customerdata.Outbox: 1, customerdata.Parked: 1, customerdata.Failed: 2, customerdata.Detractors: 3, customerdata.FollowUps: 1}
	if access.Customer != canary || fmt.Sprint(access.Counts) != fmt.Sprint(want) || len(access.Items) != want.Total() {
		t.Errorf("access request: customer %q, counts %v (%d items), want %v\n%s", access.Customer, access.Counts, len(access.Items), want, shown)
	}
	for _, n := range needles {
		if !strings.Contains(shown, n) {
			t.Errorf("the access request lacks %q", n)
		}
	}

	_, bystander := c.call("GET", "/v1/customers/bystander", customerToken)
	if !strings.Contains(bystander, `"counts":{"contactHistory":1,"events":1,"invitations":2,"parked":1}`) {
		t.Errorf("the bystander before the erasure:\n%s", bystander)
	}

	code, erased := c.call("DELETE", "/v1/customers/"+url.PathEscape(canary), customerToken)
	var answer erasureAnswer
	if err := json.Unmarshal([]byte(erased), &answer); code != 200 || err != nil {
		t.Fatalf("DELETE: %d %s", code, erased)
	}
	if fmt.Sprint(answer.Erased) != fmt.Sprint(want) || answer.Total != want.Total() || len(answer.CustomerHash) != 64 {
		t.Errorf("erased %+v, want %v", answer, want)
	}
	cs.gone(t, c, needles)
	scrapes = append(scrapes, c.scrape())

	if code, body := c.call("GET", "/v1/customers/"+url.PathEscape(canary), customerToken); code != 404 {
		t.Errorf("GET the erased canary: %d %s", code, body)
	}
	if code, body := c.call("GET", "/v1/customers/bystander", customerToken); code != 200 || body != bystander {
		t.Errorf("another customer after the erasure: %d\n%s\nwant\n%s", code, body, bystander)
	}
	// Idempotent: a second erasure answers 200 and zeros.
	code, again := c.call("DELETE", "/v1/customers/"+url.PathEscape(canary), customerToken)
	var second erasureAnswer
	_ = json.Unmarshal([]byte(again), &second)
	if code != 200 || second.Total != 0 || second.CustomerHash != answer.CustomerHash || len(second.Erased) != len(customerdata.AllKinds) {
		t.Errorf("second DELETE: %d %s", code, again)
	}
	// The audit log: both erasures, under the same hash, no personal data.
	code, audit := c.call("GET", "/v1/erasures", customerToken)
	lines := strings.Split(strings.TrimSpace(audit), "\n")
	if code != 200 || len(lines) != 2 || strings.Count(audit, answer.CustomerHash) != 2 || !strings.Contains(lines[0], `"invitations":2`) {
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
	if !strings.Contains(c.log.String(), `"msg":"customer erased"`) {
		t.Errorf("no log line of the erasure:\n%s", c.log.String())
	}
	if cs.goneAfterRestart != nil {
		cs.goneAfterRestart(t, c, needles)
	}
}

// TestCustomerDataEndpointsTakeTheCustomerDataTokenOnly: no token is 401,
// an ingest or read token 403 saying which token is needed, a bad id 400
// naming the field, a customer with nothing stored 404.
func TestCustomerDataEndpointsTakeTheCustomerDataTokenOnly(t *testing.T) {
	forEachEngine(t, testCustomerDataEndpointsTakeTheCustomerDataTokenOnly)
}

func testCustomerDataEndpointsTakeTheCustomerDataTokenOnly(t *testing.T, e testEngine) {
	c := e.startWithEngine(t)
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"alice"}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	for _, path := range []string{"/v1/customers/alice", "/v1/erasures"} {
		for _, method := range []string{"GET", "DELETE"} {
			if path == "/v1/erasures" && method == "DELETE" {
				continue
			}
			for _, tc := range []struct {
				token, want string
				code        int
			}{
				{"", "missing bearer token", 401},
				{"not-a-token", "unknown bearer token", 401},
				{readToken, "not an ingest or read token", 403},
				{chatToken, "customer-data token (customerDataTokenSHA256)", 403},
				{npsToken, "customer-data token (customerDataTokenSHA256)", 403},
			} {
				code, body := c.call(method, path, tc.token)
				if code != tc.code || !strings.Contains(body, tc.want) {
					t.Errorf("%s %s with %q: %d %s, want %d and %q", method, path, tc.token, code, body, tc.code, tc.want)
				}
			}
		}
	}
	for _, tc := range []struct{ path, want string }{
		{"/v1/customers/" + strings.Repeat("x", maxCustomerLen+1), `"field":"id","reason":"longer than 256 bytes"`},
		{"/v1/customers/%FF%FE", `"field":"id","reason":"is not valid UTF-8"`},
		{"/v1/customers/a%0Ab", `"field":"id","reason":"contains a control character"`},
	} {
		for _, method := range []string{"GET", "DELETE"} {
			if code, body := c.call(method, tc.path, customerToken); code != 400 || !strings.Contains(body, tc.want) {
				t.Errorf("%s %s: %d %s, want 400 and %s", method, tc.path, code, body, tc.want)
			}
		}
	}
	if code, body := c.call("GET", "/v1/erasures?since=yesterday", customerToken); code != 400 || !strings.Contains(body, `"field":"since"`) {
		t.Errorf("since=yesterday: %d %s", code, body)
	}
	if code, body := c.call("GET", "/v1/erasures?limit=3", customerToken); code != 400 || !strings.Contains(body, `limit`) {
		t.Errorf("an unknown parameter: %d %s", code, body)
	}
	if code, body := c.call("GET", "/v1/customers/nobody", customerToken); code != 404 || !strings.Contains(body, "nothing is stored about this customer") {
		t.Errorf("GET a customer with nothing stored: %d %s", code, body)
	}
	// An id with a slash, percent-encoded, is one customer.
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e2","touchpoint":"chat","customer":"crm/42"}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	if code, body := c.call("GET", "/v1/customers/crm%2F42", customerToken); code != 200 || !strings.Contains(body, `"customer":"crm/42"`) {
		t.Errorf("GET crm/42: %d %s", code, body)
	}
	if code, body := c.call("GET", "/v1/erasures", customerToken); code != 200 || body != "" {
		t.Errorf("an empty audit log: %d %q", code, body)
	}
}

// TestCustomerCommand runs `cxop customer show` and `erase` against a
// collector.
func TestCustomerCommand(t *testing.T) { forEachEngine(t, testCustomerCommand) }

func testCustomerCommand(t *testing.T, e testEngine) {
	c := e.startWithEngine(t)
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"crm/42","contact":{"email":"x@example.org"}}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, customerToken+"\n")
	run := func(args ...string) (string, error) {
		cmd := NewCustomerCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs(append(args, "--collector", c.url, "--token-file", tokenFile))
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run("show", "crm/42"); err != nil || !strings.Contains(out, `"email":"x@example.org"`) {
		t.Errorf("show: %v\n%s", err, out)
	}
	out, err := run("erase", "crm/42")
	if err != nil || !strings.Contains(out, `"events":1`) || !strings.Contains(out, `"total":1`) {
		t.Errorf("erase: %v\n%s", err, out)
	}
	if _, err := run("show", "crm/42"); err == nil || !strings.Contains(err.Error(), "stores nothing about this customer") {
		t.Errorf("show after the erasure: %v", err)
	}
	writeFile(t, tokenFile, readToken)
	if _, err := run("erase", "crm/42"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("erase with a read token: %v", err)
	}
}

// TestErasureOnAReadOnlyStoreIs503: a store that cannot write erases
// nothing and says so; the access request still answers.
func TestErasureOnAReadOnlyStoreIs503(t *testing.T) {
	dir := t.TempDir()
	c := startEngineCollector(t, dir)
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"alice"}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	c.step()
	cfg := c.srv.cfg.Load()
	c.stop()

	st, err := store.Open(store.Options{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), time.Now)
	srv.store.Store(st)
	e, err := engine.New(st.DB(), st, &recordingSender{}, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv.surveys.Store(e)
	ts := httptest.NewServer(srv.Handler())
	ro := &testCollector{t: t, srv: srv, url: ts.URL, dir: dir, st: st, ts: ts}
	t.Cleanup(ro.stop)
	if code, body := ro.call("DELETE", "/v1/customers/alice", customerToken); code != 503 || !strings.Contains(body, "nothing erased: the store cannot write now") {
		t.Errorf("DELETE on a read-only store: %d %s", code, body)
	}
	if code, body := ro.call("GET", "/v1/customers/alice", customerToken); code != 200 || !strings.Contains(body, `"events":1`) {
		t.Errorf("GET on a read-only store: %d %s", code, body)
	}
}
