package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
	"github.com/cxop-dev/cxop/internal/survey/link"
	"github.com/cxop-dev/cxop/internal/webhook"
)

var (
	t0      = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	hookKey = []byte("0123456789abcdef0123456789abcdef")
	keys    = link.Keys{Current: []byte(strings.Repeat("k", 32))}
)

// receiver is a webhook receiver that verifies every signature with the
// Standard Webhooks reference library and answers from a script.
type receiver struct {
	t        *testing.T
	srv      *httptest.Server
	verifier *standardwebhooks.Webhook

	mu       sync.Mutex
	answers  []int // status codes to answer in turn; then 200
	received []received
}

type received struct {
	id     string
	status int
	body   InvitationBody
}

func newReceiver(t *testing.T, answers ...int) *receiver {
	v, err := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString(hookKey))
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, verifier: v, answers: answers}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	data, _ := io.ReadAll(req.Body)
	if err := r.verifier.Verify(data, req.Header); err != nil {
		r.t.Errorf("signature refused: %v", err)
	}
	var body InvitationBody
	if err := json.Unmarshal(data, &body); err != nil {
		r.t.Errorf("body: %v", err)
	}
	r.mu.Lock()
	status := http.StatusOK
	if len(r.answers) > 0 {
		status, r.answers = r.answers[0], r.answers[1:]
	}
	r.received = append(r.received, received{id: req.Header.Get("webhook-id"), status: status, body: body})
	r.mu.Unlock()
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "2")
	}
	w.WriteHeader(status)
}

func (r *receiver) got() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.received...)
}

func (r *receiver) endpoint() *webhook.Endpoint {
	return &webhook.Endpoint{URL: r.srv.URL, Key: hookKey}
}

type fixture struct {
	t   testing.TB
	dir string
	// kind is the store the engine runs on; the zero value is Pebble.
	kind storeKind
	// st is the embedded store (Pebble), pg the PostgreSQL one.
	st  *store.Store
	pg  *pgstore.Store
	dsn string
	// pgFiles, when set, is the directory of the test PostgreSQL holding
	// the database dsn (its data directory and log), read by traces.
	pgFiles string
	e       *Engine
	now     time.Time
	cfg     Config
	seq     int
	// opts, when set, replace the fixture's engine options.
	opts *Options
	// storeOpts, when set, adjusts the store's options.
	storeOpts func(*store.Options)
}

func newFixture(t testing.TB, cfg Config) *fixture {
	return newFixtureOn(t, onPebble, cfg)
}

// newFixtureOn returns a fixture whose engine runs on the store kind says:
// Pebble, or a fresh database of the test PostgreSQL.
func newFixtureOn(t testing.TB, kind storeKind, cfg Config) *fixture {
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg}
	f.open()
	return f
}

func (f *fixture) open() {
	opts := Options{RetryBase: time.Second, RetryMax: 10 * time.Second}
	if f.opts != nil {
		opts = *f.opts
	}
	client := webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
	clock := func() time.Time { return f.now }
	var err error
	if f.kind == onPostgres {
		if f.dsn == "" {
			f.dsn = testPostgres(f.t).NewDatabase(f.t)
		}
		pg, err := pgstore.Open(context.Background(), pgstore.Options{DSN: f.dsn, FoldInterval: -1, Now: clock, EngineClock: clock, Holder: "engine-test"})
		if err != nil {
			f.t.Fatal(err)
		}
		f.pg = pg
		f.t.Cleanup(func() { _ = pg.Close() })
		if f.e, err = NewOn(pg.EngineKV(), nil, client, opts); err != nil {
			f.t.Fatal(err)
		}
	} else {
		so := store.Options{Dir: f.dir, Now: clock}
		if f.storeOpts != nil {
			f.storeOpts(&so)
		}
		st, err := store.Open(so)
		if err != nil {
			f.t.Fatal(err)
		}
		f.st = st
		f.t.Cleanup(func() { _ = st.Close() })
		if f.e, err = NewOn(st.EngineKV(), st, client, opts); err != nil {
			f.t.Fatal(err)
		}
	}
	_ = err
	f.e.now = clock
	f.e.SetConfig(f.cfg)
}

