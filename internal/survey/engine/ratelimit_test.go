package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func namesFrom(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// A leaked touchpoint token floods the collector with interactions of
// made-up customers: the touchpoint's cap and the namespace's bound the
// invitations they make; the rest are suppressed and counted, not queued,
// the caps survive a restart, and they slide with the hour.
func TestRateLimitsBoundInvitationsPerTouchpointAndNamespace(t *testing.T) {
	onBothStores(t, testRateLimitsBoundInvitationsPerTouchpointAndNamespace)
}

func testRateLimitsBoundInvitationsPerTouchpointAndNamespace(t *testing.T, kind storeKind) {
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"web", "chat"}, SamplePercent: 100},
	}}
	reg := prometheus.NewRegistry()
	f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: cfg, opts: &Options{TouchpointRate: 10, NamespaceRate: 15, Registerer: reg}}
	f.open()
	f.interact("web", namesFrom("web", 30)...)
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 10 || s[CounterSuppressedRate] != 20 {
		t.Fatalf("30 interactions at web, cap 10: %v", s)
	}
	// chat has its own cap of 10, but the namespace has 5 left.
	f.interact("chat", namesFrom("chat", 30)...)
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 15 || s[CounterSuppressedRate] != 45 {
		t.Fatalf("then 30 at chat, namespace cap 15: %v", s)
	}
	limited := func(limit string) float64 {
		return testutil.ToFloat64(f.e.metrics.rateLimited.WithLabelValues("nps", limit))
	}
	if limited(limitTouchpoint) != 20 || limited(limitNamespace) != 25 {
		t.Errorf("rate-limited metric: touchpoint %v namespace %v, want 20 and 25", limited(limitTouchpoint), limited(limitNamespace))
	}
	// Suppressed, not queued: nothing is due any more.
	if n, _ := f.e.countKeys(prefixDue); n != 0 {
		t.Errorf("%d suppressed eligibilities kept", n)
	}

	// A restart forgets nothing of the hour.
	f.opts.Registerer = nil // registered once
	f.restart()
	f.now = f.now.Add(30 * time.Minute)
	f.interact("web", "late-0")
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 15 {
		t.Fatalf("after a restart the caps were forgotten: %v", s)
	}

	// 90 minutes after the flood half of the first hour still counts:
	// web has used 5 of 10 and the namespace 7.5 of 15.
	f.now = t0.Add(90 * time.Minute)
	f.interact("web", namesFrom("web2", 20)...)
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 20 {
		t.Fatalf("half an hour into the next hour: %v, want 5 more invited", s)
	}

	// A wave is not capped by the touchpoints' limits.
	var audience []Member
	for _, c := range namesFrom("wave", 40) {
		audience = append(audience, Member{Customer: c})
	}
	if _, err := f.e.Wave("nps", "w1", audience); err != nil {
		t.Fatal(err)
	}
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 60 {
		t.Fatalf("a wave of 40 after the caps were reached: %v, want all invited", s)
	}

	// Two hours later the caps are whole again.
	f.now = t0.Add(3 * time.Hour)
	f.interact("web", namesFrom("web3", 12)...)
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 70 {
		t.Fatalf("hours later: %v, want 10 more invited", s)
	}
}

// Without caps nothing is counted or written for them.
func TestNoRateLimitWritesNothing(t *testing.T) { onBothStores(t, testNoRateLimitWritesNothing) }

func testNoRateLimitWritesNothing(t *testing.T, kind storeKind) {
	f := newFixtureOn(t, kind, Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"web"}, SamplePercent: 100},
	}})
	f.interact("web", namesFrom("web", 50)...)
	f.step()
	if s := f.stats("nps"); s[CounterInvited] != 50 || s[CounterSuppressedRate] != 0 {
		t.Fatalf("no caps: %v", s)
	}
	if n, _ := f.e.countKeys(prefixRate); n != 0 {
		t.Errorf("%d rate counters written without caps", n)
	}
}
