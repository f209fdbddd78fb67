package collector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
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

// surveyCollector runs the collector command on an engine with one
// transactional NPS survey whose invitations go to a receiver that verifies
// every signature.
type surveyCollector struct {
	base     string
	linkKey  []byte
	mu       sync.Mutex
	received []map[string]any
}

// invitations and detractors return what the receiver got of each type.
func (c *surveyCollector) invitations() []map[string]any { return c.ofType("survey.invitation") }

func (c *surveyCollector) detractors() []map[string]any { return c.ofType("survey.detractor") }

func (c *surveyCollector) ofType(typ string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, b := range c.received {
		if b["type"] == typ {
			out = append(out, b)
		}
	}
	return out
}

func startSurveyCollector(t *testing.T, e testEngine) *surveyCollector {
	t.Helper()
	c := &surveyCollector{linkKey: []byte(strings.Repeat("L", 32))}
	hookKey := []byte("0123456789abcdef0123456789abcdef")
	verifier, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(hookKey))
	if err != nil {
		t.Fatal(err)
	}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		if err := verifier.Verify(data, r.Header); err != nil {
			t.Errorf("invitation signature: %v", err)
		}
		var b map[string]any
		_ = json.Unmarshal(data, &b)
		c.mu.Lock()
		c.received = append(c.received, b)
		c.mu.Unlock()
	}))
	t.Cleanup(rcv.Close)

	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	c.base = "http://" + addr
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
    followUpQuestion: What is the main reason for your score?
    trigger: {touchpoints: [chat]}
    throttle: 30d
    tokenSHA256: [%s]
    webhook: {url: %q, key: nps-delivery}
    detractorWebhook: {url: %q, key: nps-delivery}
  - name: csat
    type: CSAT
    tokenSHA256: [%s]
