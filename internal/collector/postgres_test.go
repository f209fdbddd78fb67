package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// customerConfig is testConfig with the customer-data token.
func customerConfig(t *testing.T) *settings {
	return testConfig(t, fmt.Sprintf("customerDataTokenSHA256: [%s]\n", collectorapi.HashToken(customerToken)))
}

// startRecordsCollector starts a collector on engine e for the
// customer-data endpoints; on the embedded store with its survey engine,
// as Run starts it there.
func startRecordsCollector(t *testing.T, e testEngine, cfg *settings) *testCollector {
	t.Helper()
	c := e.start(t, e.fresh(t), cfg, time.Now)
	// The survey engine, as Run builds it on each store (not stepped: the
	// tests here are about records).
	c.srv.surveys.Store(c.newSurveyEngine(&recordingSender{}, engine.Options{}))
	return c
}

// TestCustomerRecordsOnBothEngines: access, erasure and the audit log give
// the same answers on both engines. A survey's trigger names chat, so that
// both keep the interactions' contacts (on PostgreSQL only an interaction
// the survey engine reads keeps one).
func TestCustomerRecordsOnBothEngines(t *testing.T) {
	cfg := testConfig(t, fmt.Sprintf(`  - name: after-chat
    type: CSAT
    trigger: {touchpoints: [chat]}
customerDataTokenSHA256: [%s]
`, collectorapi.HashToken(customerToken)))
	forEachEngine(t, func(t *testing.T, e testEngine) {
		c := startRecordsCollector(t, e, cfg)
		events := `{"id":"e1","touchpoint":"chat","customer":"alice","waitSeconds":10,"contact":{"email":"alice@example.org"}}
{"id":"e2","touchpoint":"chat","customer":"alice","waitSeconds":20}
{"id":"e3","touchpoint":"chat","customer":"bob","waitSeconds":30}
{"id":"e4","touchpoint":"chat","customer":"alice ","waitSeconds":40}`
		if code, body, _ := c.post("/v1/events", chatToken, "", events); code != 200 || body["accepted"] != 4.0 {
			t.Fatalf("events: %d %v", code, body)
		}
		if code, body, _ := c.post("/v1/responses", npsToken, "", `{"id":"r1","survey":"nps","customer":"alice","score":3,"comment":"slow"}`); code != 200 {
			t.Fatalf("response: %d %v", code, body)
		}
		code, body := c.call("GET", "/v1/customers/alice", customerToken)
		if code != 200 || !strings.Contains(body, `"counts":{"events":2,"responses":1}`) || !strings.Contains(body, "alice@example.org") || strings.Contains(body, "bob") || strings.Contains(body, `"e4"`) {
			t.Fatalf("GET alice: %d %s", code, body)
		}
		code, body = c.call("DELETE", "/v1/customers/alice", customerToken)
		var erased erasureAnswer
		if err := json.Unmarshal([]byte(body), &erased); code != 200 || err != nil {
			t.Fatalf("DELETE alice: %d %s", code, body)
		}
		if erased.Total != 3 || erased.Erased["events"] != 2 || erased.Erased["responses"] != 1 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(erased.CustomerHash) {
			t.Fatalf("DELETE alice: %s, want 2 events and 1 response under a 64-digit hash", body)
		}
		if code, body := c.call("GET", "/v1/customers/alice", customerToken); code != 404 {
			t.Errorf("GET alice after the erasure: %d %s, want 404", code, body)
		}
		if code, body := c.exportBody("/v1/export?touchpoint=chat"); code != 200 || strings.Count(body, "\n") != 2 || strings.Contains(body, `"alice"`) {
			t.Errorf("export after the erasure: %d %s, want bob's and \"alice \"'s records", code, body)
		}
		// The rollups keep the counts: no personal data.
		var sum collectorapi.TouchpointSummary
		if c.get("/v1/summary?touchpoint=chat&window=1d", &sum); sum.Interactions != 4 {
			t.Errorf("interactions after the erasure: %d, want 4", sum.Interactions)
		}
		// The erased id is free again.
		if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"carol"}`); code != 200 || body["accepted"] != 1.0 {
			t.Errorf("e1 after the erasure: %d %v, want accepted", code, body)
		}
		code, body = c.call("DELETE", "/v1/customers/alice", customerToken)
		if code != 200 || !strings.Contains(body, `"total":0`) || !strings.Contains(body, erased.CustomerHash) {
			t.Errorf("second DELETE: %d %s", code, body)
		}
		code, body = c.call("GET", "/v1/erasures", customerToken)
		lines := strings.Split(strings.TrimSpace(body), "\n")
		if code != 200 || len(lines) != 2 || !strings.Contains(lines[0], `"customerHash":"`+erased.CustomerHash+`"`) || !strings.Contains(lines[0], `"events":2`) ||
			!strings.Contains(lines[1], `"customerHash":"`+erased.CustomerHash+`"`) || !strings.Contains(lines[1], `"events":0`) {
			t.Errorf("audit log: %d %s", code, body)
		}
		if strings.Contains(body, "alice") {
			t.Errorf("the audit log names the customer: %s", body)
		}
		code, body = c.call("GET", "/v1/erasures?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), customerToken)
		if code != 200 || body != "" {
			t.Errorf("audit log from an hour ahead: %d %q, want nothing", code, body)
		}
	})
}

// TestSameSummariesOnBothEngines: the same records give the same
// summaries, to the digit, and the same exports on both engines.
func TestSameSummariesOnBothEngines(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var events, answers []string
	for i := range 600 {
		tp := []string{"chat", "phone"}[i%2]
		ago := time.Duration(rng.Int64N(int64(6 * 24 * time.Hour)))
		ev := fmt.Sprintf(`{"id":"e%d","touchpoint":%q,"customer":"c%d","waitSeconds":%d,"time":%q`, i, tp, rng.IntN(80), rng.IntN(400), testNow.Add(-ago).Format(time.RFC3339Nano))
		if rng.IntN(3) > 0 {
			ev += fmt.Sprintf(`,"resolved":%t`, rng.IntN(2) == 0)
		}
		events = append(events, ev+"}")
	}
	for i := range 300 {
		sv, top, low := "nps", 11, 0
		if i%3 == 0 {
			sv, top, low = "csat", 5, 1
		}
		ago := time.Duration(rng.Int64N(int64(6 * 24 * time.Hour)))
		answers = append(answers, fmt.Sprintf(`{"id":"r%d","survey":%q,"customer":"c%d","score":%d,"time":%q}`, i, sv, rng.IntN(80), rng.IntN(top)+low, testNow.Add(-ago).Format(time.RFC3339Nano)))
	}
	queries := []string{"window=1h", "window=1d", "window=7d", "window=2d&end=" + testNow.Add(-49*time.Hour).Format(time.RFC3339), "touchpoint=chat&touchpoint=phone&window=3d", "survey=nps&window=7d"}
	exports := []string{"touchpoint=chat", "touchpoint=phone&format=csv", "survey=nps", "survey=csat&format=csv", "survey=nps&customer=c7"}
	results := map[string]map[string]string{}
	forEachEngine(t, func(t *testing.T, e testEngine) {
		c := e.start(t, e.fresh(t), testConfig(t, ""), func() time.Time { return testNow })
		for i := 0; i < len(events); i += 100 {
			tok := chatToken
			var chat []string
			for _, ev := range events[i : i+100] {
				if strings.Contains(ev, `"chat"`) {
					chat = append(chat, ev)
				}
			}
			if code, body, _ := c.post("/v1/events", tok, "application/x-ndjson", strings.Join(chat, "\n")); code != 200 || body["accepted"] != float64(len(chat)) {
				t.Fatalf("chat events: %d %v", code, body)
			}
			var phone []string
			for _, ev := range events[i : i+100] {
				if strings.Contains(ev, `"phone"`) {
					phone = append(phone, ev)
				}
			}
			if code, body, _ := c.post("/v1/events", phoneToken, "application/x-ndjson", strings.Join(phone, "\n")); code != 200 || body["accepted"] != float64(len(phone)) {
				t.Fatalf("phone events: %d %v", code, body)
			}
		}
		for _, a := range answers {
			tok := npsToken
			if strings.Contains(a, `"csat"`) {
				tok = csatToken
			}
			if code, body, _ := c.post("/v1/responses", tok, "", a); code != 200 {
				t.Fatalf("answer %s: %d %v", a, code, body)
			}
		}
		got := map[string]string{}
		for _, q := range queries {
			code, body := getBody(t, c.url+"/v1/summary?"+q, readToken)
			if code != 200 {
				t.Fatalf("summary %s: %d %s", q, code, body)
			}
			got["summary "+q] = body
		}
		for _, q := range exports {
			code, body := c.exportBody("/v1/export?" + q)
			if code != 200 || len(body) < 10 {
				t.Fatalf("export %s: %d %s", q, code, body)
			}
			got["export "+q] = body
		}
		results[e.name] = got
	})
	emb, pg := results[StoreEmbedded], results[StorePostgres]
	if len(emb) == 0 || len(emb) != len(pg) {
		t.Fatalf("answers: %d on the embedded store, %d on PostgreSQL", len(emb), len(pg))
	}
	for k, v := range emb {
		if pg[k] != v {
			t.Errorf("%s differs:\nembedded: %s\npostgres: %s", k, v, pg[k])
		}
	}
	var all collectorapi.AllSummary
	if err := json.Unmarshal([]byte(emb["summary window=7d"]), &all); err != nil || all.Touchpoints["chat"].Interactions+all.Touchpoints["phone"].Interactions != 600 {
		t.Errorf("the 7d summary does not count the 600 events: %v %+v", err, all.Touchpoints)
	}
}

// TestReadinessFollowsTheDatabase: with the database stopped, /readyz is
// 503 with the reason and ingest 503 with Retry-After (liveness stays
// ok: a restart would not help); once it is back, both recover and the
// records sent meanwhile are stored once.
func TestReadinessFollowsTheDatabase(t *testing.T) {
	server := pgtest.Start(t)
	c := startPostgresCollector(t, server.NewDatabase(t), testConfig(t, ""), func() time.Time { return testNow })
	if code, body := getBody(t, c.url+"/readyz", ""); code != 200 || body != "ok\n" {
		t.Fatalf("readyz: %d %q", code, body)
	}
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"a","touchpoint":"chat","customer":"c1"}`); code != 200 {
		t.Fatalf("ingest: %d %v", code, body)
	}
	if err := server.Stop(); err != nil {
		t.Fatal(err)
	}
	code, body := getBody(t, c.url+"/readyz", "")
	if code != 503 || !strings.HasPrefix(body, "store unavailable: the database is unavailable") {
		t.Errorf("readyz with the database stopped: %d %q", code, body)
	}
	if code, body := getBody(t, c.url+"/healthz", ""); code != 200 {
		t.Errorf("healthz with the database stopped: %d %q, want 200", code, body)
	}
	code, answer, h := c.post("/v1/events", chatToken, "", `{"id":"b","touchpoint":"chat","customer":"c2"}`)
	if code != 503 || h.Get("Retry-After") == "" || answer["error"] != "records not stored: the database is unavailable; retry with the same ids" {
		t.Errorf("ingest with the database stopped: %d %v Retry-After %q", code, answer, h.Get("Retry-After"))
	}
	if code, body := getBody(t, c.url+"/v1/summary?touchpoint=chat&window=1h", readToken); code != 503 || !strings.Contains(body, "the database is unavailable; retry") {
		t.Errorf("summary with the database stopped: %d %q, want 503", code, body)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return statusOf(c.url+"/readyz") == 200 })
	// The retry stores b; a is a duplicate.
	var last map[string]any
	waitFor(t, func() bool {
		code, body, _ := c.post("/v1/events", chatToken, "", `[{"id":"a","touchpoint":"chat","customer":"c1"},{"id":"b","touchpoint":"chat","customer":"c2"}]`)
		last = body
		return code == 200
	})
	if last["accepted"] != 1.0 || last["duplicates"] != 1.0 {
		t.Errorf("retry after the restart: %v, want b accepted and a a duplicate", last)
	}
}

