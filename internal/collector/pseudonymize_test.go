package collector

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/pseudonym"
	"github.com/cxop-dev/cxop/internal/survey/sample"
)

// testCustomerKey is the customerIDKey of these tests. pseudonymOfC1 is
// the pseudonym of "c-1" under it, computed apart from the code:
// printf %s c-1 | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
const (
	testCustomerKey = "0123456789abcdef0123456789abcdef"
	pseudonymOfC1   = "d7ccb1ef4822e9a15dd5f66434ba19ee661429da03335062c5f0b861e504e518"
)

// tokenSHA256 is a token as the config holds it (hex SHA-256).
func tokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func testPseudonym(t testing.TB, customer string) string {
	t.Helper()
	k, err := pseudonym.NewKey([]byte(testCustomerKey))
	if err != nil {
		t.Fatal(err)
	}
	return k.ID(customer)
}

// pseudonymSecrets is a secrets file with testCustomerKey.
func pseudonymSecrets(extra string) string {
	return fmt.Sprintf("linkKeys: {current: %s}\ncustomerIDKey: %s\n%s", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))),
		base64.StdEncoding.EncodeToString([]byte(testCustomerKey)), extra)
}

// startPseudonymCollector runs the collector command on e with
// pseudonymizeCustomers on, one transactional NPS survey (sampling at
// samplePercent, a 30-day throttle) whose invitations and detractors go to
// a receiver, and a CSAT survey.
func startPseudonymCollector(t *testing.T, e testEngine, samplePercent int) *surveyCollector {
	t.Helper()
	c := &surveyCollector{linkKey: []byte(strings.Repeat("L", 32))}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
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
pseudonymizeCustomers: true
pageURL: http://%s
readTokenSHA256: [%s]
customerDataTokenSHA256: [%s]
touchpoints:
  - name: chat
    tokenSHA256: [%s]
surveys:
  - name: nps
    type: NPS
    followUpQuestion: Why?
    trigger: {touchpoints: [chat], samplePercent: %d}
    throttle: 30d
    tokenSHA256: [%s]
    webhook: {url: %q, key: hook}
    detractorWebhook: {url: %q, key: hook}
  - name: csat
    type: CSAT
    tokenSHA256: [%s]
`, addr, tokenSHA256(readToken), tokenSHA256(customerToken), tokenSHA256(chatToken), samplePercent, tokenSHA256(npsToken), rcv.URL, rcv.URL+"/detractors", tokenSHA256(csatToken)))
	writeFile(t, secPath, pseudonymSecrets("webhookKeys: {hook: "+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))+"}\n"))
	o := Options{Listen: addr, ConfigPath: cfgPath, SecretsPath: secPath,
		WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "warn", ConfigPoll: 100 * time.Millisecond}
	e.runOn(t, &o)
	runCollector(t, o)
	return c
}

// call sends a request with a bearer token and returns the status and body.
func call(t *testing.T, method, u, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Every path a customer id comes in by stores its pseudonym, and the
// contact budget, distinct counts, idempotency and per-customer exports
// work on it.
func TestPseudonymizedCustomersOnEveryPath(t *testing.T) {
	forEachEngine(t, testPseudonymizedCustomersOnEveryPath)
}

func testPseudonymizedCustomersOnEveryPath(t *testing.T, e testEngine) {
	c := startPseudonymCollector(t, e, 100)
	now := time.Now().UTC().Format(time.RFC3339)
	p1, p2, pw := testPseudonym(t, "c-1"), testPseudonym(t, "c-2"), testPseudonym(t, "w-2")
	if p1 != pseudonymOfC1 {
		t.Fatalf("pseudonym of c-1 = %s, want %s", p1, pseudonymOfC1)
	}
	e1 := fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c-1","time":%q,"contact":{"email":"c1@example.com","phone":"+49 30 1234"}}`, now)
	c.interact(t, e1+"\n"+fmt.Sprintf(`{"id":"e2","touchpoint":"chat","customer":"c-1","time":%q}`, now))
	waitFor(t, func() bool { return len(c.invitations()) == 1 })
	c.interact(t, fmt.Sprintf(`{"id":"e3","touchpoint":"chat","customer":"c-2","time":%q}`, now))
	waitFor(t, func() bool { return len(c.invitations()) == 2 })

	// The same record again is a duplicate: its fingerprint is over the
	// pseudonym, the same both times.
	if code, body := call(t, "POST", c.base+"/v1/events", chatToken, e1); code != 200 || !strings.Contains(body, `"duplicates":1`) {
		t.Errorf("e1 again: %d %s, want a duplicate", code, body)
	}
	// The same id with another customer is another payload.
	if code, body := call(t, "POST", c.base+"/v1/events", chatToken, strings.Replace(e1, `"c-1"`, `"c-3"`, 1)); code != 422 {
		t.Errorf("e1 with another customer: %d %s, want 422", code, body)
	}

	// A wave: c-1 was invited after an interaction and is held back by
	// the throttle (the contact budget is kept per pseudonym on every
	// path); w-2 is invited under its pseudonym.
	wave := `{"survey":"nps","wave":"q1","audience":[{"customer":"c-1"},{"customer":"w-2","contact":{"email":"w2@example.com"}}]}`
	if code, body := call(t, "POST", c.base+"/v1/waves", npsToken, wave); code != 200 {
		t.Fatalf("wave: %d %s", code, body)
	}
	waitFor(t, func() bool { return len(c.invitations()) == 3 })
	byCustomer := map[string]map[string]any{}
	for _, inv := range c.invitations() {
		byCustomer[inv["customer"].(string)] = inv
	}
	if byCustomer[p1] == nil || byCustomer[p2] == nil || byCustomer[pw] == nil {
		t.Fatalf("invitations went to %v, want the pseudonyms of c-1, c-2 and w-2", byCustomer)
	}
	// Contact fields are kept as given: they are what delivers the invitation.
	if got := byCustomer[p1]["contact"].(map[string]any); got["email"] != "c1@example.com" || got["phone"] != "+49 30 1234" {
		t.Errorf("c-1's invitation contact = %v", got)
	}
	if got := byCustomer[pw]["contact"].(map[string]any); got["email"] != "w2@example.com" {
		t.Errorf("w-2's invitation contact = %v", got)
	}
	waitFor(t, func() bool { s := c.summary(t, "nps"); return s.Invitations != nil && s.Invitations.Sent == 3 })
	if inv := c.summary(t, "nps").Invitations; inv.Invited != 3 || inv.Suppressed["throttle"] != 2 {
		t.Errorf("invitations = %+v, want 3 invited and 2 throttled (c-1's second interaction and its wave invitation)", inv)
	}

	// Distinct customers count pseudonyms: c-1 twice and c-2 are two.
	var tp struct{ Interactions, Customers uint64 }
	if code, body := call(t, "GET", c.base+"/v1/summary?window=1d&touchpoint=chat", readToken, ""); code != 200 || json.Unmarshal([]byte(body), &tp) != nil || tp.Interactions != 3 || tp.Customers != 2 {
		t.Errorf("chat summary: %d %s, want 3 interactions of 2 customers", code, body)
	}

	// The survey page's answer carries the invitation's customer, already
	// a pseudonym: stored as it is, not hashed twice.
	page := getPage(t, byCustomer[p1]["link"].(string))
	form := formTokenRE.FindStringSubmatch(page.body)
	if page.status != 200 || form == nil {
		t.Fatalf("survey page: %d", page.status)
	}
	if got := postPage(t, byCustomer[p1]["link"].(string), url.Values{"form": {form[1]}, "score": {"2"}, "comment": {"Slow."}}, nil); got.status != 200 {
		t.Fatalf("page answer: %d", got.status)
	}
	waitFor(t, func() bool { return len(c.detractors()) == 1 })
	if d := c.detractors()[0]; d["customer"] != p1 {
		t.Errorf("detractor webhook customer = %v, want %s", d["customer"], p1)
	}
	// An answer through the API is stored under its pseudonym too.
	if code, body := call(t, "POST", c.base+"/v1/responses", csatToken, `{"id":"r1","survey":"csat","customer":"c-1","score":5}`); code != 200 {
		t.Fatalf("response: %d %s", code, body)
	}

	for _, tc := range []struct{ path, want string }{
		{"touchpoint=chat", `"customer":"` + p1 + `"` + "|" + `"customer":"` + p1 + `"` + "|" + `"customer":"` + p2 + `"`},
		{"touchpoint=chat&customer=c-1", `"customer":"` + p1 + `"` + "|" + `"customer":"` + p1 + `"`},
		{"touchpoint=chat&customer=c-2", `"customer":"` + p2 + `"`},
		{"touchpoint=chat&customer=nobody", ""},
		{"survey=nps&customer=c-1", `"customer":"` + p1 + `"`},
		{"survey=csat", `"customer":"` + p1 + `"`},
	} {
		code, body := call(t, "GET", c.base+"/v1/export?"+tc.path, readToken, "")
		var got []string
		for line := range strings.Lines(body) {
			var rec struct{ Customer string }
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("export %s: %v in %q", tc.path, err, line)
			}
			got = append(got, `"customer":"`+rec.Customer+`"`)
		}
		if code != 200 || strings.Join(got, "|") != tc.want || strings.Contains(body, `"c-`) || strings.Contains(body, `"w-`) {
			t.Errorf("export %s: %d %s, want customers %s and no plain id", tc.path, code, body, tc.want)
		}
	}
	if code, body := call(t, "GET", c.base+"/v1/export?survey=nps", readToken, ""); code != 200 || !strings.Contains(body, `"comment":"Slow."`) {
		t.Errorf("nps export: %d %s", code, body)
	}
}

