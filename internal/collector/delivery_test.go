package collector

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// A survey's summary tells the operator what the Survey's Delivering
// condition needs: since when its webhook's messages are parked and why,
// how many ran out of retries, and how many invitations a rate limit held
// back.
func TestSummaryReportsAFailingWebhookAndRateLimits(t *testing.T) {
	forEachEngine(t, testSummaryReportsAFailingWebhookAndRateLimits)
}

func testSummaryReportsAFailingWebhookAndRateLimits(t *testing.T, eng testEngine) {
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
	}))
	defer refusing.Close()
	cfg := testConfig(t, fmt.Sprintf(`  - name: mailed
    type: NPS
    tokenSHA256: [%s]
    trigger: {touchpoints: [chat]}
    webhook: {url: %q, key: mailer}
pageURL: https://cx.example.com
`, collectorapi.HashToken(npsToken), refusing.URL))
	sec, err := parseSecrets([]byte(fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {mailer: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))),
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32))))))
	if err != nil {
		t.Fatal(err)
	}
	c := eng.start(t, eng.fresh(t), cfg, func() time.Time { return testNow })
	now := testNow
	e := c.newSurveyEngine(webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second), engine.Options{
		Now: func() time.Time { return now }, RetryFor: time.Hour, TouchpointRate: 1,
	})
	c.srv.allowHTTPWebhooks = true // the receiver is an httptest server
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, sec)

	if code, body, _ := c.post("/v1/events", chatToken, "", `[{"id":"ev-0","touchpoint":"chat","customer":"a"},{"id":"ev-1","touchpoint":"chat","customer":"b"}]`); code != 200 {
		t.Fatalf("events: %d %v", code, body)
	}
	for range 12 { // two hours of 401s, every 10 minutes
		if err := e.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Minute)
	}
	inv, err := c.srv.invitations("mailed", testNow.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if inv == nil || inv.WebhookFailingSince == nil || !strings.Contains(inv.WebhookError, "401") {
		t.Fatalf("invitations = %+v; want the webhook failing with the 401", inv)
	}
	if since, err := time.Parse(time.RFC3339, *inv.WebhookFailingSince); err != nil || since.Before(testNow.Add(time.Hour)) || since.After(now) {
		t.Errorf("webhookFailingSince %s, want about an hour after the first attempt", *inv.WebhookFailingSince)
	}
	if inv.Invited != 1 || inv.Failed != 1 || inv.Sent != 0 || inv.Suppressed["rateLimit"] != 1 {
		t.Errorf("invitations = %+v; want 1 invited and parked, 1 suppressed by the rate limit", inv)
	}
}

// The receiver rotated its signing key first and refuses the old one with
// 401 for longer than the retry window; then the collector's secrets get
// the new key (applied as a reload of the secrets file applies it). The
// parked invitations go out at once, each once.
func TestRotatingTheWebhookKeyInTheSecretsDeliversParkedInvitations(t *testing.T) {
	forEachEngine(t, testRotatingTheWebhookKeyInTheSecretsDeliversParkedInvitations)
}

func testRotatingTheWebhookKeyInTheSecretsDeliversParkedInvitations(t *testing.T, eng testEngine) {
	newKey := []byte(strings.Repeat("n", 32))
	verifier, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(newKey))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	accepted := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(body, r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mu.Lock()
		accepted[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	cfg := testConfig(t, fmt.Sprintf(`  - name: mailed
    type: NPS
    tokenSHA256: [%s]
    trigger: {touchpoints: [chat]}
    webhook: {url: %q, key: mailer}
pageURL: https://cx.example.com
`, collectorapi.HashToken(npsToken), rcv.URL))
	secretsWith := func(key []byte) *secrets {
		sec, err := parseSecrets([]byte(fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {mailer: %s}\n",
			base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))), base64.StdEncoding.EncodeToString(key))))
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	c := eng.start(t, eng.fresh(t), cfg, func() time.Time { return testNow })
	now := testNow
	e := c.newSurveyEngine(webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second), engine.Options{
		Now: func() time.Time { return now }, RetryFor: time.Hour,
	})
	c.srv.allowHTTPWebhooks = true // the receiver is an httptest server
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, secretsWith([]byte(strings.Repeat("o", 32))))

	for i := range 3 {
		if code, body, _ := c.post("/v1/events", chatToken, "", fmt.Sprintf(`{"id":"ev-%d","touchpoint":"chat","customer":"c%d"}`, i, i)); code != 200 {
			t.Fatalf("event %d: %d %v", i, code, body)
		}
	}
	for range 12 {
		if err := e.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Minute)
	}
	if _, failing, _ := e.WebhookFailing("mailed"); !failing {
		t.Fatal("two hours of 401s did not park the invitations")
	}

	c.srv.applySurveys(cfg, secretsWith(newKey))
	if err := e.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 3 {
		t.Fatalf("%d invitations accepted after the rotation, want 3", len(accepted))
	}
	for id, n := range accepted {
		if n != 1 || !strings.HasPrefix(id, "msg_inv_") {
			t.Errorf("%s accepted %d times", id, n)
		}
	}
	inv, err := c.srv.invitations("mailed", testNow.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if inv.WebhookFailingSince != nil || inv.Sent != 3 || inv.Failed != 3 {
		t.Errorf("invitations = %+v; want 3 sent, 3 that had run out of retries, and no longer failing", inv)
	}
}
