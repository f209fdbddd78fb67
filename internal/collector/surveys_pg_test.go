package collector

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// webhookReceiver verifies every webhook's signature and keeps each
// message under its webhook-id, with how often it came.
type webhookReceiver struct {
	url      string
	mu       sync.Mutex
	bodies   map[string]map[string]any // by webhook-id
	times    map[string]int
	paths    map[string]string
	mismatch []string // ids that came again with another body
	bad      int      // messages whose signature did not verify
}

func newWebhookReceiver(t *testing.T, key []byte) *webhookReceiver {
	t.Helper()
	verifier, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	r := &webhookReceiver{bodies: map[string]map[string]any{}, times: map[string]int{}, paths: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		data, _ := io.ReadAll(req.Body)
		var b map[string]any
		_ = json.Unmarshal(data, &b)
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		defer r.mu.Unlock()
		if verifier.Verify(data, req.Header) != nil || id == "" {
			r.bad++
			w.WriteHeader(400)
			return
		}
		if old, ok := r.bodies[id]; ok && fmt.Sprint(old) != fmt.Sprint(b) {
			r.mismatch = append(r.mismatch, id)
		}
		r.bodies[id], r.paths[id] = b, req.URL.Path
		r.times[id]++
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// messages returns the messages of type typ, one per webhook-id.
func (r *webhookReceiver) messages(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for id, b := range r.bodies {
		if b["type"] == typ {
			c := map[string]any{"webhook-id": id, "path": r.paths[id]}
			for k, v := range b {
				c[k] = v
			}
			out = append(out, c)
		}
	}
	return out
}

// startPostgresReplicas runs n collectors (Run, --store=postgres) over the
// database dsn, with an NPS survey triggered by chat whose invitations and
// detractors go to rcv; the survey page is on each replica's listen
// address, pageURL naming the first.
func startPostgresReplicas(t *testing.T, n int, dsn string, rcv *webhookReceiver, hookKey []byte) []string {
	t.Helper()
	dir := t.TempDir()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeLoopbackAddr(t)
	}
	cfgPath, secPath, dsnPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "secrets.yaml"), filepath.Join(dir, "dsn")
	writeFile(t, cfgPath, fmt.Sprintf(`
pageURL: http://%s
readTokenSHA256: [%s]
customerDataTokenSHA256: [%s]
touchpoints:
  - name: chat
    tokenSHA256: [%s]
surveys:
  - name: nps
    type: NPS
    question: How likely are you to recommend us?
    trigger: {touchpoints: [chat]}
    throttle: 30d
    tokenSHA256: [%s]
    webhook: {url: %q, key: hook}
    detractorWebhook: {url: %q, key: hook}
`, addrs[0], collectorapi.HashToken(readToken), collectorapi.HashToken(customerToken), collectorapi.HashToken(chatToken), collectorapi.HashToken(npsToken),
		rcv.url+"/invitations", rcv.url+"/detractors"))
	writeFile(t, secPath, fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString(hookKey)))
	writeFile(t, dsnPath, dsn+"\n")
	urls := make([]string, n)
	for i, addr := range addrs {
		urls[i] = "http://" + addr
		runCollector(t, Options{Listen: addr, ConfigPath: cfgPath, SecretsPath: secPath, Store: StorePostgres, PostgresDSNFile: dsnPath,
			PostgresStatementCache: true, WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "warn", logTo: &lockedBuffer{}})
	}
	return urls
}