`, addr, collectorapi.HashToken(readToken), collectorapi.HashToken(chatToken), collectorapi.HashToken(npsToken), rcv.URL, rcv.URL+"/detractors", collectorapi.HashToken(csatToken)))
	writeFile(t, secPath, fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {nps-delivery: %s}\n",
		base64.StdEncoding.EncodeToString(c.linkKey), base64.StdEncoding.EncodeToString(hookKey)))

	o := Options{Listen: addr, ConfigPath: cfgPath, SecretsPath: secPath,
		WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "warn", ConfigPoll: 100 * time.Millisecond}
	e.runOn(t, &o)
	runCollector(t, o)
	return c
}

func (c *surveyCollector) interact(t *testing.T, records string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.base+"/v1/events", strings.NewReader(records))
	req.Header.Set("Authorization", "Bearer "+chatToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post events: %v %v", resp, err)
	}
	resp.Body.Close()
}

func (c *surveyCollector) summary(t *testing.T, survey string) collectorapi.SurveySummary {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base+"/v1/summary?window=1d&survey="+survey, nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum collectorapi.SurveySummary
	if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestCollectorInvitesAfterAnInteraction: one interaction, one signed
// invitation at the receiver, and the counts in the survey's summary.
func TestCollectorInvitesAfterAnInteraction(t *testing.T) {
	forEachEngine(t, testCollectorInvitesAfterAnInteraction)
}

func testCollectorInvitesAfterAnInteraction(t *testing.T, e testEngine) {
	c := startSurveyCollector(t, e)
	now := time.Now().UTC().Format(time.RFC3339)
	c.interact(t, fmt.Sprintf(`[{"id":"e1","touchpoint":"chat","customer":"c-1","time":%q,"contact":{"email":"c1@example.com","phone":"+49 30 1234"}},
		{"id":"e2","touchpoint":"chat","customer":"c-1","time":%q}]`, now, now))

	waitFor(t, func() bool { return len(c.invitations()) >= 1 })
	got := c.invitations()[0]
	// The contact, stored apart from the interaction's record, reaches
	// the invitation.
	contact, _ := got["contact"].(map[string]any)
	if got["survey"] != "nps" || got["customer"] != "c-1" || !strings.HasPrefix(got["link"].(string), c.base+"/s/") ||
		contact["email"] != "c1@example.com" || contact["phone"] != "+49 30 1234" || got["question"] != "How likely are you to recommend us?" {
		t.Errorf("invitation = %v", got)
	}
	// The interaction's record, as exported, has no contact.
	req, _ := http.NewRequest(http.MethodGet, c.base+"/v1/export?touchpoint=chat", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	exported, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(exported), `"id":"e1"`) || strings.Contains(string(exported), "contact") || strings.Contains(string(exported), "c1@example.com") {
		t.Errorf("export: %d %s; want the records without their contact", resp.StatusCode, exported)
	}
	waitFor(t, func() bool { s := c.summary(t, "nps"); return s.Invitations != nil && s.Invitations.Sent == 1 })
	inv := c.summary(t, "nps").Invitations
	// The second interaction of the same customer is held back by the
	// 30-day throttle.
	if inv.Invited != 1 || inv.Suppressed["throttle"] != 1 || inv.ResponseRate == nil || *inv.ResponseRate != 0 {
		t.Errorf("invitations = %+v", inv)
	}
	if n := len(c.invitations()); n != 1 {
		t.Errorf("%d invitations delivered, want 1", n)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseAudience(t *testing.T) {
	members, err := collectorapi.ParseAudience([]byte("# quarterly panel\nc-1\nc-2, ana@example.com\n\nc-3,bo@example.com,+33123456789\n"))
	if err != nil || len(members) != 3 || members[0].Contact != nil || members[1].Contact.Email != "ana@example.com" || members[2].Contact.Phone != "+33123456789" {
		t.Errorf("lines: %+v, %v", members, err)
	}
	members, err = collectorapi.ParseAudience([]byte(`[{"customer":"c-9","contact":{"email":"x@example.com"}}]`))
	if err != nil || len(members) != 1 || members[0].Contact.Email != "x@example.com" {
		t.Errorf("JSON: %+v, %v", members, err)
	}
	for data, want := range map[string]string{
		"c-1,a,b,c\n":              "audience line 1: want customer-id[,email[,phone]]",
		`[{"customer":""}]`:        "audience[0].customer: is required",
		`[{"customer":"c","x":1}]`: "audience JSON",
	} {
		if _, err := collectorapi.ParseAudience([]byte(data)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", data, err, want)
		}
	}
}

func TestWaveEndpointAndCommand(t *testing.T) { forEachEngine(t, testWaveEndpointAndCommand) }

func testWaveEndpointAndCommand(t *testing.T, e testEngine) {
	c := startSurveyCollector(t, e)
	var audience []string
	for i := range 12 {
		audience = append(audience, fmt.Sprintf("w-%d,w%d@example.com", i, i))
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "audience"), strings.Join(audience, "\n"))
	writeFile(t, filepath.Join(dir, "token"), npsToken+"\n")
	run := func() string {
		cmd := NewWaveCommand()
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"--collector", c.base, "--survey", "nps", "--token-file", filepath.Join(dir, "token"),
			"--audience", filepath.Join(dir, "audience"), "--wave", "nps-wave-29390340"})
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if out := run(); !strings.Contains(out, "12 customers handed to the collector, 0 already taken") {
		t.Errorf("first run: %q", out)
	}
	if out := run(); !strings.Contains(out, "0 customers handed to the collector, 12 already taken") {
		t.Errorf("second run: %q", out)
	}
	waitFor(t, func() bool { return len(c.invitations()) == 12 })
	if s := c.summary(t, "nps").Invitations; s.Invited != 12 {
		t.Errorf("invited %d, want 12", s.Invited)
	}
	for _, tc := range []struct {
		token, body string
		want        int
		field       string // the field the 400 names, when it names one
	}{
		{"", `{"survey":"nps","wave":"x","audience":[]}`, 401, ""},
		{csatToken, `{"survey":"nps","wave":"x","audience":[]}`, 403, "survey"},
		{npsToken, `{"survey":"nps","audience":[]}`, 400, "wave"},
		{npsToken, `{"survey":"nps","wave":"x","audience":[{"customer":""}]}`, 400, "audience[0].customer"},
		{npsToken, `{"survey":"nps","wave":"x","members":[]}`, 400, ""},
		// Contact fields follow the ingest endpoints' rules.
		{npsToken, `{"survey":"nps","wave":"y","audience":[{"customer":"a"},{"customer":"b","contact":{"email":"not-an-address"}}]}`, 400, "audience[1].contact.email"},
		{npsToken, `{"survey":"nps","wave":"y","audience":[{"customer":"a","contact":{"phone":"+49 30 1234\n"}}]}`, 400, "audience[0].contact.phone"},
		{npsToken, `{"survey":"nps","wave":"y","audience":[{"customer":"a\u0007"}]}`, 400, "audience[0].customer"},
		// One object, nothing after it.
		{npsToken, `{"survey":"nps","wave":"y","audience":[]} {"survey":"nps","wave":"z","audience":[]}`, 400, ""},
		{npsToken, `{"survey":"nps","wave":"y","audience":[]}]`, 400, ""},
		// A key given twice, at any depth, is refused by its path.
		{npsToken, `{"survey":"nps","wave":"y","wave":"z","audience":[]}`, 400, "wave"},
		// Invalid UTF-8 is refused, as on the ingest endpoints, not
		// replaced by U+FFFD into another customer's id.
		{npsToken, "{\"survey\":\"nps\",\"wave\":\"y\",\"audience\":[{\"customer\":\"a\xff\"}]}", 400, ""},
		{npsToken, `{"survey":"nps","wave":"y","audience":[{"customer":"a"},{"customer":"b","contact":{"email":"b@x","Email":"c@x"}}]}`, 400, "audience[1].contact.Email"},
		// A phone alone is a contact.
		{npsToken, `{"survey":"nps","wave":"phone-only","audience":[{"customer":"p","contact":{"phone":"+49 30 1234"}}]}` + "\n", 200, ""},
	} {
		req, _ := http.NewRequest(http.MethodPost, c.base+"/v1/waves", strings.NewReader(tc.body))
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var answer errorBody
		_ = json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		if resp.StatusCode != tc.want || answer.Field != tc.field {
			t.Errorf("%s with token %q: %d naming %q (%s), want %d naming %q", tc.body, tc.token, resp.StatusCode, answer.Field, answer.Error, tc.want, tc.field)
		}
	}
	// Nothing of the refused requests was stored: wave "y" is new.
	req, _ := http.NewRequest(http.MethodPost, c.base+"/v1/waves", strings.NewReader(`{"survey":"nps","wave":"y","audience":[{"customer":"y1"}]}`))
	req.Header.Set("Authorization", "Bearer "+npsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ Duplicate *bool }
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != 200 || answer.Duplicate == nil || *answer.Duplicate {
		t.Errorf("wave y after refused requests: %d duplicate=%v, want 200 and a new wave", resp.StatusCode, answer.Duplicate)
	}
}

// freeLoopbackAddr returns a loopback address with a free port, for a
// collector started by the test. The port is free when it returns, but
// Run binds it a moment later: on 127.0.0.1 an outgoing connection of a
// parallel test could take it as its source port in between. A random
// address of 127.0.0.0/8 (all loopback on Linux), which nothing else binds
// or connects from, closes that window.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ip := net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
