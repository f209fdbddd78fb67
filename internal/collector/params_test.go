package collector

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

func (c *testCollector) getAnswer(path string) (int, errorBody, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+readToken) // for a config that sets a read token
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e errorBody
	if resp.StatusCode != 200 {
		_ = json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e, b
}

// Summary and export parameters are checked against now and the retention
// before any work, and a bad one is 400 naming the field and the reason.
func TestSummaryAndExportParametersAreCheckedFirst(t *testing.T) {
	forEachEngine(t, testSummaryAndExportParametersAreCheckedFirst)
}

func testSummaryAndExportParametersAreCheckedFirst(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	if code, _, _ := c.post("/v1/events", chatToken, "", `{"id":"a","touchpoint":"chat","customer":"c","time":"`+testNow.Add(-time.Hour).Format(time.RFC3339)+`"}`); code != 200 {
		t.Fatal(code)
	}
	hourAgo := testNow.Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		path, field, reason string
	}{
		{"/v1/summary?touchpoint=chat&window=400d&end=" + hourAgo, "window", "starts before the retention of 400d"},
		{"/v1/summary?touchpoint=chat&window=399d&end=" + testNow.Add(-2*24*time.Hour).UTC().Format(time.RFC3339), "window", "starts before the retention"},
		{"/v1/summary?touchpoint=chat&window=401d", "window", "longer than the retention of 400d"},
		{"/v1/summary?touchpoint=chat&window=300y", "window", "not a duration"},
		{"/v1/summary?touchpoint=chat&window=-1d", "window", "not a duration"},
		{"/v1/summary?touchpoint=chat&window=0", "window", "at least 1m"},
		{"/v1/summary?touchpoint=chat&window=1d&window=2d", "window", "given more than once"},
		{"/v1/summary?touchpoint=chat&end=" + hourAgo + "&end=" + hourAgo, "end", "given more than once"},
		{"/v1/summary?touchpoint=chat&end=" + url.QueryEscape(testNow.Add(time.Hour).Format(time.RFC3339)), "end", "in the future"},
		{"/v1/summary?touchpoint=chat&end=2020-01-01T00:00:00Z", "end", "before the retention"},
		{"/v1/summary?touchpoint=chat&windw=1d", "windw", "unknown parameter"},
		{"/v1/summary?survey=nps&survey=csat", "survey", "given more than once"},
		{"/v1/export?touchpoint=fax", "touchpoint", `unknown touchpoint "fax"`},
		{"/v1/export?survey=fax", "survey", `unknown survey "fax"`},
		{"/v1/export?touchpoint=chat&touchpoint=phone", "touchpoint", "one touchpoint at a time"},
		{"/v1/export?touchpoint=chat&since=2026-01-01", "since", "unknown parameter"},
	} {
		code, e, body := c.getAnswer(tc.path)
		if code != 400 || e.Field != tc.field || !strings.Contains(e.Reason, tc.reason) || !strings.Contains(e.Error, tc.field+": ") {
			t.Errorf("GET %s: %d %s, want 400 naming %s and saying %q", tc.path, code, body, tc.field, tc.reason)
		}
	}
	for _, path := range []string{
		"/v1/summary?touchpoint=chat&window=400d",
		"/v1/summary?touchpoint=chat&window=1d&end=" + hourAgo,
		"/v1/export?touchpoint=chat",
	} {
		if code, _, body := c.getAnswer(path); code != 200 {
			t.Errorf("GET %s: %d %s, want 200", path, code, body)
		}
	}
	// A touchpoint named many times is read (and counted) once.
	var sum collectorapi.TouchpointSummary
	if code := c.get("/v1/summary?window=1d"+strings.Repeat("&touchpoint=chat", 1000), &sum); code != 200 || sum.Interactions != 1 || len(sum.Touchpoints) != 1 {
		t.Errorf("chat named 1,000 times: %d, %d interactions over %v, want 1 over [chat]", code, sum.Interactions, sum.Touchpoints)
	}
}