func (f *fixture) restart() {
	var err error
	if f.kind == onPostgres {
		err = f.pg.Close()
	} else {
		err = f.st.Close()
	}
	if err != nil {
		f.t.Fatal(err)
	}
	f.open()
}

// submit stores records in the fixture's store.
func (f *fixture) submit(records []store.Record) {
	f.t.Helper()
	var err error
	if f.kind == onPostgres {
		_, err = f.pg.Submit(context.Background(), records)
	} else {
		_, err = f.st.Submit(context.Background(), records)
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

// write commits writes made straight into the engine's storage, under
// the engine's lock, as a store written by an older build would hold.
func (f *fixture) write(fn func(b kv.Batch)) {
	f.t.Helper()
	if err := f.e.lockWait(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	defer f.e.unlock()
	b := f.e.kv.NewBatch()
	defer func() { _ = b.Close() }()
	fn(b)
	if err := b.Commit(); err != nil {
		f.t.Fatal(err)
	}
}

// interact stores one interaction at touchpoint, now, for each customer,
// with a contact, as the collector stores it (apart from the record).
func (f *fixture) interact(touchpoint string, customers ...string) {
	f.t.Helper()
	records := make([]store.Record, 0, len(customers))
	for _, customer := range customers {
		f.seq++
		id := fmt.Sprintf("ev-%d", f.seq)
		js := fmt.Sprintf(`{"id":%q,"touchpoint":%q,"customer":%q,"time":%q}`, id, touchpoint, customer, f.now.Format(time.RFC3339Nano))
		records = append(records, store.Record{
			Kind: rollup.KindTouchpoint, Subject: touchpoint, ID: id, JSON: []byte(js),
			Contact: []byte(fmt.Sprintf(`{"email":"%s@example.com"}`, customer)),
			Event:   rollup.Event{Time: f.now.UnixNano(), CustomerHash: uint64(f.seq)},
		})
	}
	f.submit(records)
}

func (f *fixture) step() {
	f.t.Helper()
	if err := f.e.Step(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) stats(survey string) Stats {
	f.t.Helper()
	s, err := f.e.Stats(survey, f.now.Add(-28*24*time.Hour))
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func TestTriggerAfterDelayThenThrottleAcrossSurveys(t *testing.T) {
	onBothStores(t, testTriggerAfterDelayThenThrottleAcrossSurveys)
}

func testTriggerAfterDelayThenThrottleAcrossSurveys(t *testing.T, kind storeKind) {
	rcv := newReceiver(t)
	cfg := Config{
		PageURL: "https://cx.example.com", LinkKeys: keys,
		Surveys: []Survey{
			{Name: "support-nps", Question: "How likely…?", Touchpoints: []string{"chat"}, Delay: 10 * time.Minute, SamplePercent: 100, Throttle: 30 * 24 * time.Hour, Webhook: rcv.endpoint()},
			{Name: "delivery-csat", Question: "Satisfied?", Touchpoints: []string{"store"}, SamplePercent: 100, Throttle: 7 * 24 * time.Hour, Webhook: rcv.endpoint()},
		},
	}
	f := newFixtureOn(t, kind, cfg)
	f.interact("chat", "c1")
	f.interact("phone", "c2") // no survey listens to phone
	f.step()
	if got := rcv.got(); len(got) != 0 {
		t.Fatalf("%d invitations before the delay passed", len(got))
	}

	f.now = f.now.Add(10 * time.Minute)
	f.step()
	got := rcv.got()
	if len(got) != 1 {
		t.Fatalf("%d invitations after the delay, want 1", len(got))
	}
	body := got[0].body
	if body.Survey != "support-nps" || body.Customer != "c1" || body.Contact == nil || body.Contact.Email != "c1@example.com" || body.Touchpoint != "chat" {
		t.Errorf("invitation body = %+v", body)
	}
	token, ok := strings.CutPrefix(body.Link, "https://cx.example.com/s/")
	if !ok {
		t.Fatalf("link %q is not on the page URL", body.Link)
	}
	id, expires, err := link.Parse(token)
	if err != nil || id.String() != body.Invitation || !expires.Equal(f.now.Add(7*24*time.Hour)) {
		t.Fatalf("token: %v %v %v (invitation %s)", id, expires, err, body.Invitation)
	}
	if err := link.Verify(keys, token, link.Claims{Invitation: id, Survey: "support-nps", Customer: "c1"}, f.now); err != nil {
		t.Errorf("the link does not verify for its survey and customer: %v", err)
	}
	inv, ok, err := f.e.Invitation(body.Invitation)
	if err != nil || !ok || !inv.Delivered || inv.Token != token {
		t.Errorf("stored invitation = %+v, %v, %v", inv, ok, err)
	}

	// A week later another survey would ask c1: the 30-day throttle of the
	// first survey holds it back, though its own is 7 days.
	f.now = f.now.Add(8 * 24 * time.Hour)
	f.interact("store", "c1")
	f.interact("store", "c3")
	f.step()
	got = rcv.got()
	if len(got) != 2 || got[1].body.Customer != "c3" {
		t.Fatalf("deliveries = %+v, want c3 only after c1", got)
	}
	if s := f.stats("delivery-csat"); s[CounterInvited] != 1 || s[CounterSuppressedThrottle] != 1 || s[CounterDelivered] != 1 {
		t.Errorf("delivery-csat counters = %v", s)
	}
	if s := f.stats("support-nps"); s[CounterInvited] != 1 || s[CounterDelivered] != 1 {
		t.Errorf("support-nps counters = %v", s)
	}
}

func TestRetriesKeepTheWebhookIDAndHonourRetryAfter(t *testing.T) {
	onBothStores(t, testRetriesKeepTheWebhookIDAndHonourRetryAfter)
}

func testRetriesKeepTheWebhookIDAndHonourRetryAfter(t *testing.T, kind storeKind) {
	rcv := newReceiver(t, 500, 429)
	f := newFixtureOn(t, kind, Config{PageURL: "http://127.0.0.1:1", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()},
	}})
	f.interact("chat", "c1")
	f.step() // 500
	f.now = f.now.Add(time.Second)
	f.step() // due within [0.5s, 1s]: 429 with Retry-After 2
	f.now = f.now.Add(time.Second)
	f.step() // too early: Retry-After asked for 2s
	if n := len(rcv.got()); n != 2 {
		t.Fatalf("%d attempts before Retry-After passed, want 2", n)
	}
	f.now = f.now.Add(time.Second)
	f.step()
	got := rcv.got()
	if len(got) != 3 || got[2].status != 200 {
		t.Fatalf("attempts = %+v", got)
	}
	for _, g := range got {
		if g.id != got[0].id || !strings.HasPrefix(g.id, "msg_inv_") {
			t.Errorf("webhook-ids %q and %q differ", g.id, got[0].id)
		}
	}
	if s := f.stats("nps"); s[CounterRetries] != 2 || s[CounterDelivered] != 1 {
		t.Errorf("counters = %v", s)
	}
	if n, _ := f.e.Outbox(); n != 0 {
		t.Errorf("%d messages left in the outbox", n)
	}
}

func TestGoneDisablesTheWebhookUntilItsURLChanges(t *testing.T) {
	onBothStores(t, testGoneDisablesTheWebhookUntilItsURLChanges)
}

func testGoneDisablesTheWebhookUntilItsURLChanges(t *testing.T, kind storeKind) {
	gone := newReceiver(t, 410)
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: gone.endpoint()},
	}}
	f := newFixtureOn(t, kind, cfg)
	f.interact("chat", "c1")
	f.step()
	if _, isGone, _ := f.e.WebhookGone("nps"); !isGone {
		t.Fatal("a 410 did not disable the webhook")
	}
	f.now = f.now.Add(time.Hour)
	f.step()
	if n := len(gone.got()); n != 1 {
		t.Fatalf("%d attempts at a gone webhook, want 1", n)
	}
	fresh := newReceiver(t)
	cfg.Surveys[0].Webhook = fresh.endpoint()
	f.e.SetConfig(cfg)
	f.step()
	if got := fresh.got(); len(got) != 1 || got[0].body.Customer != "c1" {
		t.Fatalf("after a new URL: %+v", got)
	}
	if _, isGone, _ := f.e.WebhookGone("nps"); isGone {
		t.Error("the new URL is still reported gone")
	}
}

