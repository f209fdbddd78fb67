package collector

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// fetch sends method to url with an optional bearer token and returns the
// status, the body and its content type.
func fetch(t *testing.T, method, url, token string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("{}"))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Content-Type")
}

// TestListenersServeOnlyTheirRoutes: with --page-listen and --metrics-listen
// the survey page, the API and /metrics each answer on their own port only,
// so exposing the page port to the internet exposes nothing else.
func TestListenersServeOnlyTheirRoutes(t *testing.T) {
	forEachEngine(t, testListenersServeOnlyTheirRoutes)
}

func testListenersServeOnlyTheirRoutes(t *testing.T, e testEngine) {
	dir := t.TempDir()
	api, page, metrics := freeLoopbackAddr(t), freeLoopbackAddr(t), freeLoopbackAddr(t)
	cfgPath, secPath := filepath.Join(dir, "collector.yaml"), filepath.Join(dir, "secrets.yaml")
	writeFile(t, cfgPath, fmt.Sprintf("readTokenSHA256: [%s]\ntouchpoints: [{name: chat, tokenSHA256: [%s]}]\n", collectorapi.HashToken(readToken), collectorapi.HashToken(chatToken)))
	writeFile(t, secPath, "linkKeys: {current: "+base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))+"}\n")
	o := Options{Listen: api, PageListen: page, MetricsListen: metrics, ConfigPath: cfgPath, SecretsPath: secPath, LogLevel: "warn"}
	e.runOn(t, &o)
	runCollector(t, o)

	// notRouted is the mux's own 404, as opposed to a page saying a link
	// does not work.
	notRouted := func(code int, body string) bool { return code == 404 && strings.HasPrefix(body, "404 page not found") }

	// The page port: the survey page (an HTML answer about the link) and
	// a health check for load balancers; nothing else.
	if code, body, ctype := fetch(t, "GET", "http://"+page+"/s/not-a-link", ""); code != 404 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "This link does not work") {
		t.Errorf("page port, GET /s/not-a-link: %d %s %q, want the survey page's 404", code, ctype, body)
	}
	if code, body, _ := fetch(t, "GET", "http://"+page+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("page port, /healthz: %d %q", code, body)
	}
	for _, r := range []struct{ method, path, token string }{
		{"GET", "/v1/summary", readToken}, {"GET", "/v1/export?touchpoint=chat", readToken}, {"POST", "/v1/events", chatToken},
		{"POST", "/v1/waves", chatToken}, {"POST", "/v1/followups/x", chatToken}, {"GET", "/metrics", ""}, {"GET", "/readyz", ""},
	} {
		if code, body, _ := fetch(t, r.method, "http://"+page+r.path, r.token); !notRouted(code, body) {
			t.Errorf("page port, %s %s: %d %q, want not routed", r.method, r.path, code, body)
		}
	}

	// The API port: the API and probes, no page (it moved), no metrics.
	if code, body, _ := fetch(t, "GET", "http://"+api+"/v1/summary?touchpoint=chat", readToken); code != 200 {
		t.Errorf("API port, summary: %d %s", code, body)
	}
	if code, body, _ := fetch(t, "GET", "http://"+api+"/v1/summary", ""); code != 401 || !strings.Contains(body, "a read token is required") {
		t.Errorf("API port, summary without token: %d %s", code, body)
	}
	for _, path := range []string{"/s/not-a-link", "/metrics"} {
		if code, body, _ := fetch(t, "GET", "http://"+api+path, ""); !notRouted(code, body) {
			t.Errorf("API port, GET %s: %d %q, want not routed", path, code, body)
		}
	}

	// The metrics port: /metrics only.
	if code, body, _ := fetch(t, "GET", "http://"+metrics+"/metrics", ""); code != 200 || !strings.Contains(body, "cxop_collector_config_last_reload_successful 1") {
		t.Errorf("metrics port, /metrics: %d, body without the reload gauge", code)
	}
	for _, path := range []string{"/v1/summary", "/healthz", "/s/not-a-link"} {
		if code, body, _ := fetch(t, "GET", "http://"+metrics+path, readToken); !notRouted(code, body) {
			t.Errorf("metrics port, GET %s: %d %q, want not routed", path, code, body)
		}
	}
}

// TestOneListenerServesThePageByDefault: without --page-listen, the API
// port serves the survey page as before.
func TestOneListenerServesThePageByDefault(t *testing.T) {
	forEachEngine(t, testOneListenerServesThePageByDefault)
}

func testOneListenerServesThePageByDefault(t *testing.T, e testEngine) {
	c := e.startFresh(t, testConfig(t, ""))
	if code, _, ctype := fetch(t, "GET", c.url+"/s/not-a-link", ""); !strings.HasPrefix(ctype, "text/html") {
		t.Errorf("GET /s/ on the only listener: %d %s, want the survey page", code, ctype)
	}
	if code, body, _ := fetch(t, "GET", c.url+"/metrics", ""); code != 404 {
		t.Errorf("GET /metrics on the API handler: %d %.80q, want 404 (metrics have their own listener)", code, body)
	}
}

func TestCollectorFlagDefaults(t *testing.T) {
	f := NewCommand().Flags()
	for name, want := range map[string]string{"listen": ":8080", "metrics-listen": ":9090", "page-listen": "", "allow-insecure-webhooks": "false", "webhook-deny-cidrs": "[]"} {
		if got := f.Lookup(name); got == nil || got.DefValue != want {
			t.Errorf("--%s default %v, want %q", name, got, want)
		}
	}
}

