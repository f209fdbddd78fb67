package collector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func TestSurveyInviteConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ survey, want string }{
		{`trigger: {touchpoints: []}`, "surveys[0].trigger.touchpoints: at least one touchpoint is required"},
		{`trigger: {touchpoints: [store]}`, `surveys[0].trigger.touchpoints[0]: unknown touchpoint "store"`},
		{`trigger: {touchpoints: [chat], delay: soon}`, `surveys[0].trigger.delay: "soon" is not a duration`},
		{`trigger: {touchpoints: [chat], samplePercent: 120}`, "surveys[0].trigger.samplePercent: 120 is not between 0 and 100"},
		{`throttle: monthly`, `surveys[0].throttle: "monthly" is not a duration`},
		{`webhook: {url: "ftp://x", key: k}`, `surveys[0].webhook.url: "ftp://x" is not an http(s) URL`},
		{`webhook: {url: "https://x.example"}`, "surveys[0].webhook.key: names the signing key in the secrets file and is required"},
	} {
		_, err := parseConfig([]byte("touchpoints: [{name: chat}]\nsurveys:\n  - name: nps\n    type: NPS\n    " + tc.survey + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.survey, err, tc.want)
		}
	}
	if _, err := parseConfig([]byte("pageURL: cx.example.com\n")); err == nil || !strings.Contains(err.Error(), "pageURL:") {
		t.Errorf("a pageURL without scheme: %v", err)
	}
}

func TestSecretsErrorsNeverQuoteKeys(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("tooshort"))
	for _, tc := range []struct{ file, want string }{
		{"linkKeys: {current: " + short + "}", "linkKeys.current: 8 bytes, need at least 32"},
		{"linkKeys: {current: 'not base64 SECRETVALUE'}", "linkKeys.current: not base64"},
		{"linkKeys: [SECRETVALUE]", "parse: not YAML"},
		{"linkKeys: {current: " + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "}\nwebhookKeys: {hook: " + short + "}", "webhookKeys.hook: the signing key has 8 bytes"},
	} {
		_, err := parseSecrets([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "SECRETVALUE") || strings.Contains(err.Error(), short) {
			t.Errorf("%s: error %v, want %q and no key material", tc.file, err, tc.want)
		}
	}
}

// TestCollectorInvitesAfterAnInteraction runs the collector command with a
// transactional survey: one interaction, one signed invitation at the
// receiver, and the counts in the survey's summary.
func TestCollectorInvitesAfterAnInteraction(t *testing.T) {
	hookKey := []byte("0123456789abcdef0123456789abcdef")
	verifier, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(hookKey))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bodies []map[string]any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(data, r.Header); err != nil {
			t.Errorf("invitation signature: %v", err)
		}
		var b map[string]any
		_ = json.Unmarshal(data, &b)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	defer rcv.Close()

	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfgPath, secPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "secrets.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`
pageURL: http://%s
readTokenSHA256: [%s]
touchpoints:
  - name: chat
    tokenSHA256: [%s]
surveys:
  - name: nps
    type: NPS
    question: How likely are you to recommend us?
    trigger: {touchpoints: [chat]}
    throttle: 30d
    webhook: {url: %q, key: nps-delivery}
`, addr, HashToken(readToken), HashToken(chatToken), rcv.URL))
	writeFile(t, secPath, fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {nps-delivery: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString(hookKey)))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Listen: addr, DataDir: filepath.Join(dir, "data"), ConfigPath: cfgPath, SecretsPath: secPath,
			WebhookAllowLoopback: true, LogLevel: "error", ConfigPoll: 100 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	base := "http://" + addr
	waitFor(t, func() bool {
		resp, err := http.Get(base + "/readyz")
		return err == nil && resp.Body.Close() == nil && resp.StatusCode == 200
	})

	event := fmt.Sprintf(`[{"id":"e1","touchpoint":"chat","customer":"c-1","time":%q,"contact":{"email":"c1@example.com"}},
		{"id":"e2","touchpoint":"chat","customer":"c-1","time":%q}]`, time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(event))
	req.Header.Set("Authorization", "Bearer "+chatToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post events: %v %v", resp, err)
	}
	resp.Body.Close()

	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) >= 1 })
	mu.Lock()
	got := bodies[0]
	mu.Unlock()
	if got["survey"] != "nps" || got["customer"] != "c-1" || !strings.HasPrefix(got["link"].(string), base+"/s/") ||
		got["contact"].(map[string]any)["email"] != "c1@example.com" || got["question"] != "How likely are you to recommend us?" {
		t.Errorf("invitation = %v", got)
	}

	var sum SurveySummary
	waitFor(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/summary?survey=nps&window=1d", nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&sum) == nil && sum.Invitations != nil && sum.Invitations.Sent == 1
	})
	inv := sum.Invitations
	// The second interaction of the same customer is held back by the
	// 30-day throttle.
	if inv.Invited != 1 || inv.Suppressed["throttle"] != 1 || inv.ResponseRate == nil || *inv.ResponseRate != 0 {
		t.Errorf("invitations = %+v", inv)
	}
	mu.Lock()
	if len(bodies) != 1 {
		t.Errorf("%d invitations delivered, want 1", len(bodies))
	}
	mu.Unlock()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
