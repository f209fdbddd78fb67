package collector

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// claimCounter is the survey engine's storage with its lock claims
// counted: every engine step claims the lock once and gives it up once
// (on PostgreSQL each is an UPDATE of the one lease row).
type claimCounter struct {
	engine.KV
	claims, releases atomic.Int64
}

func (k *claimCounter) Lock(ctx context.Context, wait bool) (bool, error) {
	k.claims.Add(1)
	return k.KV.Lock(ctx, wait)
}

func (k *claimCounter) Unlock() {
	k.KV.Unlock()
	k.releases.Add(1)
}

// TestIngestWakesTheSurveyEngineOnlyForRecordsItReads: an ingest or a
// page answer wakes the survey engine only when it newly stored a record
// the engine reads (one with a feed entry: an interaction some survey's
// trigger names, an answer to a survey with a closed loop). Records no
// survey reads, and duplicates, wake nothing, so that a collector whose
// surveys want none of its traffic does not step its engine (on
// PostgreSQL, claim the shared lease) once per request.
//
// The engine's Interval is an hour, so only a wake-up makes it step
// within the test; each wait for "no step" is followed by a request that
// must wake it, which shows a wake-up would have been seen.
func TestIngestWakesTheSurveyEngineOnlyForRecordsItReads(t *testing.T) {
	forEachEngine(t, testIngestWakesTheSurveyEngineOnlyForRecordsItReads)
}

func testIngestWakesTheSurveyEngineOnlyForRecordsItReads(t *testing.T, e testEngine) {
	cfg := mustParse(t, fmt.Sprintf(`
pageURL: https://cx.example.com
touchpoints:
  - name: chat
    tokenSHA256: [%s]
  - name: phone
    tokenSHA256: [%s]
surveys:
  - name: loop
    type: NPS
    tokenSHA256: [%s]
    trigger: {touchpoints: [chat]}
    webhook: {url: "https://hooks.example.com/loop", key: hook}
    detractorWebhook: {url: "https://hooks.example.com/detractors", key: hook}
  - name: plain
    type: CSAT
    tokenSHA256: [%s, %s]
    trigger: {touchpoints: [chat]}
    webhook: {url: "https://hooks.example.com/plain", key: hook}
`, collectorapi.HashToken(chatToken), collectorapi.HashToken(phoneToken), collectorapi.HashToken(npsToken),
		collectorapi.HashToken(csatToken), collectorapi.HashToken(npsToken)))
	sec, err := parseSecrets([]byte(fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("W", 32))))))
	if err != nil {
		t.Fatal(err)
	}
	c := e.start(t, e.fresh(t), cfg, time.Now)
	kv := &claimCounter{}
	var src engine.Source
	if c.pg != nil {
		kv.KV = c.pg.EngineKV()
	} else {
		kv.KV, src = c.st.EngineKV(), c.st
	}
	sender := &recordingSender{}
	eng, err := engine.NewOn(kv, src, sender, engine.Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c.srv.surveys.Store(eng)
	c.srv.applySurveys(cfg, sec)
	// NewOn claims the lock once itself, to index the closed loop.
	steps := kv.claims.Load()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// idle waits until the engine made at least n steps and is between
	// steps, and returns how many it made.
	idle := func(what string, n int64) int64 {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			claims, releases := kv.claims.Load(), kv.releases.Load()
			if releases >= n && claims == releases {
				return claims
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the engine did not step (%d lock claims, %d releases, want %d)", what, claims, releases, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// quiet checks that the engine, after n lock claims, does not step
	// for a while: an engine woken steps at once.
	quiet := func(what string, n int64) {
		t.Helper()
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if got := kv.claims.Load(); got != n {
				t.Fatalf("%s woke the survey engine: %d lock claims, %d before", what, got, n)
			}
		}
	}
	post := func(path, token, body string, accepted, duplicates float64) {
		t.Helper()
		code, got, _ := c.post(path, token, "", body)
		if code != 200 || got["accepted"] != accepted || got["duplicates"] != duplicates {
			t.Fatalf("POST %s %s: %d %v, want 200 with %v accepted, %v duplicates", path, body, code, got, accepted, duplicates)
		}
	}
	at := time.Now().UTC().Format(time.RFC3339)

	// Run's first step, and the one the config's Notify asks for.
	steps = idle("start", steps+2)
	quiet("nothing", steps)

	post("/v1/events", phoneToken, fmt.Sprintf(`[{"id":"p-1","touchpoint":"phone","customer":"c-1","time":%q},{"id":"p-2","touchpoint":"phone","customer":"c-2","time":%q}]`, at, at), 2, 0)
	post("/v1/responses", csatToken, fmt.Sprintf(`{"id":"r-plain-1","survey":"plain","customer":"c-1","score":2,"time":%q}`, at), 1, 0)
	quiet("interactions no trigger names and an answer to a survey without a closed loop", steps)

	chat := fmt.Sprintf(`{"id":"e-1","touchpoint":"chat","customer":"c-1","time":%q}`, at)
	post("/v1/events", chatToken, chat, 1, 0)
	steps = idle("an interaction a trigger names", steps+1)
	post("/v1/events", chatToken, chat, 0, 1)
	quiet("a duplicate interaction a trigger names", steps)

	loopAnswer := fmt.Sprintf(`{"id":"r-loop-1","survey":"loop","customer":"c-1","score":3,"time":%q}`, at)
	post("/v1/responses", npsToken, loopAnswer, 1, 0)
	steps = idle("an answer to a survey with a closed loop", steps+1)
	post("/v1/responses", npsToken, fmt.Sprintf(`[%s,{"id":"r-plain-2","survey":"plain","customer":"c-2","score":4,"time":%q}]`, loopAnswer, at), 1, 1)
	quiet("a duplicate answer the closed loop reads beside a new one to a survey without", steps)

	// The hosted page: the interaction e-1 invited c-1 to both surveys.
	links := map[string]string{}
	waitFor(t, func() bool {
		for _, b := range sender.ofType("survey.invitation") {
			links[b["survey"].(string)] = b["link"].(string)
		}
		return len(links) == 2
	})
	answer := func(survey string) {
		t.Helper()
		u, err := url.Parse(links[survey])
		if err != nil {
			t.Fatal(err)
		}
		page := getPage(t, c.url+u.Path)
		form := formTokenRE.FindStringSubmatch(page.body)
		if page.status != 200 || form == nil {
			t.Fatalf("GET the %s page: %d\n%s", survey, page.status, page.body)
		}
		if got := postPage(t, c.url+u.Path, url.Values{"form": {form[1]}, "score": {"1"}}, nil); got.status != 200 || !strings.Contains(got.body, "Thank you for your answer.") {
			t.Fatalf("answer %s on the page: %d\n%s", survey, got.status, got.body)
		}
	}
	answer("plain")
	quiet("a page answer to a survey without a closed loop", steps)
	answer("loop")
	idle("a page answer to a survey with a closed loop", steps+1)
}
