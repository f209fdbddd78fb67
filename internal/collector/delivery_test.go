package collector

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// A survey's summary tells the operator what the Survey's Delivering
// condition needs: since when its webhook's messages are parked and why,
// how many ran out of retries, and how many invitations a rate limit held
// back.
func TestSummaryReportsAFailingWebhookAndRateLimits(t *testing.T) {
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
`, HashToken(npsToken), refusing.URL))
	sec, err := parseSecrets([]byte(fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {mailer: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))),
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32))))))
	if err != nil {
		t.Fatal(err)
	}
	c := startCollector(t, t.TempDir(), cfg)
	now := testNow
	e, err := engine.New(c.st.DB(), c.st, webhook.NewClient(&webhook.Guard{AllowLoopback: true}, 5*time.Second), engine.Options{
		Now: func() time.Time { return now }, RetryFor: time.Hour, TouchpointRate: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, sec)

	var records []store.Record
	for i, customer := range []string{"a", "b"} {
		id := fmt.Sprintf("ev-%d", i)
		records = append(records, store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id,
			JSON:  []byte(fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"time":%q}`, id, customer, now.Format(time.RFC3339Nano))),
			Event: rollup.Event{Time: now.UnixNano(), CustomerHash: uint64(i + 1)}})
	}
	if _, err := c.st.Submit(context.Background(), records); err != nil {
		t.Fatal(err)
	}
	for range 12 { // two hours of 401s, every 10 minutes
		if err := e.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		now = now.Add(10 * time.Minute)
	}
	out := &SurveySummary{Survey: "mailed"}
	if err := c.srv.addInvitations(out, testNow.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	inv := out.Invitations
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
