package collector

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// startEngineWithClock starts a collector on engine e with a clock the
// test moves.
func startEngineWithClock(t *testing.T, e testEngine, clock *atomic.Int64) *testCollector {
	t.Helper()
	return e.start(t, e.fresh(t), testConfig(t, ""), func() time.Time { return time.Unix(0, clock.Load()).UTC() })
}

// The same id with another payload is 422 naming the record and the id;
// the stored record stands and nothing of the refused request is stored.
// A retry of what the client sent, even without a time (which the
// collector fills in differently the second time), is a plain duplicate.
func TestReusedIDWithAnotherPayloadIs422(t *testing.T) {
	forEachEngine(t, testReusedIDWithAnotherPayloadIs422)
}

func testReusedIDWithAnotherPayloadIs422(t *testing.T, e testEngine) {
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	c := startEngineWithClock(t, e, &clock)
	first := `{"id":"a","touchpoint":"chat","customer":"c1","waitSeconds":30,"contact":{"email":"x@example.com"}}`
	expect := func(name, path, token, body string, code int, accepted, duplicates float64) map[string]any {
		t.Helper()
		got, answer, _ := c.post(path, token, "", body)
		if got != code {
			t.Fatalf("%s: %d %v, want %d", name, got, answer, code)
		}
		if code == 200 && (answer["accepted"] != accepted || answer["duplicates"] != duplicates) {
			t.Errorf("%s: %v, want %v accepted and %v duplicates", name, answer, accepted, duplicates)
		}
		return answer
	}
	expect("first", "/v1/events", chatToken, first, 200, 1, 0)
	clock.Add(int64(time.Minute))
	for _, retry := range []string{
		first,
		// Key order, spacing and the spelling of a number are not the payload.
		`{ "waitSeconds": 3e1, "contact": {"email": "x@example.com"}, "customer": "c1", "touchpoint": "chat", "id": "a" }`,
	} {
		expect("retry "+retry, "/v1/events", chatToken, retry, 200, 0, 1)
	}
	for _, tc := range []struct{ name, body string }{
		{"another wait", `{"id":"a","touchpoint":"chat","customer":"c1","waitSeconds":31,"contact":{"email":"x@example.com"}}`},
		{"another contact", `{"id":"a","touchpoint":"chat","customer":"c1","waitSeconds":30}`},
		// The contact is stored apart from the record, yet is part of the payload.
		{"another e-mail", `{"id":"a","touchpoint":"chat","customer":"c1","waitSeconds":30,"contact":{"email":"y@example.com"}}`},
		{"a time where there was none", `{"id":"a","touchpoint":"chat","customer":"c1","waitSeconds":30,"contact":{"email":"x@example.com"},"time":"` + testNow.Format(time.RFC3339) + `"}`},
		{"second record of an array", `[{"id":"b","touchpoint":"chat","customer":"c2"},{"id":"a","touchpoint":"chat","customer":"c9"}]`},
		{"second line of NDJSON", "{\"id\":\"b\",\"touchpoint\":\"chat\",\"customer\":\"c2\"}\n{\"id\":\"a\",\"touchpoint\":\"chat\",\"customer\":\"c9\"}"},
	} {
		answer := expect(tc.name, "/v1/events", chatToken, tc.body, 422, 0, 0)
		index := 0.0
		if strings.Contains(tc.name, "second") {
			index = 1
		}
		if answer["field"] != "id" || answer["index"] != index || !strings.Contains(fmt.Sprint(answer["error"]), `id "a" is already stored with a different payload`) {
			t.Errorf("%s: %v, want index %v, field id and the id named", tc.name, answer, index)
		}
	}
	// b came only in refused requests: it is new.
	expect("b after the refusals", "/v1/events", chatToken, `{"id":"b","touchpoint":"chat","customer":"c2"}`, 200, 1, 0)
	var sum collectorapi.TouchpointSummary
	c.get("/v1/summary?touchpoint=chat&window=1d", &sum)
	if sum.Interactions != 2 || sum.Waits != 1 || sum.CompliantWaits != 1 {
		t.Errorf("summary %+v, want 2 interactions and the first record's one compliant wait", sum)
	}

	// Answers: the first score stands.
	expect("answer", "/v1/responses", npsToken, `{"id":"r","survey":"nps","customer":"c1","score":9}`, 200, 1, 0)
	clock.Add(int64(time.Minute))
	expect("answer retried", "/v1/responses", npsToken, `{"id":"r","survey":"nps","customer":"c1","score":9}`, 200, 0, 1)
	answer := expect("answer changed", "/v1/responses", npsToken, `{"id":"r","survey":"nps","customer":"c1","score":0}`, 422, 0, 0)
	if answer["field"] != "id" || !strings.Contains(fmt.Sprint(answer["error"]), `"r"`) {
		t.Errorf("changed answer: %v", answer)
	}
	var nps collectorapi.SurveySummary
	c.get("/v1/summary?survey=nps&window=1d", &nps)
	if nps.Responses != 1 || nps.Distribution[9] != 1 {
		t.Errorf("nps summary %+v, want the one answer of 9", nps)
	}
}
