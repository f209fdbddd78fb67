package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cxop-dev/cxop/internal/webhook"
)

// strictReceiver verifies Standard Webhooks signatures with the key it
// holds now and refuses anything else with 401, as a receiver does while
// its signing key is rotated ahead of the sender's. refuse, when set,
// answers a status for a body instead of accepting it.
type strictReceiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	verifier *standardwebhooks.Webhook
	refuse   func(InvitationBody) int
	attempts int
	// accepted counts the 2xx answers per webhook-id.
	accepted map[string]int
	bodies   map[string]InvitationBody
}

func newStrictReceiver(t *testing.T, key []byte) *strictReceiver {
	r := &strictReceiver{t: t, accepted: map[string]int{}, bodies: map[string]InvitationBody{}}
	r.rotate(key)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *strictReceiver) rotate(key []byte) {
	v, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(key))
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.verifier = v
	r.mu.Unlock()
}

func (r *strictReceiver) setRefuse(fn func(InvitationBody) int) {
	r.mu.Lock()
	r.refuse = fn
	r.mu.Unlock()
}

func (r *strictReceiver) serve(w http.ResponseWriter, req *http.Request) {
	data, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if err := r.verifier.Verify(data, req.Header); err != nil {
		http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	var body InvitationBody
	if err := json.Unmarshal(data, &body); err != nil {
		r.t.Errorf("body: %v", err)
	}
	if r.refuse != nil {
		if code := r.refuse(body); code != 0 {
			w.WriteHeader(code)
			return
		}
	}
	id := req.Header.Get("webhook-id")
	r.accepted[id]++
	r.bodies[id] = body
	w.WriteHeader(http.StatusNoContent)
}

func (r *strictReceiver) counts() (attempts int, accepted map[string]int, bodies map[string]InvitationBody) {
	r.mu.Lock()
	defer r.mu.Unlock()
	accepted, bodies = map[string]int{}, map[string]InvitationBody{}
	for k, v := range r.accepted {
		accepted[k] = v
	}
	for k, v := range r.bodies {
		bodies[k] = v
	}
	return r.attempts, accepted, bodies
}

// runFor steps the engine every tick of the injected clock for d.
func (f *fixture) runFor(d, tick time.Duration) {
	f.t.Helper()
	for end := f.now.Add(d); f.now.Before(end); {
		f.now = f.now.Add(tick)
		f.step()
	}
}

// assertDeliveredOnce checks that the receiver accepted exactly one
// message per customer, each once, with the invitation the engine stored.
func assertDeliveredOnce(t *testing.T, f *fixture, r *strictReceiver, customers []string) {
	t.Helper()
	_, accepted, bodies := r.counts()
	seen := map[string]string{}
	for id, n := range accepted {
		b := bodies[id]
		if n != 1 {
			t.Errorf("message %s (customer %s) accepted %d times", id, b.Customer, n)
		}
		if id != "msg_inv_"+b.Invitation {
			t.Errorf("webhook-id %s carries invitation %s", id, b.Invitation)
		}
		if prev, dup := seen[b.Customer]; dup {
			t.Errorf("customer %s invited twice: %s and %s", b.Customer, prev, id)
		}
		seen[b.Customer] = id
		if inv, ok, err := f.e.Invitation(b.Invitation); err != nil || !ok || !inv.Delivered {
			t.Errorf("invitation %s stored as %+v, %v, %v", b.Invitation, inv, ok, err)
		}
	}
	for _, c := range customers {
		if _, ok := seen[c]; !ok {
			t.Errorf("customer %s: no invitation delivered", c)
		}
	}
	if len(accepted) != len(customers) {
		t.Errorf("%d messages accepted, want %d", len(accepted), len(customers))
	}
}

func customerNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("c%03d", i)
	}
	return out
}

// The receiver rotates its signing key while invitations are being
// delivered and refuses the old signatures with 401 for longer than the
// retry window; the collector's key is rotated only then. Nothing is
// lost: the refused messages are retried for a day, parked (not deleted)
// with the webhook reported failing, and delivered once the key matches,
// every invitation exactly once.
func TestKeyRotationMidDeliveryLosesNothing(t *testing.T) {
	onBothStores(t, testKeyRotationMidDeliveryLosesNothing)
}