// TestSurveysEndToEndOnPostgres runs the survey flow on collectors started
// as --store=postgres starts them, with one replica and with two over one
// database: interactions with contacts (sent to the replicas in turn)
// bring each customer one signed invitation carrying its contact and a
// link; the survey page behind the link (on the other replica too) shows
// the question and takes the answer; the detractor reaches the
// closed-loop webhook, and its follow-up is recorded; a wave reaches its
// whole audience. Each customer is invited once, and each message has one
// webhook-id (a redelivery, if any, has the same id and body).
func TestSurveysEndToEndOnPostgres(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d replicas", replicas), func(t *testing.T) {
			hookKey := []byte("0123456789abcdef0123456789abcdef")
			rcv := newWebhookReceiver(t, hookKey)
			urls := startPostgresReplicas(t, replicas, testPostgres(t).NewDatabase(t), rcv, hookKey)
			const customers = 20
			// Every customer interacts twice, on each replica: the
			// throttle lets one invitation through.
			for round := range 2 {
				for i := range customers {
					u := urls[(i+round)%len(urls)]
					ev := fmt.Sprintf(`{"id":"e-%d-%d","touchpoint":"chat","customer":"cust-%d","contact":{"email":"c%d@example.org","phone":"+49 30 %04d"}}`, round, i, i, i, i)
					if code, body := call(t, "POST", u+"/v1/events", chatToken, ev); code != 200 {
						t.Fatalf("event: %d %s", code, body)
					}
				}
			}
			waitFor(t, func() bool { return len(rcv.messages("survey.invitation")) >= customers })
			invited := map[string]map[string]any{}
			for _, m := range rcv.messages("survey.invitation") {
				cust, _ := m["customer"].(string)
				if invited[cust] != nil {
					t.Errorf("%s invited twice: %v and %v", cust, invited[cust]["webhook-id"], m["webhook-id"])
				}
				invited[cust] = m
			}
			for i := range customers {
				m := invited[fmt.Sprintf("cust-%d", i)]
				contact, _ := m["contact"].(map[string]any)
				link, _ := m["link"].(string)
				if m == nil || m["path"] != "/invitations" || m["survey"] != "nps" || contact["email"] != fmt.Sprintf("c%d@example.org", i) ||
					contact["phone"] != fmt.Sprintf("+49 30 %04d", i) || !strings.HasPrefix(link, urls[0]+"/s/") {
					t.Errorf("invitation of cust-%d: %v", i, m)
				}
			}
			// The page, served by the last replica.
			link := invited["cust-3"]["link"].(string)
			pageURL := urls[len(urls)-1] + strings.TrimPrefix(link, urls[0])
			page := getPage(t, pageURL)
			form := formTokenRE.FindStringSubmatch(page.body)
			if page.status != 200 || form == nil || !strings.Contains(page.body, "How likely are you to recommend us?") {
				t.Fatalf("survey page: %d\n%s", page.status, page.body)
			}
			if got := postPage(t, pageURL, url.Values{"form": {form[1]}, "score": {"2"}, "comment": {"too slow"}}, nil); got.status != 200 {
				t.Fatalf("page answer: %d\n%s", got.status, got.body)
			}
			waitFor(t, func() bool { return len(rcv.messages("survey.detractor")) == 1 })
			det := rcv.messages("survey.detractor")[0]
			id, _ := det["detractor"].(string)
			if det["path"] != "/detractors" || det["customer"] != "cust-3" || id == "" {
				t.Fatalf("detractor message: %v", det)
			}
			// The follow-up, through the first replica.
			code, body := call(t, "POST", urls[0]+"/v1/followups/"+url.PathEscape(id), npsToken, "")
			if code != 200 || !strings.Contains(body, `"detractor":"`+id+`"`) || !strings.Contains(body, "followedUpAt") {
				t.Fatalf("follow-up: %d %s", code, body)
			}
			code, body = call(t, "GET", urls[len(urls)-1]+"/v1/customers/cust-3", customerToken, "")
			if code != 200 || !strings.Contains(body, `"followUps":1`) || !strings.Contains(body, `"detractors":1`) || !strings.Contains(body, "too slow") {
				t.Errorf("cust-3 after the follow-up: %d %s", code, body)
			}
			// A wave, sent to every replica: taken once.
			var audience []string
			for i := range 15 {
				audience = append(audience, fmt.Sprintf(`{"customer":"wave-%d","contact":{"email":"w%d@example.org"}}`, i, i))
			}
			wave := `{"survey":"nps","wave":"q4","audience":[` + strings.Join(audience, ",") + `]}`
			duplicates := 0
			for _, u := range urls {
				code, body := call(t, "POST", u+"/v1/waves", npsToken, wave)
				if code != 200 {
					t.Fatalf("wave: %d %s", code, body)
				}
				if strings.Contains(body, `"duplicate":true`) {
					duplicates++
				}
			}
			if duplicates != len(urls)-1 {
				t.Errorf("the wave was taken %d times", len(urls)-duplicates)
			}
			waitFor(t, func() bool { return len(rcv.messages("survey.invitation")) >= customers+15 })
			waved := map[string]int{}
			for _, m := range rcv.messages("survey.invitation") {
				if c, _ := m["customer"].(string); strings.HasPrefix(c, "wave-") {
					waved[c]++
				}
			}
			if len(waved) != 15 {
				t.Errorf("the wave reached %d of 15 customers: %v", len(waved), waved)
			}
			for c, n := range waved {
				if n != 1 {
					t.Errorf("%s invited %d times by the wave", c, n)
				}
			}
			if n := len(rcv.messages("survey.invitation")); n != customers+15 {
				t.Errorf("%d invitations, want %d: one per customer", n, customers+15)
			}
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			if rcv.bad != 0 || len(rcv.mismatch) != 0 {
				t.Errorf("%d webhooks failed verification; webhook-ids reused with another body: %v", rcv.bad, rcv.mismatch)
			}
			redelivered := 0
			for _, n := range rcv.times {
				redelivered += n - 1
			}
			t.Logf("%d replicas: %d messages, %d redelivered under the same webhook-id", replicas, len(rcv.times), redelivered)
		})
	}
}