// TestTwoReplicasCountEveryIDOnce: two collectors (Run) over one database,
// one of them through PgBouncer, take overlapping batches at once; every id
// is counted once in the summary and exported once.
func TestTwoReplicasCountEveryIDOnce(t *testing.T) {
	server := testPostgres(t)
	db := server.CreateDatabase(t)
	dir := t.TempDir()
	// Replica 0 connects directly with the statement cache; replica 1
	// through PgBouncer in transaction pooling mode, without it.
	bouncer := pgtest.StartPgBouncer(t, server, 4)
	dsnFiles := []string{filepath.Join(dir, "dsn-direct"), filepath.Join(dir, "dsn-pgbouncer")}
	writeFile(t, dsnFiles[0], server.DSN(db)+"\n")
	writeFile(t, dsnFiles[1], bouncer.DSN(db)+"\n")
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, fmt.Sprintf("touchpoints:\n  - name: chat\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n", collectorapi.HashToken(chatToken), collectorapi.HashToken(readToken)))
	urls := make([]string, 2)
	for i := range urls {
		addr := freeAddr(t)
		urls[i] = "http://" + addr
		runCollector(t, Options{Listen: addr, ConfigPath: cfgFile, Store: StorePostgres, PostgresDSNFile: dsnFiles[i], PostgresStatementCache: i == 0, LogLevel: "warn", logTo: &lockedBuffer{}})
	}
	const ids, batch, senders = 2000, 100, 6
	var total, dups [senders]int
	var swg sync.WaitGroup
	for s := range senders {
		swg.Go(func() {
			// Each sender sends every id, from another start, to both
			// replicas in turn: every id arrives six times at once.
			for b := range ids / batch {
				first := ((b + s*3) % (ids / batch)) * batch
				var lines []string
				for i := first; i < first+batch; i++ {
					lines = append(lines, fmt.Sprintf(`{"id":"id-%d","touchpoint":"chat","customer":"c%d","waitSeconds":%d,"time":%q}`, i, i%50, i%90, testTime(i)))
				}
				req, _ := http.NewRequest("POST", urls[(b+s)%2]+"/v1/events", strings.NewReader(strings.Join(lines, "\n")))
				req.Header.Set("Authorization", "Bearer "+chatToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var out ingestResult
				_ = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("sender %d batch %d: %d", s, b, resp.StatusCode)
					return
				}
				total[s] += out.Accepted
				dups[s] += out.Duplicates
			}
		})
	}
	swg.Wait()
	sumAccepted, sumDups := 0, 0
	for s := range senders {
		sumAccepted += total[s]
		sumDups += dups[s]
	}
	if sumAccepted != ids || sumDups != ids*(senders-1) {
		t.Errorf("answers: %d accepted, %d duplicates; want %d and %d", sumAccepted, sumDups, ids, ids*(senders-1))
	}
	lost, duplicated := 0, 0
	for _, u := range urls {
		var sum collectorapi.TouchpointSummary
		code, body := getBody(t, u+"/v1/summary?touchpoint=chat&window=1d", readToken)
		if err := json.Unmarshal([]byte(body), &sum); code != 200 || err != nil || sum.Interactions != ids {
			t.Errorf("summary on %s: %d %s, want %d interactions", u, code, body, ids)
		}
		code, body = getBody(t, u+"/v1/export?touchpoint=chat", readToken)
		seen := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			var r struct{ ID string }
			_ = json.Unmarshal([]byte(line), &r)
			seen[r.ID]++
		}
		dup := 0
		for _, n := range seen {
			dup += n - 1
		}
		if code != 200 || len(seen) != ids || dup != 0 {
			t.Errorf("export on %s: %d, %d ids, %d duplicated; want %d ids once", u, code, len(seen), dup, ids)
		}
		lost, duplicated = max(lost, ids-len(seen)), max(duplicated, dup)
	}
	t.Logf("acked=%d lost=%d dup=%d over 2 replicas", sumAccepted, lost, duplicated)
}