// Sampling decides on the pseudonym, and decides the same way every time.
func TestPseudonymizedCustomersAreSampledConsistently(t *testing.T) {
	forEachEngine(t, testPseudonymizedCustomersAreSampledConsistently)
}

func testPseudonymizedCustomersAreSampledConsistently(t *testing.T, e testEngine) {
	c := startPseudonymCollector(t, e, 50)
	const n = 30
	inSample, byPlainID, differ := map[string]bool{}, 0, false
	for i := range n {
		customer := fmt.Sprintf("s-%d", i)
		in := sample.In("nps", testPseudonym(t, customer), 50)
		if in {
			inSample[testPseudonym(t, customer)] = true
		}
		if sample.In("nps", customer, 50) {
			byPlainID++
		}
		differ = differ || in != sample.In("nps", customer, 50)
	}
	if !differ {
		t.Fatal("the plain ids would be sampled as their pseudonyms are: the test would not tell them apart")
	}
	now := time.Now().UTC().Format(time.RFC3339)
	round := func(r int) {
		var lines []string
		for i := range n {
			lines = append(lines, fmt.Sprintf(`{"id":"r%d-%d","touchpoint":"chat","customer":"s-%d","time":%q}`, r, i, i, now))
		}
		c.interact(t, strings.Join(lines, "\n"))
	}
	round(1)
	waitFor(t, func() bool {
		s := c.summary(t, "nps").Invitations
		return s != nil && s.Invited+s.Suppressed["sample"] == n
	})
	waitFor(t, func() bool { return len(c.invitations()) == len(inSample) })
	for _, inv := range c.invitations() {
		if !inSample[inv["customer"].(string)] {
			t.Errorf("invited %v, which the sample of its pseudonym leaves out", inv["customer"])
		}
	}
	// The second interaction of each customer: those sampled out are
	// sampled out again, those invited are held back by the throttle.
	round(2)
	waitFor(t, func() bool {
		s := c.summary(t, "nps").Invitations
		return s.Invited+s.Suppressed["sample"]+s.Suppressed["throttle"] == 2*n
	})
	s := c.summary(t, "nps").Invitations
	if s.Invited != uint64(len(inSample)) || s.Suppressed["sample"] != 2*uint64(n-len(inSample)) || s.Suppressed["throttle"] != uint64(len(inSample)) {
		t.Errorf("invitations = %+v, want %d invited, %d sampled out twice, %d throttled (by plain ids %d would have been invited)",
			s, len(inSample), n-len(inSample), len(inSample), byPlainID)
	}
}