func TestARestartLosesNoInvitation(t *testing.T) { onBothStores(t, testARestartLosesNoInvitation) }

func testARestartLosesNoInvitation(t *testing.T, kind storeKind) {
	rcv := newReceiver(t)
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: nil},
	}}
	f := newFixtureOn(t, kind, cfg)
	f.interact("chat", "c0", "c1", "c2", "c3", "c4")
	f.step() // invited, parked: no webhook yet
	if n, _ := f.e.Outbox(); n != 5 {
		t.Fatalf("outbox holds %d, want 5", n)
	}
	f.restart()
	f.cfg.Surveys[0].Webhook = rcv.endpoint()
	f.e.SetConfig(f.cfg)
	f.step()
	f.step()
	got := rcv.got()
	if len(got) != 5 {
		t.Fatalf("%d delivered after a restart, want 5", len(got))
	}
	if s := f.stats("nps"); s[CounterInvited] != 5 {
		t.Errorf("the restart re-read the log: %v", s)
	}
}

func TestSamplingAndSuspension(t *testing.T) { onBothStores(t, testSamplingAndSuspension) }

func testSamplingAndSuspension(t *testing.T, kind storeKind) {
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 30},
	}}
	f := newFixtureOn(t, kind, cfg)
	customers := make([]string, 10_000)
	for i := range customers {
		customers[i] = fmt.Sprintf("customer-%d", i)
	}
	f.interact("chat", customers...)
	f.step()
	s := f.stats("nps")
	if share := float64(s[CounterInvited]) / 100; math.Abs(share-30) > 2 || s[CounterInvited]+s[CounterSuppressedSample] != 10_000 {
		t.Errorf("30%% sample of 10,000: %v", s)
	}

	cfg.Surveys[0].Suspended = true
	f.e.SetConfig(cfg)
	f.interact("chat", "late")
	f.step()
	if s := f.stats("nps"); s[CounterSuppressedSuspend] != 1 {
		t.Errorf("suspended survey counters = %v", s)
	}
}

