package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/store"
)

// Fixed clock: Monday 2026-11-23 12:00:30 UTC.
var testNow = time.Date(2026, 11, 23, 12, 0, 30, 0, time.UTC)

const (
	chatToken  = "chat-token-0123456789"
	phoneToken = "phone-token-0123456789"
	npsToken   = "nps-token-0123456789"
	csatToken  = "csat-token-0123456789"
	readToken  = "read-token-0123456789"
)

func testConfig(t *testing.T, extra string) *settings {
	t.Helper()
	cfg, err := parseConfig([]byte(fmt.Sprintf(`
touchpoints:
  - name: chat
    waitThreshold: 2m
    tokenSHA256: [%s]
  - name: phone
    waitThreshold: 1m
    businessHours:
      timeZone: Europe/Berlin
      hours:
        - days: [Monday, Tuesday, Wednesday, Thursday, Friday]
          start: "09:00"
          end: "17:00"
    tokenSHA256: [%s]
readTokenSHA256: [%s]
surveys:
  - name: nps
    type: NPS
    tokenSHA256: [%s]
  - name: csat
    type: CSAT
    tokenSHA256: [%s]
%s`, collectorapi.HashToken(chatToken), collectorapi.HashToken(phoneToken), collectorapi.HashToken(readToken), collectorapi.HashToken(npsToken), collectorapi.HashToken(csatToken), extra)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type testCollector struct {
	t   testing.TB
	srv *Server
	url string
	dir string
	st  *store.Store
	// pg is the database store of a collector on PostgreSQL (st is nil).
	pg *pgstore.Store
	ts *httptest.Server
}

func startCollector(t testing.TB, dir string, cfg *settings) *testCollector {
	t.Helper()
	return startCollectorAt(t, dir, cfg, func() time.Time { return testNow })
}

// startCollectorAt is startCollector with the clock now; mods adjust the
// store's options.
func startCollectorAt(t testing.TB, dir string, cfg *settings, now func() time.Time, mods ...func(*store.Options)) *testCollector {
	t.Helper()
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), now)
	o := store.Options{Dir: dir, Now: now}
	for _, mod := range mods {
		mod(&o)
	}
	st, err := store.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.store.Store(st)
	ts := httptest.NewServer(srv.Handler())
	c := &testCollector{t: t, srv: srv, url: ts.URL, dir: dir, st: st, ts: ts}
	t.Cleanup(c.stop)
	return c
}

// metricsURL serves the collector's MetricsHandler, as --metrics-listen
// does apart from the API.
func (c *testCollector) metricsURL() string {
	ts := httptest.NewServer(c.srv.MetricsHandler())
	c.t.Cleanup(ts.Close)
	return ts.URL
}

func (c *testCollector) stop() {
	if c.ts != nil {
		c.ts.Close()
		c.ts = nil
		if c.pg != nil {
			if err := c.pg.Close(); err != nil {
				c.t.Error(err)
			}
			return
		}
		if err := c.st.Close(); err != nil {
			c.t.Error(err)
		}
	}
}

func (c *testCollector) post(path, token, contentType, body string) (int, map[string]any, http.Header) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out, resp.Header
}

// get sends the read token, which summaries and exports always need.
func (c *testCollector) get(path string, into any) int {
	c.t.Helper()
	return c.getWith(path, readToken, into)
}