func testKeyRotationMidDeliveryLosesNothing(t *testing.T, kind storeKind) {
	oldKey, newKey := hookKey, []byte("fedcba9876543210fedcba9876543210")
	rcv := newStrictReceiver(t, oldKey)
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: &webhook.Endpoint{URL: rcv.srv.URL, Key: oldKey}},
	}}
	reg := prometheus.NewRegistry()
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg, opts: &Options{Registerer: reg}}
	f.open()
	customers := customerNames(100)
	f.interact("chat", customers...)

	// One step: the log is read, 100 invitations made, the first 32
	// delivered under the old key.
	if _, err := f.e.step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, accepted, _ := rcv.counts(); len(accepted) != defaultDeliveryBatch {
		t.Fatalf("%d delivered in the first step, want %d", len(accepted), defaultDeliveryBatch)
	}
	rcv.rotate(newKey)

	// 23 hours of 401s: every message is still retried, none parked.
	f.runFor(23*time.Hour, 10*time.Minute)
	if _, failing, _ := f.e.WebhookFailing("nps"); failing {
		t.Fatal("the webhook is reported failing before the retry window ran out")
	}
	if s := f.stats("nps"); s[CounterDeliveryFailed] != 0 || s[CounterRetries] < 68*10 {
		t.Fatalf("after 23h: %v; want at least 10 retries of each of 68 messages and none failed", s)
	}
	if n, _ := f.e.countKeys(prefixOut); n != 68 {
		t.Fatalf("%d messages retrying after 23h, want 68", n)
	}

	// Past 24 hours the messages are parked and the webhook is failing.
	f.runFor(2*time.Hour, 10*time.Minute)
	failing, isFailing, err := f.e.WebhookFailing("nps")
	if err != nil || !isFailing || !strings.Contains(failing.LastError, "401") {
		t.Fatalf("WebhookFailing = %+v, %v, %v; want failing with the 401", failing, isFailing, err)
	}
	if n, _ := f.e.countKeys(prefixFailed); n != 68 {
		t.Fatalf("%d messages parked, want 68", n)
	}
	if n, _ := f.e.Outbox(); n != 68 {
		t.Errorf("outbox holds %d, want the 68 parked", n)
	}
	if s := f.stats("nps"); s[CounterDeliveryFailed] != 68 || s[CounterDelivered] != 32 {
		t.Errorf("counters = %v; want 68 failed (parked) and 32 delivered", s)
	}
	if got := testutil.ToFloat64(f.e.metrics.parked.WithLabelValues("nps", "delivery")); got != 68 {
		t.Errorf("parked metric = %v, want 68", got)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cxop_collector_webhook_failing 1 while a survey's webhook, as configured now, has messages parked because their retries ran out; 0 otherwise.
# TYPE cxop_collector_webhook_failing gauge
cxop_collector_webhook_failing{survey="nps",webhook="delivery"} 1
`), "cxop_collector_webhook_failing"); err != nil {
		t.Error(err)
	}

	// Parked messages are not walked again; a probe tries one of them
	// every ProbeInterval (10m by default) and is refused again.
	before, _, _ := rcv.counts()
	f.runFor(30*time.Minute, time.Minute)
	if after, _, _ := rcv.counts(); after-before < 2 || after-before > 3 {
		t.Errorf("%d attempts in 30 minutes of parking, want one probe each 10 minutes", after-before)
	}
	if s := f.stats("nps"); s[CounterDeliveryFailed] != 68 {
		t.Errorf("a refused probe counted the message as failed again: %v", s)
	}

	// The collector's key is rotated too: the parked messages return and
	// are delivered at once.
	cfg.Surveys[0].Webhook = &webhook.Endpoint{URL: rcv.srv.URL, Key: newKey}
	f.e.SetConfig(cfg)
	f.step()
	assertDeliveredOnce(t, f, rcv, customers)
	if n, _ := f.e.Outbox(); n != 0 {
		t.Errorf("%d messages left", n)
	}
	if _, isFailing, _ := f.e.WebhookFailing("nps"); isFailing {
		t.Error("the webhook is still reported failing")
	}
	if s := f.stats("nps"); s[CounterDelivered] != 100 || s[CounterInvited] != 100 {
		t.Errorf("counters = %v", s)
	}
	// A day later nothing is sent again.
	f.runFor(24*time.Hour, time.Hour)
	assertDeliveredOnce(t, f, rcv, customers)
}

// A receiver that refuses everything (a bad deploy answering 400) and is
// then fixed is noticed by the probe, without any config change. A
// message it still cannot take does not hide the recovery: the probe
// takes a different parked message each time. That message is kept,
// retried again, never dropped.
func TestAProbeNoticesAFixedReceiver(t *testing.T) { onBothStores(t, testAProbeNoticesAFixedReceiver) }

func testAProbeNoticesAFixedReceiver(t *testing.T, kind storeKind) {
	rcv := newStrictReceiver(t, hookKey)
	rcv.setRefuse(func(InvitationBody) int { return http.StatusBadRequest })
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: &webhook.Endpoint{URL: rcv.srv.URL, Key: hookKey}},
	}}
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg, opts: &Options{RetryFor: 2 * time.Hour, ProbeInterval: 15 * time.Minute}}
	f.open()
	customers := customerNames(20)
	f.interact("chat", customers...)
	f.runFor(3*time.Hour, 5*time.Minute)
	failing, isFailing, _ := f.e.WebhookFailing("nps")
	if !isFailing || !strings.Contains(failing.LastError, "400") {
		t.Fatalf("WebhookFailing = %+v, %v", failing, isFailing)
	}
	if n, _ := f.e.countKeys(prefixFailed); n != 20 {
		t.Fatalf("%d parked, want 20", n)
	}

	// Fixed, except for one body it still refuses.
	rcv.setRefuse(func(b InvitationBody) int {
		if b.Customer == "c000" {
			return http.StatusUnprocessableEntity
		}
		return 0
	})
	// Two probes at most: if the first takes c000's message, the second
	// takes another.
	f.runFor(2*15*time.Minute, time.Minute)
	f.step()
	_, accepted, _ := rcv.counts()
	if len(accepted) != 19 {
		t.Fatalf("%d delivered after two probe intervals, want 19", len(accepted))
	}
	if _, isFailing, _ := f.e.WebhookFailing("nps"); isFailing {
		t.Error("still reported failing after deliveries succeeded")
	}
	// c000's message is back in its retries, with a fresh window.
	if n, _ := f.e.Outbox(); n != 1 {
		t.Errorf("outbox holds %d, want c000's message", n)
	}
	rcv.setRefuse(nil)
	f.runFor(time.Hour, 5*time.Minute)
	assertDeliveredOnce(t, f, rcv, customers)
}

// A restart keeps everything: a parked message stays parked and the
// webhook failing, then delivered once it works.
func TestParkedMessagesSurviveARestart(t *testing.T) {
	onBothStores(t, testParkedMessagesSurviveARestart)
}

func testParkedMessagesSurviveARestart(t *testing.T, kind storeKind) {
	rcv := newStrictReceiver(t, hookKey)
	rcv.setRefuse(func(InvitationBody) int { return http.StatusForbidden })
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: &webhook.Endpoint{URL: rcv.srv.URL, Key: hookKey}},
	}}
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg, opts: &Options{RetryFor: time.Hour, ProbeInterval: time.Hour}}
	f.open()
	customers := customerNames(5)
	f.interact("chat", customers...)
	f.runFor(2*time.Hour, 10*time.Minute)
	f.restart()
	if _, isFailing, _ := f.e.WebhookFailing("nps"); !isFailing {
		t.Fatal("a restart forgot the failing webhook")
	}
	if n, _ := f.e.countKeys(prefixFailed); n != 5 {
		t.Fatalf("%d parked after a restart, want 5", n)
	}
	rcv.setRefuse(nil)
	f.runFor(time.Hour, 10*time.Minute)
	assertDeliveredOnce(t, f, rcv, customers)
}

// A message returned from parking gets a fresh retry window: after a 410
// and a new URL that fails too, it is retried for RetryFor again, not
// parked at once for the failures it had before.
func TestAParkedMessageComesBackWithAFreshRetryWindow(t *testing.T) {
	onBothStores(t, testAParkedMessageComesBackWithAFreshRetryWindow)
}

func testAParkedMessageComesBackWithAFreshRetryWindow(t *testing.T, kind storeKind) {
	old := newReceiver(t, 500, 500, 500, 410)
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: old.endpoint()},
	}}
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg, opts: &Options{RetryBase: time.Minute, RetryMax: 5 * time.Minute, RetryFor: time.Hour}}
	f.open()
	f.interact("chat", "c1")
	f.runFor(50*time.Minute, 5*time.Minute)
	if _, gone, _ := f.e.WebhookGone("nps"); !gone || len(old.got()) != 4 {
		t.Fatalf("gone %v after %d attempts; want gone after 4", gone, len(old.got()))
	}
	f.runFor(2*time.Hour, 10*time.Minute)

	broken := newReceiver(t, 503, 503, 503)
	cfg.Surveys[0].Webhook = broken.endpoint()
	f.e.SetConfig(cfg)
	f.step()
	if n := len(broken.got()); n != 1 {
		t.Fatalf("%d attempts at the new URL, want 1", n)
	}
	if n, _ := f.e.countKeys(prefixFailed); n != 0 {
		t.Fatal("the message was parked at its first failure at the new URL")
	}
	if _, failing, _ := f.e.WebhookFailing("nps"); failing {
		t.Fatal("the new URL is reported failing after one 503")
	}
	f.runFor(30*time.Minute, 5*time.Minute)
	if got := broken.got(); len(got) != 4 || got[3].status != 200 {
		t.Fatalf("attempts at the new URL = %+v, want three 503s then a 200", got)
	}
	if s := f.stats("nps"); s[CounterDelivered] != 1 || s[CounterDeliveryFailed] != 0 {
		t.Errorf("counters = %v", s)
	}
}