// TestRunRefuses: what keeps a collector from starting is a clear error
// naming the flag or the field, before the store is opened.
func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	noRead := filepath.Join(dir, "no-read.yaml")
	writeFile(t, noRead, "touchpoints: [{name: chat, tokenSHA256: ["+collectorapi.HashToken(chatToken)+"]}]\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "readTokenSHA256: ["+collectorapi.HashToken(readToken)+"]\n")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for name, tc := range map[string]struct {
		o    Options
		want string
	}{
		"no read token": {Options{ConfigPath: noRead, Listen: "127.0.0.1:0"},
			"config " + noRead + ": readTokenSHA256 is empty; /v1/summary and /v1/export need a read token"},
		"bad deny range": {Options{ConfigPath: good, Listen: "127.0.0.1:0", WebhookDenyCIDRs: []string{"10.96.0.0/12", "10.300.0.0/16"}},
			`--webhook-deny-cidrs: "10.300.0.0/16" is not a CIDR range`},
		"metrics port taken": {Options{ConfigPath: good, Listen: "127.0.0.1:0", MetricsListen: taken.Addr().String()},
			"--metrics-listen " + taken.Addr().String() + ": listen tcp"},
		"page port taken": {Options{ConfigPath: good, Listen: "127.0.0.1:0", PageListen: taken.Addr().String()},
			"--page-listen " + taken.Addr().String() + ": listen tcp"},
	} {
		tc.o.DataDir, tc.o.LogLevel = filepath.Join(dir, "data-"+strings.ReplaceAll(name, " ", "-")), "error"
		err := Run(t.Context(), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Run = %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// TestWebhookFlagsReachTheGuard: the flags, as parsed from a command line,
// are what every webhook is dialled through.
func TestWebhookFlagsReachTheGuard(t *testing.T) {
	parse := func(args ...string) *webhook.Guard {
		t.Helper()
		cmd := NewCommand()
		var o Options
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		f := cmd.Flags()
		o.WebhookAllowHosts, _ = f.GetStringSlice("webhook-allow-hosts")
		o.WebhookAllowLoopback, _ = f.GetBool("webhook-allow-loopback")
		o.AllowInsecureWebhooks, _ = f.GetBool("allow-insecure-webhooks")
		o.WebhookDenyCIDRs, _ = f.GetStringSlice("webhook-deny-cidrs")
		g, err := o.webhookGuard()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := parse()
	if g.AllowHTTP || g.AllowLoopback || len(g.Deny) != 0 || len(g.AllowHosts) != 0 {
		t.Errorf("default guard %+v, want https only and nothing allowed", g)
	}
	if err := g.CheckURL("http://mailer.example.com/"); err == nil {
		t.Error("the default guard takes an http URL")
	}
	g = parse("--allow-insecure-webhooks", "--webhook-deny-cidrs=34.118.224.0/20,34.118.0.0/16", "--webhook-allow-hosts=mailer.internal")
	if !g.AllowHTTP || len(g.Deny) != 2 || g.Deny[0].String() != "34.118.224.0/20" || g.Deny[1].String() != "34.118.0.0/16" || g.AllowHosts[0] != "mailer.internal" {
		t.Errorf("guard from flags %+v", g)
	}
	if _, err := (Options{WebhookDenyCIDRs: []string{"nowhere"}}).webhookGuard(); err == nil || !strings.Contains(err.Error(), `--webhook-deny-cidrs: "nowhere"`) {
		t.Errorf("bad range: %v", err)
	}
}

// TestPlainHTTPWebhooksWaitUnlessAllowed: an http webhook URL is left out of
// the engine's config (its messages wait in the outbox, nothing is sent in
// the clear or dropped) with a problem naming the survey, the URL and the
// flag, unless --allow-insecure-webhooks is set.
func TestPlainHTTPWebhooksWaitUnlessAllowed(t *testing.T) {
	cfg := mustParse(t, `
readTokenSHA256: [`+collectorapi.HashToken(readToken)+`]
touchpoints: [{name: chat}]
surveys:
  - name: plain
    type: NPS
    question: Q?
    trigger: {touchpoints: [chat]}
    webhook: {url: "http://mailer.example.com/hook", key: k}
    detractorWebhook: {url: "https://crm.example.com/detractors", key: k}
  - name: secure
    type: CSAT
    question: Q?
    trigger: {touchpoints: [chat]}
    webhook: {url: "https://mailer.example.com/hook", key: k}
pageURL: https://cx.example.com
`)
	sec := &secrets{webhookKeys: map[string][]byte{"k": []byte("0123456789abcdef")}}
	byName := func(allowHTTP bool) (map[string][2]bool, []string) {
		c, problems := engineConfig(cfg, sec, allowHTTP)
		out := map[string][2]bool{}
		for _, s := range c.Surveys {
			out[s.Name] = [2]bool{s.Webhook != nil, s.DetractorWebhook != nil}
		}
		return out, problems
	}
	got, problems := byName(false)
	if got["plain"] != [2]bool{false, true} || got["secure"] != [2]bool{true, false} {
		t.Errorf("https only: webhooks kept %v, want plain's http webhook left out and the https ones kept", got)
	}
	want := "survey plain: webhook URL http://mailer.example.com/hook is plain http; webhooks are sent over https only (--allow-insecure-webhooks permits http)"
	if len(problems) != 1 || !strings.Contains(problems[0], want) {
		t.Errorf("problems %q, want one containing %q", problems, want)
	}
	got, problems = byName(true)
	if got["plain"] != [2]bool{true, true} || len(problems) != 0 {
		t.Errorf("http allowed: webhooks kept %v, problems %q", got, problems)
	}
}