// replicaBase is when the two-replica test's records happened: fixed, so
// that every sender sends the same payload under an id.
var replicaBase = time.Now().Add(-time.Hour).Truncate(time.Second)

// testTime is the time of record i, within the last day.
func testTime(i int) string {
	return replicaBase.Add(-time.Duration(i) * time.Second).UTC().Format(time.RFC3339Nano)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestPostgresFlags: the store flags are checked together, surveys are
// taken on PostgreSQL, and a database that cannot be
// reached is logged without the connection string's password while
// /readyz says why it is not ready.
func TestPostgresFlags(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, fmt.Sprintf("touchpoints:\n  - name: chat\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n", collectorapi.HashToken(chatToken), collectorapi.HashToken(readToken)))
	withSurveys := filepath.Join(dir, "surveys.yaml")
	writeFile(t, withSurveys, fmt.Sprintf("surveys:\n  - name: nps\n    type: NPS\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n", collectorapi.HashToken(npsToken), collectorapi.HashToken(readToken)))
	// Nothing listens on this port.
	closed := freeAddr(t)
	host, port, _ := net.SplitHostPort(closed)
	dsnFile := filepath.Join(dir, "dsn")
	writeFile(t, dsnFile, fmt.Sprintf("host=%s port=%s user=cxop password=hunter2-s3cret dbname=cxop connect_timeout=2\n", host, port))
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "\n")
	base := Options{Listen: "127.0.0.1:0", ConfigPath: cfgFile, LogLevel: "info", Store: StorePostgres, PostgresDSNFile: dsnFile}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"unknown store", func(o *Options) { o.Store = "mysql" }, `--store: "mysql" is not embedded or postgres`},
		{"no dsn file", func(o *Options) { o.PostgresDSNFile = "" }, "--postgres-dsn-file: required with --store=postgres"},
		{"missing dsn file", func(o *Options) { o.PostgresDSNFile = filepath.Join(dir, "nope") }, "--postgres-dsn-file: open"},
		{"empty dsn file", func(o *Options) { o.PostgresDSNFile = empty }, "--postgres-dsn-file: " + empty + " is empty"},
		{"data dir", func(o *Options) { o.DataDir = dir }, "--data-dir: not used with --store=postgres"},
		{"short engine lease", func(o *Options) { o.PostgresEngineLeaseTTL = time.Second }, "--postgres-engine-lease-ttl: 1s is shorter than 3s"},
		{"embedded without a data dir", func(o *Options) { o.Store, o.PostgresDSNFile = StoreEmbedded, "" }, "--data-dir: required with --store=embedded"},
		{"embedded with a dsn file", func(o *Options) { o.Store, o.DataDir = StoreEmbedded, dir }, "--postgres-dsn-file: only with --store=postgres"},
	} {
		o := base
		tc.mod(&o)
		err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", tc.name, err)
		}
	}

	// A database that does not answer: the collector waits for it, not
	// ready and saying why, and logs each attempt without the password.
	logs := &lockedBuffer{}
	addr := freeAddr(t)
	o := base
	o.Listen, o.logTo = addr, logs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "the database is unavailable; trying again") })
	code, body := getBody(t, "http://"+addr+"/readyz", "")
	if code != 503 || !strings.HasPrefix(body, "store is opening: ") || !strings.Contains(body, "the database is unavailable") || strings.Contains(body, "hunter2") {
		t.Errorf("readyz while the database is unreachable: %d %q", code, body)
	}
	if code, _ := getBody(t, "http://"+addr+"/healthz", ""); code != 200 {
		t.Errorf("healthz while the database is unreachable: %d", code)
	}
	cancel()
	<-done
	if out := logs.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "failed to connect") {
		t.Errorf("log of a failed connect (must not hold the password, must say what failed):\n%s", out)
	}

	// Surveys run on PostgreSQL too: a reload that adds one is taken.
	srv := NewServer(slog.New(slog.DiscardHandler), mustParse(t, mustRead(t, cfgFile)), prometheus.NewRegistry(), time.Now)
	srv.storeKind = StorePostgres
	if got, err := srv.parseServedConfig([]byte(mustRead(t, withSurveys))); err != nil || len(got.surveys) != 1 {
		t.Errorf("reload with surveys: %v", err)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}