// pseudonymizeCustomers without customerIDKey is a config error naming
// both fields: the collector does not start with it, and a reload that
// would bring it keeps the previous config until the key arrives.
func TestPseudonymizeCustomersNeedsTheKey(t *testing.T) {
	forEachEngine(t, testPseudonymizeCustomersNeedsTheKey)
}

func testPseudonymizeCustomersNeedsTheKey(t *testing.T, e testEngine) {
	dir := t.TempDir()
	cfgPath, secPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "secrets.yaml")
	read := "readTokenSHA256: [" + tokenSHA256(readToken) + "]\ntouchpoints: [{name: chat, tokenSHA256: [" + tokenSHA256(chatToken) + "]}]\n"
	noKey := fmt.Sprintf("linkKeys: {current: %s}\n", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))))
	writeFile(t, cfgPath, read+"pseudonymizeCustomers: true\n")
	for _, secrets := range []string{"", secPath} {
		if secrets != "" {
			writeFile(t, secPath, noKey)
		}
		// A cancelled context: were the config accepted, Run would stop at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := Run(ctx, Options{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"), ConfigPath: cfgPath, SecretsPath: secrets, LogLevel: "error"})
		if err == nil || !strings.Contains(err.Error(), "pseudonymizeCustomers: true needs customerIDKey") || !strings.Contains(err.Error(), cfgPath) {
			t.Errorf("secrets %q: Run = %v, want the config error naming pseudonymizeCustomers and customerIDKey", secrets, err)
		}
	}

	// Reloads: the collector serves plain ids with the key-less secrets.
	c := e.startFresh(t, testConfig(t, ""))
	writeFile(t, cfgPath, read)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.srv.watchConfig(ctx, configFiles{config: cfgPath, secrets: secPath}, nil, []byte(noKey), 20*time.Millisecond)
	waitFor(t, func() bool { return c.srv.cfg.Load().touchpoints["phone"] == nil })
	failures := func() float64 { return counterValue(t, c.srv.metrics.reloads.WithLabelValues("failure")) }
	before := failures()
	if err := writeFileAtomic(cfgPath, []byte(read+"pseudonymizeCustomers: true\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return failures() > before })
	if c.srv.cfg.Load().pseudonymizeCustomers || c.srv.pseudonymize("c-1") != "c-1" || gaugeValue(t, c.srv.metrics.configSuccess) != 0 {
		t.Fatal("a config asking for pseudonyms without a key went in force, or the failure is not shown")
	}
	// The key arrives: the waiting config goes in force with it.
	if err := writeFileAtomic(secPath, []byte(pseudonymSecrets(""))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.srv.pseudonymize("c-1") == pseudonymOfC1 })
	if gaugeValue(t, c.srv.metrics.configSuccess) != 1 {
		t.Error("config_last_reload_successful is not 1 once config and secrets agree")
	}
	if code, _, _ := c.post("/v1/events", chatToken, "", `{"id":"e","touchpoint":"chat","customer":"c-1"}`); code != 200 {
		t.Fatal(code)
	}
	// Secrets that drop the key while the config asks for pseudonyms are
	// refused; the key in force stays.
	before = failures()
	if err := writeFileAtomic(secPath, []byte(noKey)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return failures() > before })
	if c.srv.pseudonymize("c-1") != pseudonymOfC1 {
		t.Error("secrets without the key replaced the key in force")
	}
	if code, body := c.exportBody("/v1/export?touchpoint=chat"); code != 200 || body != `{"id":"e","touchpoint":"chat","customer":"`+pseudonymOfC1+`","time":"2026-11-23T12:00:30Z"}`+"\n" {
		t.Errorf("export: %d %q", code, body)
	}
	// Turning pseudonyms off takes effect with the key-less secrets.
	if err := writeFileAtomic(cfgPath, []byte(read)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return c.srv.pseudonymize("c-1") == "c-1" })
}