func TestWaveInvitesTheAudienceOnceUnderTheSameRules(t *testing.T) {
	onBothStores(t, testWaveInvitesTheAudienceOnceUnderTheSameRules)
}

func testWaveInvitesTheAudienceOnceUnderTheSameRules(t *testing.T, kind storeKind) {
	rcv := newReceiver(t)
	f := newFixtureOn(t, kind, Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "chat-nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Throttle: 30 * 24 * time.Hour, Webhook: rcv.endpoint()},
		{Name: "quarterly", SamplePercent: 100, Throttle: 90 * 24 * time.Hour, Webhook: rcv.endpoint()},
	}})
	f.interact("chat", "c0") // c0 is asked after chat, so the wave must skip c0
	f.step()
	var audience []Member
	for i := range 10 {
		audience = append(audience, Member{Customer: fmt.Sprintf("c%d", i), Contact: &Contact{Email: fmt.Sprintf("c%d@example.com", i)}})
	}
	f.now = f.now.Add(time.Hour)
	if isNew, err := f.e.Wave("quarterly", "2026-q4", audience); err != nil || !isNew {
		t.Fatalf("Wave = %v, %v", isNew, err)
	}
	f.step()
	if isNew, err := f.e.Wave("quarterly", "2026-q4", audience); err != nil || isNew {
		t.Fatalf("the same wave again = %v, %v; want taken already", isNew, err)
	}
	f.step()
	if _, err := f.e.Wave("nope", "w", audience); !errors.Is(err, ErrUnknownSurvey) {
		t.Errorf("a wave of an unknown survey: %v", err)
	}
	s := f.stats("quarterly")
	if s[CounterInvited] != 9 || s[CounterSuppressedThrottle] != 1 || s[CounterDelivered] != 9 {
		t.Errorf("quarterly counters = %v", s)
	}
	var waveBodies int
	for _, r := range rcv.got() {
		if r.body.Survey == "quarterly" {
			waveBodies++
			if r.body.Contact == nil || !strings.HasSuffix(r.body.Contact.Email, "@example.com") {
				t.Errorf("wave invitation without contact: %+v", r.body)
			}
		}
	}
	if waveBodies != 9 {
		t.Errorf("%d wave invitations delivered, want 9", waveBodies)
	}
}