// statusOf is the status of a GET of url, 0 when it cannot connect.
func statusOf(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPostgresReplicaRecordsItsConfigRevision: a replica over PostgreSQL
// records its config's revision in the database before it is ready (it
// then accepts records under that config), and a reloaded config's before
// the reload takes effect; an older revision never lowers it. The survey
// engine compares its own config's with it (docs/postgres.md).
func TestPostgresReplicaRecordsItsConfigRevision(t *testing.T) {
	server := testPostgres(t)
	dsn := server.NewDatabase(t)
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	writeFile(t, dsnFile, dsn+"\n")
	cfgFile := filepath.Join(dir, "config.yaml")
	config := func(revision int64, threshold string) {
		writeFile(t, cfgFile, fmt.Sprintf("revision: %d\ntouchpoints:\n  - name: chat\n    waitThreshold: %s\n    tokenSHA256: [%s]\nreadTokenSHA256: [%s]\n",
			revision, threshold, collectorapi.HashToken(chatToken), collectorapi.HashToken(readToken)))
	}
	config(5, "1m")
	pg, err := pgstore.Open(context.Background(), pgstore.Options{DSN: dsn, FoldInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	revision := func() int64 {
		rev, err := pg.EngineKV().ConfigRevision()
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	addr, metrics := freeAddr(t), freeAddr(t)
	runCollector(t, Options{Listen: addr, MetricsListen: metrics, ConfigPath: cfgFile, ConfigPoll: 20 * time.Millisecond, Store: StorePostgres, PostgresDSNFile: dsnFile,
		PostgresStatementCache: true, LogLevel: "warn", logTo: &lockedBuffer{}})
	if rev := revision(); rev != 5 {
		t.Fatalf("ready with revision %d recorded, want 5", rev)
	}
	config(9, "2m")
	waitFor(t, func() bool { return revision() == 9 })
	config(7, "3m")
	waitFor(t, func() bool {
		_, body := getBody(t, "http://"+metrics+"/metrics", "")
		return strings.Contains(body, `cxop_collector_config_reloads_total{result="success"} 2`)
	})
	if rev := revision(); rev != 9 {
		t.Errorf("an older config lowered the recorded revision to %d", rev)
	}
}