func TestCustomerIDKeyErrorsNeverQuoteTheKey(t *testing.T) {
	link := "linkKeys: {current: " + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "}\n"
	short := base64.StdEncoding.EncodeToString([]byte("SECRETVALUE-short"))
	for file, want := range map[string]string{
		link + "customerIDKey: " + short:          "customerIDKey: 17 bytes, need at least 32",
		link + "customerIDKey: 'SECRETVALUE !!!'": "customerIDKey: not base64",
	} {
		_, err := parseSecrets([]byte(file))
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
	sec, err := parseSecrets([]byte(pseudonymSecrets("")))
	if err != nil || sec.customerKey == nil || sec.customerKey.ID("c-1") != pseudonymOfC1 {
		t.Errorf("customerIDKey not read: %v", err)
	}
}

// Without pseudonymizeCustomers, ids are stored as given even when the
// secrets file has a key; the server's pseudonymize is then the identity.
func TestPseudonymizeIsOffByDefault(t *testing.T) { forEachEngine(t, testPseudonymizeIsOffByDefault) }

func testPseudonymizeIsOffByDefault(t *testing.T, e testEngine) {
	sec, err := parseSecrets([]byte(pseudonymSecrets("")))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := withCustomerKey(testConfig(t, ""), sec)
	if err != nil {
		t.Fatal(err)
	}
	c := e.startFresh(t, cfg)
	if got := c.srv.pseudonymize("c-1"); got != "c-1" {
		t.Errorf("pseudonymize(c-1) = %q with pseudonyms off", got)
	}
	c.post("/v1/responses", npsToken, "", `{"id":"r","survey":"nps","customer":"c-1","score":9}`)
	if code, body := c.exportBody("/v1/export?survey=nps"); code != 200 || !strings.Contains(body, `"customer":"c-1"`) {
		t.Errorf("export: %d %s", code, body)
	}
	on, err := withCustomerKey(testConfig(t, "pseudonymizeCustomers: true"), sec)
	if err != nil || on.pseudonymize("c-1") != pseudonymOfC1 {
		t.Errorf("on: %v", err)
	}
}

// pairReload puts in force what agrees: both files, else either alone,
// else nothing, and says why.
func TestPairReload(t *testing.T) {
	withKey, err := parseSecrets([]byte(pseudonymSecrets("")))
	if err != nil {
		t.Fatal(err)
	}
	noKey, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	off, on := testConfig(t, ""), testConfig(t, "pseudonymizeCustomers: true")
	for _, tc := range []struct {
		name             string
		cfg              *settings
		sec              *secrets
		nextCfg          *settings
		nextSec          *secrets
		wantCfg, wantSec bool // which pending file goes in
		wantKey          bool
		wantErr          bool
	}{
		{"config turns it on with the key in force", off, withKey, on, nil, true, false, true, false},
		{"config turns it on without a key", off, noKey, on, nil, false, false, false, true},
		{"config and key arrive together", off, noKey, on, withKey, true, true, true, false},
		{"secrets drop the key while it is on", on, withKey, nil, noKey, false, false, true, true},
		{"secrets without a key go in while the config waits", off, noKey, on, noKey, false, true, false, true},
		{"config turns it off, secrets drop the key", on, withKey, off, noKey, true, true, false, false},
		{"secrets with a key while it is off", off, noKey, nil, withKey, false, true, false, false},
	} {
		cur, err := withCustomerKey(tc.cfg, tc.sec)
		if err != nil {
			t.Fatal(err)
		}
		keyed, sec, cfgIn, secIn, err := pairReload(cur, tc.sec, tc.nextCfg, tc.nextSec)
		if cfgIn != tc.wantCfg || secIn != tc.wantSec || (err != nil) != tc.wantErr || (keyed.pseudonymize("c-1") == pseudonymOfC1) != tc.wantKey {
			t.Errorf("%s: config in %v, secrets in %v, key %v, err %v", tc.name, cfgIn, secIn, keyed.customerKey != nil, err)
		}
		if err != nil && !strings.Contains(err.Error(), "pseudonymizeCustomers: true needs customerIDKey") {
			t.Errorf("%s: %v, want the error naming both fields", tc.name, err)
		}
		if secIn && sec != tc.nextSec || !secIn && sec != tc.sec {
			t.Errorf("%s: the wrong secrets in force", tc.name)
		}
	}
}

// An access or erasure request names the customer by the id the caller
// knows; the collector finds the data under its pseudonym, and under the
// id itself, where data stored before pseudonymization was turned on stays.
func TestErasureFindsPseudonymizedCustomers(t *testing.T) {
	forEachEngine(t, testErasureFindsPseudonymizedCustomers)
}

func testErasureFindsPseudonymizedCustomers(t *testing.T, e testEngine) {
	c := startPseudonymCollector(t, e, 100)
	for _, id := range []string{"e-1", "e-2"} {
		if code, body := call(t, "POST", c.base+"/v1/events", chatToken, fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"c-1"}`, id)); code != 200 {
			t.Fatalf("event %s: %d %s", id, code, body)
		}
	}
	if code, body := call(t, "POST", c.base+"/v1/events", chatToken, `{"id":"e-3","touchpoint":"chat","customer":"c-2"}`); code != 200 {
		t.Fatalf("event e-3: %d %s", code, body)
	}
	code, body := call(t, "GET", c.base+"/v1/customers/c-1", customerToken, "")
	if code != 200 || !strings.Contains(body, testPseudonym(t, "c-1")) || strings.Count(body, `"kind":"events"`) != 2 {
		t.Fatalf("GET /v1/customers/c-1: %d %s; want c-1's two events under its pseudonym", code, body)
	}
	code, body = call(t, "DELETE", c.base+"/v1/customers/c-1", customerToken, "")
	var answer struct {
		Erased map[string]int `json:"erased"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &answer) != nil || answer.Erased["events"] != 2 {
		t.Fatalf("DELETE /v1/customers/c-1: %d %s; want 2 events erased", code, body)
	}
	if code, body := call(t, "GET", c.base+"/v1/customers/c-1", customerToken, ""); code != 404 {
		t.Fatalf("GET after the erasure: %d %s; want 404", code, body)
	}
	if code, body := call(t, "GET", c.base+"/v1/customers/c-2", customerToken, ""); code != 200 || !strings.Contains(body, testPseudonym(t, "c-2")) {
		t.Fatalf("GET c-2 after c-1's erasure: %d %s; want c-2 untouched", code, body)
	}
}

func TestStoredCustomerIDs(t *testing.T) {
	none := &Server{}
	none.secrets.Store(&secrets{})
	if got := none.storedCustomerIDs("c-1"); len(got) != 1 || got[0] != "c-1" {
		t.Errorf("no customer id key: %q, want [c-1]", got)
	}
	k, err := pseudonym.NewKey([]byte(testCustomerKey))
	if err != nil {
		t.Fatal(err)
	}
	// With the key in the secrets file, both ids are looked under, whether
	// pseudonymization is on now or was on before: data stored under the
	// pseudonym stays until it expires either way.
	for _, on := range []bool{true, false} {
		srv := &Server{}
		srv.cfg.Store(&settings{pseudonymizeCustomers: on})
		srv.secrets.Store(&secrets{customerKey: k})
		if got := srv.storedCustomerIDs("c-1"); len(got) != 2 || got[0] != testPseudonym(t, "c-1") || got[1] != "c-1" {
			t.Errorf("pseudonymization on=%v, key present: %q, want [pseudonym, c-1]", on, got)
		}
	}
}