func (c *testCollector) getWith(path, token string, into any) int {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if into != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, into); err != nil {
			c.t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

func TestMalformedInputIsRejectedWhole(t *testing.T) {
	forEachEngine(t, testMalformedInputIsRejectedWhole)
}

func testMalformedInputIsRejectedWhole(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	ok := `{"id":"ok-1","touchpoint":"chat","customer":"c1","waitSeconds":10}`
	cases := []struct {
		name, body string
		code       int
		index      float64 // -1: no index
		field      string
		reason     string
	}{
		{"empty", ``, 400, -1, "", "empty body"},
		{"whitespace", "  \n ", 400, -1, "", "empty body"},
		{"empty array", `[]`, 400, -1, "", "no records"},
		{"not json", `hello`, 400, -1, "", "JSON object"},
		{"truncated object", `{"id":"a","touchpoint":"chat"`, 400, 0, "", "malformed JSON"},
		{"truncated array", `[` + ok + `,{"id":"b"`, 400, -1, "", "malformed JSON array"},
		{"truncated ndjson", ok + "\n" + `{"id":"b","touch`, 400, 1, "", "malformed JSON"},
		{"array of numbers", `[1,2]`, 400, 0, "", "must be a JSON object"},
		{"missing id", `{"touchpoint":"chat","customer":"c"}`, 400, 0, "id", "is required"},
		{"empty id", `{"id":"","touchpoint":"chat","customer":"c"}`, 400, 0, "id", "must not be empty"},
		{"id of wrong type", `{"id":7,"touchpoint":"chat","customer":"c"}`, 400, 0, "id", "must be a string"},
		{"missing customer", `{"id":"a","touchpoint":"chat"}`, 400, 0, "customer", "is required"},
		{"unknown touchpoint", `{"id":"a","touchpoint":"fax","customer":"c"}`, 400, 0, "touchpoint", `unknown touchpoint "fax"`},
		{"wait as string", `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":"10"}`, 400, 0, "waitSeconds", "must be a number"},
		{"negative wait", `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":-1}`, 400, 0, "waitSeconds", "between 0 and"},
		{"huge wait", `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":1e12}`, 400, 0, "waitSeconds", "between 0 and"},
		{"wait beyond float64", `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":1e400}`, 400, 0, "waitSeconds", "out of range"},
		{"resolved as string", `{"id":"a","touchpoint":"chat","customer":"c","resolved":"yes"}`, 400, 0, "resolved", "true or false"},
		{"unknown field", `{"id":"a","touchpoint":"chat","customer":"c","waitSecs":3}`, 400, 0, "waitSecs", "unknown field"},
		{"bad time", `{"id":"a","touchpoint":"chat","customer":"c","time":"yesterday"}`, 400, 0, "time", "RFC 3339"},
		{"far future", `{"id":"a","touchpoint":"chat","customer":"c","time":"2027-01-01T00:00:00Z"}`, 400, 0, "time", "in the future"},
		{"past retention", `{"id":"a","touchpoint":"chat","customer":"c","time":"2020-01-01T00:00:00Z"}`, 400, 0, "time", "older than the retention of 400d"},
		{"invalid utf-8", "{\"id\":\"a\",\"touchpoint\":\"chat\",\"customer\":\"\xff\xfe\"}", 400, 0, "", "UTF-8"},
		{"control character", `{"id":"a\u0000b","touchpoint":"chat","customer":"c"}`, 400, 0, "id", "control character"},
		{"duplicate id in request", `[` + ok + `,` + ok + `]`, 400, 1, "id", "repeats the id of record 0"},
		{"bad email", `{"id":"a","touchpoint":"chat","customer":"c","contact":{"email":"nope"}}`, 400, 0, "contact.email", "not an email"},
		{"second record bad", `[` + ok + `,{"id":"b","touchpoint":"chat","customer":"c","waitSeconds":-3}]`, 400, 1, "waitSeconds", "between 0"},
		{"other touchpoint", `{"id":"a","touchpoint":"phone","customer":"c"}`, 403, 0, "touchpoint", "may not write"},
		{"repeated key", `{"id":"a","touchpoint":"chat","customer":"c","customer":"d"}`, 400, 0, "customer", "customer: repeated key"},
		{"repeated key in another case", `{"id":"a","touchpoint":"chat","customer":"c","waitSeconds":1,"WaitSeconds":900}`, 400, 0, "WaitSeconds", "repeated key"},
		{"repeated nested key", ok + "\n" + `{"id":"b","touchpoint":"chat","customer":"c","contact":{"email":"a@x","email":"b@x"}}`, 400, 1, "contact.email", "contact.email: repeated key"},
		{"repeated escaped key", `[` + ok + `,{"id":"b","touchpoint":"chat","customer":"c","i\u0064":"b2"}]`, 400, 1, "id", "id: repeated key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := c.post("/v1/events", chatToken, "", tc.body)
			if code != tc.code {
				t.Fatalf("code %d, want %d: %v", code, tc.code, body)
			}
			idx, hasIdx := body["index"].(float64)
			if tc.index < 0 && hasIdx || tc.index >= 0 && (!hasIdx || idx != tc.index) {
				t.Errorf("index %v, want %v: %v", body["index"], tc.index, body)
			}
			if f, _ := body["field"].(string); f != tc.field {
				t.Errorf("field %q, want %q: %v", f, tc.field, body)
			}
			if e, _ := body["error"].(string); !strings.Contains(e, tc.reason) {
				t.Errorf("error %q does not say %q", e, tc.reason)
			}
		})
	}
	t.Run("in-flight bytes spent", func(t *testing.T) {
		limit := c.srv.inflight.limit.Load()
		defer c.srv.SetMaxInflightBytes(limit)
		c.srv.SetMaxInflightBytes(16) // less than the body
		code, body, h := c.post("/v1/events", chatToken, "", ok)
		if e, _ := body["error"].(string); code != 503 || h.Get("Retry-After") == "" || !strings.Contains(e, "in flight") ||
			body["reason"] != "in-flight request bytes over the limit" {
			t.Errorf("%d %v (Retry-After %q), want 503 with Retry-After naming the in-flight limit", code, body, h.Get("Retry-After"))
		}
	})
	var sum collectorapi.TouchpointSummary
	c.get("/v1/summary?touchpoint=chat&window=1d", &sum)
	if sum.Interactions != 0 {
		t.Errorf("after only rejected requests the summary counts %d interactions, want 0 (nothing half-written)", sum.Interactions)
	}

	t.Run("oversized body", func(t *testing.T) {
		big := `{"id":"a","touchpoint":"chat","customer":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
		if code, _, _ := c.post("/v1/events", chatToken, "", big); code != 413 {
			t.Errorf("code %d, want 413", code)
		}
	})
	t.Run("too many records", func(t *testing.T) {
		var b strings.Builder
		for i := range MaxRecords + 1 {
			fmt.Fprintf(&b, `{"id":"n%d","touchpoint":"chat","customer":"c"}`+"\n", i)
		}
		if code, body, _ := c.post("/v1/events", chatToken, "application/x-ndjson", b.String()); code != 413 {
			t.Errorf("code %d, want 413: %v", code, body)
		}
	})
	t.Run("scores", func(t *testing.T) {
		for _, tc := range []struct {
			body   string
			reason string
		}{
			{`{"id":"r","survey":"nps","customer":"c","score":11}`, "from 0 to 10"},
			{`{"id":"r","survey":"nps","customer":"c","score":-1}`, "from 0 to 10"},
			{`{"id":"r","survey":"nps","customer":"c","score":9.5}`, "whole number"},
			{`{"id":"r","survey":"nps","customer":"c"}`, "score: is required"},
			{`{"id":"r","survey":"nps","customer":"c","score":"9"}`, "must be a number"},
			{`{"id":"r","survey":"nps","customer":"c","score":5,"comment":"` + strings.Repeat("é", 2001) + `"}`, "longer than 4000 bytes"},
		} {
			if code, body, _ := c.post("/v1/responses", npsToken, "", tc.body); code != 400 || !strings.Contains(body["error"].(string), tc.reason) {
				t.Errorf("%s: %d %v, want 400 saying %q", tc.body, code, body, tc.reason)
			}
		}
		if code, body, _ := c.post("/v1/responses", csatToken, "", `{"id":"r","survey":"csat","customer":"c","score":0}`); code != 400 || !strings.Contains(body["error"].(string), "from 1 to 5") {
			t.Errorf("CSAT 0: %d %v", code, body)
		}
	})
}

func TestAuth(t *testing.T) { forEachEngine(t, testAuth) }

func testAuth(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	ev := `{"id":"a","touchpoint":"chat","customer":"c"}`
	for _, tc := range []struct {
		name, path, token, body string
		code                    int
	}{
		{"no token", "/v1/events", "", ev, 401},
		{"wrong token", "/v1/events", "nope", ev, 401},
		{"survey token on events", "/v1/events", npsToken, ev, 401},
		{"other touchpoint's token", "/v1/events", phoneToken, ev, 403},
		{"other survey's token", "/v1/responses", csatToken, `{"id":"a","survey":"nps","customer":"c","score":3}`, 403},
		{"right token", "/v1/events", chatToken, ev, 200},
	} {
		code, body, h := c.post(tc.path, tc.token, "", tc.body)
		if code != tc.code {
			t.Errorf("%s: %d %v, want %d", tc.name, code, body, tc.code)
		}
		if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without a WWW-Authenticate: Bearer challenge", tc.name)
		}
	}

}

// TestSummaryAndExportAlwaysNeedTheReadToken: summaries and exports carry
// comments and contacts; no token, a write token, or a config without any
// read token never opens them.
func TestSummaryAndExportAlwaysNeedTheReadToken(t *testing.T) {
	forEachEngine(t, testSummaryAndExportAlwaysNeedTheReadToken)
}

func testSummaryAndExportAlwaysNeedTheReadToken(t *testing.T, e testEngine) {
	r := e.startFresh(t, testConfig(t, ""))
	if code, _, _ := r.post("/v1/responses", npsToken, "", `{"id":"r1","survey":"nps","customer":"c1","score":2,"comment":"private words"}`); code != 200 {
		t.Fatalf("ingest: %d", code)
	}
	for _, path := range []string{"/v1/summary?touchpoint=chat", "/v1/summary", "/v1/export?survey=nps"} {
		for token, want := range map[string]string{
			"":              "a read token is required",
			npsToken:        "the bearer token given is not one",
			"not-a-token":   "the bearer token given is not one",
			readToken + "x": "the bearer token given is not one",
		} {
			code, body := getBody(t, r.url+path, token)
			if code != 401 || !strings.Contains(body, want) || strings.Contains(body, "private words") {
				t.Errorf("GET %s with token %q: %d %s, want 401 saying %q", path, token, code, body, want)
			}
		}
		if code, body := getBody(t, r.url+path, readToken); code != 200 {
			t.Errorf("GET %s with the read token: %d %s, want 200", path, code, body)
		}
	}
	if _, body := getBody(t, r.url+"/v1/export?survey=nps", readToken); !strings.Contains(body, "private words") {
		t.Errorf("export with the read token lacks the comment: %s", body)
	}

	// A server whose config names no read token admits nobody.
	open := e.startFresh(t, mustParse(t, "touchpoints: [{name: chat, tokenSHA256: ["+collectorapi.HashToken(chatToken)+"]}]"))
	for _, token := range []string{"", readToken, chatToken} {
		code, body := getBody(t, open.url+"/v1/summary", token)
		if code != 401 || !strings.Contains(body, "names none (readTokenSHA256)") {
			t.Errorf("summary from a config without read token, token %q: %d %s, want 401", token, code, body)
		}
	}
}

func mustParse(t *testing.T, cfg string) *settings {
	t.Helper()
	s, err := parseConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// getBody GETs url with token as the bearer ("" for none).
func getBody(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSummaryNumbers posts a known set and checks every number against a
// hand computation.
func TestSummaryNumbers(t *testing.T) { forEachEngine(t, testSummaryNumbers) }

func testSummaryNumbers(t *testing.T, e testEngine) {
	dir := e.fresh(t)
	clock := func() time.Time { return testNow }
	c := e.start(t, dir, testConfig(t, ""), clock)
	at := func(ago time.Duration) string { return testNow.Add(-ago).Format(time.RFC3339) }
	// chat, threshold 2m: waits 30, 60, 120 (compliant, at the threshold), 121, 600 (not); one old event outside 1h.
	events := []string{
		fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c1","waitSeconds":30,"resolved":true,"time":%q}`, at(time.Minute)),
		fmt.Sprintf(`{"id":"e2","touchpoint":"chat","customer":"c2","waitSeconds":60,"resolved":false,"time":%q}`, at(2*time.Minute)),
		fmt.Sprintf(`{"id":"e3","touchpoint":"chat","customer":"c1","waitSeconds":120,"resolved":true,"time":%q}`, at(3*time.Minute)),
		fmt.Sprintf(`{"id":"e4","touchpoint":"chat","customer":"c3","waitSeconds":121,"time":%q}`, at(4*time.Minute)),
		fmt.Sprintf(`{"id":"e5","touchpoint":"chat","customer":"c4","waitSeconds":600,"time":%q}`, at(5*time.Minute)),
		fmt.Sprintf(`{"id":"e6","touchpoint":"chat","customer":"c5","time":%q}`, at(30*time.Minute)),
		fmt.Sprintf(`{"id":"old","touchpoint":"chat","customer":"c6","waitSeconds":10,"time":%q}`, at(3*time.Hour)),
	}
	if code, body, _ := c.post("/v1/events", chatToken, "application/x-ndjson", strings.Join(events, "\n")+"\n"); code != 200 || body["accepted"] != 7.0 {
		t.Fatalf("post events: %d %v", code, body)
	}
	// Retrying two of them counts nothing twice.
	if code, body, _ := c.post("/v1/events", chatToken, "", "["+events[0]+","+events[1]+"]"); code != 200 || body["accepted"] != 0.0 || body["duplicates"] != 2.0 {
		t.Fatalf("retry: %d %v, want 0 accepted, 2 duplicates", code, body)
	}
	var s collectorapi.TouchpointSummary
	if code := c.get("/v1/summary?touchpoint=chat&window=1h", &s); code != 200 {
		t.Fatalf("summary: %d", code)
	}
	// 6 in the hour; 5 waits, all assessed, 3 compliant: 60%; resolved 2 of 3 known: 66.67%.
	if s.Interactions != 6 || s.Waits != 5 || s.AssessedWaits != 5 || s.CompliantWaits != 3 || s.Customers != 5 {
		t.Errorf("counts: %+v", s)
	}
	if s.WaitCompliance == nil || *s.WaitCompliance != 60 {
		t.Errorf("waitCompliance %v, want 60", s.WaitCompliance)
	}
	if s.FirstContactResolution == nil || fmt.Sprintf("%.2f", *s.FirstContactResolution) != "66.67" {
		t.Errorf("firstContactResolution %v, want 66.67", s.FirstContactResolution)
	}
	// p50 of 30,60,120,121,600 is 120, within the sketch's 1%.
	if s.WaitP50Seconds == nil || *s.WaitP50Seconds < 118.8 || *s.WaitP50Seconds > 121.2 {
		t.Errorf("p50 %v, want 120 ±1%%", s.WaitP50Seconds)
	}
	if s.LastEventTime == nil || *s.LastEventTime != at(time.Minute) {
		t.Errorf("lastEventTime %v, want %s", s.LastEventTime, at(time.Minute))
	}
	if s.WaitThresholdSeconds == nil || *s.WaitThresholdSeconds != 120 {
		t.Errorf("waitThresholdSeconds %v", s.WaitThresholdSeconds)
	}

	// NPS: 6 promoters, 2 passives, 2 detractors of 10: NPS 40.
	var answers []string
	for i, sc := range []int{10, 9, 9, 10, 9, 10, 7, 8, 0, 6} {
		answers = append(answers, fmt.Sprintf(`{"id":"r%d","survey":"nps","customer":"c%d","score":%d,"time":%q}`, i, i, sc, at(time.Hour)))
	}
	if code, body, _ := c.post("/v1/responses", npsToken, "", "["+strings.Join(answers, ",")+"]"); code != 200 || body["accepted"] != 10.0 {
		t.Fatalf("post answers: %d %v", code, body)
	}
	var n collectorapi.SurveySummary
	c.get("/v1/summary?survey=nps&window=1d", &n)
	if n.Responses != 10 || *n.Promoters != 6 || *n.Passives != 2 || *n.Detractors != 2 || n.Unhappy != 2 || *n.Score != 40 {
		t.Errorf("nps summary: %+v", n)
	}
	// var = (0.6+0.2-0.16)/10 = 0.064; margin = 1.959964*sqrt(0.064)*100 = 49.58.
	if fmt.Sprintf("%.2f %.2f", *n.ScoreLower, *n.ScoreUpper) != "-9.58 89.58" {
		t.Errorf("interval [%v, %v], want [-9.58, 89.58]", *n.ScoreLower, *n.ScoreUpper)
	}

	// Restart: the same numbers to the digit.
	before, _ := json.Marshal(s)
	c.stop()
	c2 := e.start(t, dir, testConfig(t, ""), clock)
	var s2 collectorapi.TouchpointSummary
	c2.get("/v1/summary?touchpoint=chat&window=1h", &s2)
	after, _ := json.Marshal(s2)
	if !bytes.Equal(before, after) {
		t.Errorf("after restart\n%s\nwant\n%s", after, before)
	}
	var n2 collectorapi.SurveySummary
	c2.get("/v1/summary?survey=nps&window=1d", &n2)
	if b1, b2 := mustJSON(n), mustJSON(n2); b1 != b2 {
		t.Errorf("survey after restart\n%s\nwant\n%s", b2, b1)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestBusinessHours: the phone line is open 09:00-17:00 Berlin on
// weekdays; a wait outside is counted as an interaction but not judged.
func TestBusinessHours(t *testing.T) { forEachEngine(t, testBusinessHours) }

func testBusinessHours(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	// testNow is Monday 12:00:30 UTC = 13:00:30 in Berlin (CET): open.
	// 05:00 UTC Monday = 06:00 Berlin: closed. Sunday noon: closed.
	body := fmt.Sprintf(`[{"id":"in","touchpoint":"phone","customer":"a","waitSeconds":300,"time":%q},
	{"id":"early","touchpoint":"phone","customer":"b","waitSeconds":300,"time":"2026-11-23T05:00:00Z"},
	{"id":"sunday","touchpoint":"phone","customer":"c","waitSeconds":30,"time":"2026-11-22T12:00:00Z"}]`, testNow.Add(-time.Minute).Format(time.RFC3339))
	if code, resp, _ := c.post("/v1/events", phoneToken, "", body); code != 200 {
		t.Fatalf("%d %v", code, resp)
	}
	var s collectorapi.TouchpointSummary
	c.get("/v1/summary?touchpoint=phone&window=2d", &s)
	if s.Interactions != 3 || s.Waits != 3 || s.AssessedWaits != 1 || s.CompliantWaits != 0 || *s.WaitCompliance != 0 {
		t.Errorf("business hours: %+v; want 3 interactions, 1 assessed wait, 0 compliant", s)
	}
}

func TestSummaryRequestErrors(t *testing.T) { forEachEngine(t, testSummaryRequestErrors) }

func testSummaryRequestErrors(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	for path, want := range map[string]int{
		"/v1/summary?touchpoint=chat&window=banana":                                        400,
		"/v1/summary?touchpoint=chat&window=30s":                                           400,
		"/v1/summary?touchpoint=chat&window=500d":                                          400,
		"/v1/summary?touchpoint=fax":                                                       400,
		"/v1/summary?survey=nps&touchpoint=chat":                                           400,
		"/v1/summary?survey=nps&end=noon":                                                  400,
		"/v1/summary?survey=nps&end=2999-01-01T00:00:00Z":                                  400,
		"/v1/summary?survey=nps&end=2000-01-01T00:00:00Z":                                  400,
		"/v1/summary?survey=nps&end=" + testNow.Add(-time.Hour).UTC().Format(time.RFC3339): 200,
		"/v1/summary?touchpoint=chat&touchpoint=phone":                                     200,
		"/v1/summary":                        200,
		"/v1/summary?survey=csat&window=28d": 200,
		"/v1/export?touchpoint=chat":         200,
		"/v1/export":                         400,
	} {
		if code := c.get(path, nil); code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
	}
	// A far end is refused before any work, naming the field.
	req, _ := http.NewRequest(http.MethodGet, c.url+"/v1/summary?end=9999-12-31T00:00:00Z", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var refused errorBody
	_ = json.NewDecoder(resp.Body).Decode(&refused)
	resp.Body.Close()
	if resp.StatusCode != 400 || refused.Field != "end" || !strings.Contains(refused.Reason, "in the future") {
		t.Errorf("a far future end: %d %+v", resp.StatusCode, refused)
	}
	var empty collectorapi.SurveySummary
	c.get("/v1/summary?survey=csat", &empty)
	if empty.Score != nil || empty.Responses != 0 || empty.Window != "28d" {
		t.Errorf("empty survey summary shows a score: %+v", empty)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for cfg, want := range map[string]string{
		"touchpoints: [{name: Chat}]":                          `touchpoints[0].name: "Chat" is not a DNS-1123 label`,
		"touchpoints: [{name: a}, {name: a}]":                  `touchpoints[1].name: "a" appears twice`,
		"touchpoints: [{name: a, waitThreshold: soon}]":        `touchpoints[0].waitThreshold`,
		"touchpoints: [{name: a, tokenSHA256: [abc]}]":         `touchpoints[0].tokenSHA256[0]: not a hex SHA-256`,
		"surveys: [{name: s, type: XYZ}]":                      `surveys[0].type: "XYZ" is not one of NPS, CSAT, CES`,
		"retention: forever":                                   `retention`,
		"revision: -1":                                         `revision: -1 is negative`,
		"touchpoints: [{name: a, businessHours: {hours: []}}]": `touchpoints[0].businessHours.hours: at least one`,
		"touchpoints: [{name: a, businessHours: {timeZone: Mars/Base, hours: [{days: [Monday], start: '09:00', end: '17:00'}]}}]": `timeZone: "Mars/Base"`,
		"touchpoints: [{name: a, businessHours: {hours: [{days: [Funday], start: '09:00', end: '17:00'}]}}]":                      `days[0]: "Funday"`,
		"touchpoints: [{name: a, businessHours: {hours: [{days: [Monday], start: '17:00', end: '09:00'}]}}]":                      `start 17:00 must be before end 09:00`,
		"touchpoint: []": `unknown field "touchpoint"`,
	} {
		_, err := parseConfig([]byte(cfg))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", cfg, err, want)
		}
	}
}

func TestMetricsCarryNoCustomerData(t *testing.T) { forEachEngine(t, testMetricsCarryNoCustomerData) }

func testMetricsCarryNoCustomerData(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	c.post("/v1/events", chatToken, "", `{"id":"secret-id","touchpoint":"chat","customer":"secret-customer","waitSeconds":30,"contact":{"email":"secret@example.com"}}`)
	c.post("/v1/responses", npsToken, "", `{"id":"r","survey":"nps","customer":"secret-customer","score":3,"comment":"secret comment"}`)
	resp, err := http.Get(c.metricsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, s := range []string{"secret", chatToken, npsToken} {
		if strings.Contains(text, s) {
			t.Errorf("/metrics contains %q", s)
		}
	}
	for _, s := range []string{
		`cxop_collector_interactions_total{touchpoint="chat"} 1`,
		`cxop_collector_waits_compliant_total{touchpoint="chat"} 1`,
		`cxop_collector_responses_total{category="detractor",survey="nps"} 1`,
		`cxop_collector_rejected_requests_total`,
	} {
		if !strings.Contains(text, s) && s != `cxop_collector_rejected_requests_total` {
			t.Errorf("/metrics lacks %s", s)
		}
	}
}

func TestConfigReload(t *testing.T) { forEachEngine(t, testConfigReload) }

func testConfigReload(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	dir := t.TempDir()
	path := dir + "/config.yaml"
	write := func(s string) {
		if err := writeFileAtomic(path, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	read := "readTokenSHA256: [" + collectorapi.HashToken(readToken) + "]\n"
	write(read + "touchpoints: [{name: chat, tokenSHA256: [" + collectorapi.HashToken(chatToken) + "]}]")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.srv.watchConfig(ctx, configFiles{config: path}, nil, nil, 50*time.Millisecond)
	waitFor(t, func() bool { return c.srv.cfg.Load().touchpoints["phone"] == nil })
	write(read + "touchpoints: [{name: web, tokenSHA256: [" + collectorapi.HashToken("web-token") + "]}]")
	waitFor(t, func() bool { return c.srv.cfg.Load().touchpoints["web"] != nil })
	if code, body, _ := c.post("/v1/events", "web-token", "", `{"id":"w","touchpoint":"web","customer":"c"}`); code != 200 {
		t.Errorf("new touchpoint after reload: %d %v", code, body)
	}
	write(read + "touchpoints: [{name: BAD}]")
	time.Sleep(200 * time.Millisecond)
	if c.srv.cfg.Load().touchpoints["web"] == nil {
		t.Error("a bad config replaced the good one")
	}
	// A config that drops the read token would open nothing (reads need
	// it), but it is refused like a bad one: the last good one stays.
	failures := func() float64 {
		var m dto.Metric
		_ = c.srv.metrics.reloads.WithLabelValues("failure").Write(&m)
		return m.GetCounter().GetValue()
	}
	before := failures()
	write("touchpoints: [{name: app, tokenSHA256: [" + collectorapi.HashToken("app-token") + "]}]")
	waitFor(t, func() bool { return failures() > before })
	if c.srv.cfg.Load().touchpoints["app"] != nil || len(c.srv.cfg.Load().readTokens) == 0 {
		t.Error("a config without a read token replaced the good one")
	}
}

// waitFor waits for f, polling, up to a minute: a survey engine that
// takes records from PostgreSQL's feed, or a database on a loaded
// machine, may take a while.
func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func TestBlockCacheSizeMustBeAPositiveSize(t *testing.T) {
	for _, size := range []string{"lots", "-1Mi", "0"} {
		err := Run(t.Context(), Options{DataDir: t.TempDir(), ConfigPath: "unused.yaml", LogLevel: "info", BlockCacheSize: size})
		want := fmt.Sprintf("--block-cache-size: %q is not a positive size such as 256Mi", size)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", size, err, want)
		}
	}
}

// Profiles are served on their own address only, never on the API port.
func TestProfilerListensApartFromTheAPI(t *testing.T) {
	forEachEngine(t, testProfilerListensApartFromTheAPI)
}

func testProfilerListensApartFromTheAPI(t *testing.T, e testEngine) {
	dir := t.TempDir()
	api, prof := freeLoopbackAddr(t), freeLoopbackAddr(t)
	cfgPath := filepath.Join(dir, "collector.yaml")
	writeFile(t, cfgPath, "touchpoints: [{name: chat}]\nreadTokenSHA256: ["+collectorapi.HashToken(readToken)+"]\n")
	o := Options{Listen: api, ProfilerAddress: prof, ConfigPath: cfgPath, LogLevel: "warn"}
	e.runOn(t, &o)
	runCollector(t, o)
	status := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, func() bool {
		return status("http://"+prof+"/debug/pprof/cmdline") == 200
	})
	if got := status("http://" + api + "/debug/pprof/cmdline"); got != 404 {
		t.Errorf("API port answers /debug/pprof/cmdline with %d, want 404", got)
	}
}

// TestMetricsStartAtZero: every touchpoint's and survey's series exists at 0
// before its first record, so that Prometheus sees the first batch as an
// increase (a series born at 100 shows none, and no burn-rate alert fires).
func TestMetricsStartAtZero(t *testing.T) { forEachEngine(t, testMetricsStartAtZero) }

func testMetricsStartAtZero(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	resp, err := http.Get(c.metricsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, s := range []string{
		`cxop_collector_interactions_total{touchpoint="chat"} 0`,
		`cxop_collector_waits_assessed_total{touchpoint="chat"} 0`,
		`cxop_collector_waits_compliant_total{touchpoint="chat"} 0`,
		`cxop_collector_resolutions_total{resolved="false",touchpoint="chat"} 0`,
		`cxop_collector_responses_total{category="promoter",survey="nps"} 0`,
		`cxop_collector_responses_total{category="detractor",survey="nps"} 0`,
		`cxop_collector_response_score_sum{survey="nps"} 0`,
	} {
		if !strings.Contains(string(b), s+"\n") {
			t.Errorf("/metrics lacks %s before any record", s)
		}
	}
}
