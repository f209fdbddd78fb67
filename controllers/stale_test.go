package controllers

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

func TestStaleness(t *testing.T) {
	started := time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)
	readAt := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	down := readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "the collector did not answer: connection refused"}
	ready := []metav1.Condition{{Type: cxv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: cxv1.ReconciledReason}}
	staleBefore := []metav1.Condition{{Type: cxv1.StaleCondition, Status: metav1.ConditionTrue, Reason: cxv1.CollectorUnavailableReason,
		Message: "The numbers are those of the last good reading, at 2026-11-28T10:00:00Z: earlier"}}
	tp := &cxv1.Touchpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "chat", Generation: 2}}
	readFailed := readiness{failures: []failure{{reason: cxv1.ReadFailedReason, message: "list targets: etcd is restarting"}}}

	for _, tc := range []struct {
		name       string
		remembered bool
		// rememberedGen is the generation the remembered reading was of;
		// 0 is the object's.
		rememberedGen int64
		observed      int64
		conditions    []metav1.Condition
		obs           readiness
		read          bool
		keep          bool
		message       string
		// reason is the Stale condition's; "" is CollectorUnavailable.
		reason string
	}{
		{name: "a good reading is live", read: true, observed: 2, conditions: ready},
		{name: "down after a reading of this process", remembered: true, observed: 2, conditions: ready, obs: down, keep: true,
			message: "The numbers are those of the last good reading, at 2026-11-28T12:00:00Z: the collector did not answer: connection refused"},
		// The manager restarted during the outage: the earlier message
		// kept the time.
		{name: "still down after a restart", observed: 2, conditions: staleBefore, obs: down, keep: true,
			message: "The numbers are those of the last good reading, at 2026-11-28T10:00:00Z: earlier"},
		{name: "down since before the manager started", observed: 2, conditions: ready, obs: down, keep: true,
			message: "The numbers are those of the last good reading, before the manager started at 2026-11-28T11:00:00Z: the collector did not answer: connection refused"},
		// The numbers described generation 1: nothing to keep.
		{name: "down after a spec change", remembered: true, observed: 1, conditions: ready, obs: down},
		// The loop after that: status already shows generation 2 with
		// no numbers, and the only reading is of generation 1.
		{name: "still down the loop after a spec change", remembered: true, rememberedGen: 1, observed: 2,
			conditions: []metav1.Condition{{Type: cxv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cxv1.CollectorUnavailableReason}}, obs: down},
		// Never read (a new object whose collector never answered).
		{name: "down with no reading ever", observed: 2, obs: down},
		{name: "spec invalid", remembered: true, observed: 2, conditions: ready, obs: readiness{invalid: errors.New("bad")}},
		// An API read that failed in passing says nothing new either.
		{name: "a read failed", remembered: true, observed: 2, conditions: ready, obs: readFailed, keep: true, reason: cxv1.ReadFailedReason,
			message: "The numbers are those of the last good reading, at 2026-11-28T12:00:00Z: list targets: etcd is restarting"},
		// A reference gone makes the numbers meaningless, not old.
		{name: "a reference missing beside a failed read", remembered: true, observed: 2, conditions: ready,
			obs: readiness{missing: []missingRef{{Kind: "Touchpoint", Name: "chat"}}, failures: readFailed.failures}},
		// Restarted during an outage of another cause: the earlier
		// message named another failure.
		{name: "a read failing after a restart during a collector outage", observed: 2, conditions: staleBefore, obs: readFailed, keep: true,
			reason:  cxv1.ReadFailedReason,
			message: "The numbers are those of the last good reading, before the manager started at 2026-11-28T11:00:00Z: list targets: etcd is restarting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReadings(started)
			if tc.remembered {
				gen := tp.Generation
				if tc.rememberedGen != 0 {
					gen = tc.rememberedGen
				}
				r.read(keyOf("Touchpoint", tp), gen, readAt)
			}
			s := r.staleness("Touchpoint", tp, tc.observed, tc.conditions, tc.obs, tc.read, readAt.Add(time.Minute))
			if s.keep != tc.keep {
				t.Errorf("keep = %v, want %v", s.keep, tc.keep)
			}
			switch {
			case tc.message == "" && s.stale != nil:
				t.Errorf("Stale %+v, want none", s.stale)
			case tc.message != "" && (s.stale == nil || s.stale.Message != tc.message || s.stale.Reason != cmp.Or(tc.reason, cxv1.CollectorUnavailableReason) || s.stale.ObservedGeneration != 2):
				t.Errorf("Stale %+v, want message %q", s.stale, tc.message)
			}
			if tc.read {
				if at, ok := r.last(keyOf("Touchpoint", tp), tp.Generation); !ok || !at.Equal(readAt.Add(time.Minute)) {
					t.Errorf("a good reading was not remembered: %v, %v", at, ok)
				}
			}
		})
	}
}

// TestKeptNumbers: with keep, the set*Status functions leave the numbers
// as they are; without, they clear them.
func TestKeptNumbers(t *testing.T) {
	down := readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "down"}
	tp := &cxv1.Touchpoint{}
	tp.Status.Interactions, tp.Status.WaitCompliance = 40, "97.5"
	setTouchpointStatus(tp, touchpointObservation{readiness: down, stale: staleness{keep: true}})
	if tp.Status.Interactions != 40 || tp.Status.WaitCompliance != "97.5" {
		t.Errorf("kept touchpoint numbers: %d, %q", tp.Status.Interactions, tp.Status.WaitCompliance)
	}
	setTouchpointStatus(tp, touchpointObservation{readiness: down})
	if tp.Status.Interactions != 0 || tp.Status.WaitCompliance != "" {
		t.Errorf("cleared touchpoint numbers: %d, %q", tp.Status.Interactions, tp.Status.WaitCompliance)
	}

	svy := &cxv1.Survey{}
	svy.Spec.Type = cxv1.SurveyTypeNPS
	svy.Status.Responses, svy.Status.Score, svy.Status.InvitationsSent = 10, "40", 30
	setSurveyStatus(svy, surveyObservation{readiness: down, stale: staleness{keep: true}})
	if svy.Status.Responses != 10 || svy.Status.Score != "40" || svy.Status.InvitationsSent != 30 {
		t.Errorf("kept survey numbers: %+v", svy.Status)
	}
	setSurveyStatus(svy, surveyObservation{readiness: down, summary: &collectorapi.SurveySummary{Responses: 3}, stale: staleness{keep: true}})
	if svy.Status.Responses != 3 || svy.Status.Score != "" {
		t.Errorf("a fresh summary replaces kept numbers: %+v", svy.Status)
	}

	jny := &cxv1.Journey{}
	jny.Status.NPS, jny.Status.WaitCompliance = "20", "90"
	setJourneyStatus(jny, journeyObservation{readiness: down, stale: staleness{keep: true}})
	if jny.Status.NPS != "20" || jny.Status.WaitCompliance != "90" {
		t.Errorf("kept journey numbers: %+v", jny.Status)
	}
	setJourneyStatus(jny, journeyObservation{readiness: down})
	if jny.Status.NPS != "" || jny.Status.WaitCompliance != "" {
		t.Errorf("cleared journey numbers: %+v", jny.Status)
	}
}

func TestCollectorMetrics(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := &collectorMetrics{byNamespace: map[string]collectorSample{}, now: func() time.Time { return now }}
	m.answered("shop", nil)
	now = now.Add(time.Minute)
	m.answered("shop", &collectorapi.Unavailable{Reason: "connection refused"})
	m.answered("care", errors.New("a bad request of the manager's own"))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	want := `
# HELP cxop_collector_up 1 when the namespace's collector answered the manager's last summary request, 0 when it could not (status then keeps the last numbers, marked Stale, and cxop_target_* the last verdict).
# TYPE cxop_collector_up gauge
cxop_collector_up{namespace="shop"} 0
# HELP cxop_collector_last_answer_timestamp_seconds When the namespace's collector last answered a summary request, in Unix seconds: the age of the numbers status keeps while cxop_collector_up is 0.
# TYPE cxop_collector_last_answer_timestamp_seconds gauge
cxop_collector_last_answer_timestamp_seconds{namespace="shop"} 1.8e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	m.forget("shop")
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series after forget, want 0", n)
	}
}

// TestKeptDelivery: while the collector cannot answer and the numbers are
// kept, a failure its last answer reported (Gone, parked messages) stands
// rather than going Unknown, and what the manager checks itself is never
// replaced by the condition as read.
func TestKeptDelivery(t *testing.T) {
	gone := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookGoneReason, Message: "410"}
	failing := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookFailingReason, Message: "parked"}
	wasDelivering := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionTrue, Reason: cxv1.DeliveringReason}
	wasInsecure := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.InsecureWebhookReason}
	unknown := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionUnknown, Reason: cxv1.CollectorUnavailableReason}
	delivering := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionTrue, Reason: cxv1.DeliveringReason}
	keyMissing := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookKeyMissingReason}
	insecure := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.InsecureWebhookReason}
	kept, live := staleness{keep: true}, staleness{}
	for _, tc := range []struct {
		name   string
		s      staleness
		now    *metav1.Condition
		before []metav1.Condition
		want   string
	}{
		{"a Gone webhook stays Gone while stale", kept, unknown, []metav1.Condition{gone}, cxv1.WebhookGoneReason},
		{"parked messages stay parked while stale", kept, unknown, []metav1.Condition{failing}, cxv1.WebhookFailingReason},
		{"a delivering webhook is not claimed delivering while stale", kept, unknown, []metav1.Condition{wasDelivering}, cxv1.CollectorUnavailableReason},
		{"a failure the manager decides is not kept", kept, unknown, []metav1.Condition{wasInsecure}, cxv1.CollectorUnavailableReason},
		{"no Delivering before", kept, unknown, nil, cxv1.CollectorUnavailableReason},
		{"a missing key is decided anew", kept, keyMissing, []metav1.Condition{gone}, cxv1.WebhookKeyMissingReason},
		{"an http webhook is decided anew", kept, insecure, []metav1.Condition{gone}, cxv1.InsecureWebhookReason},
		{"numbers not kept: Unknown", live, unknown, []metav1.Condition{gone}, cxv1.CollectorUnavailableReason},
		{"a live answer wins", live, delivering, []metav1.Condition{gone}, cxv1.DeliveringReason},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c := tc.s.keptDelivery(tc.now, tc.before); c == nil || c.Reason != tc.want {
				t.Errorf("Delivering %+v, want reason %s", c, tc.want)
			}
		})
	}
	if c := kept.keptDelivery(nil, []metav1.Condition{gone}); c != nil {
		t.Errorf("no delivery webhook, yet %+v", c)
	}
}

// TestKeptDeliveryThroughSurveyStatus: the Survey's status while its
// collector is down keeps the Gone reason it last reported, and an http
// webhook under https-only collectors still reads InsecureWebhook: a kept
// condition never skips the manager's own check.
func TestKeptDeliveryThroughSurveyStatus(t *testing.T) {
	down := readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "down"}
	gone := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookGoneReason, Message: "410",
		ObservedGeneration: 1, LastTransitionTime: metav1.Now()}
	survey := func(url string) *cxv1.Survey {
		svy := &cxv1.Survey{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
		svy.Spec.Type = cxv1.SurveyTypeNPS
		svy.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: url}}
		svy.Status.Conditions = []metav1.Condition{gone}
		return svy
	}
	obs := surveyObservation{readiness: down, servesPages: true, stale: staleness{keep: true}}
	svy := survey("https://mailer.example.com/cx")
	setSurveyStatus(svy, obs)
	if c := meta.FindStatusCondition(svy.Status.Conditions, cxv1.DeliveringCondition); c == nil || c.Status != metav1.ConditionFalse || c.Reason != cxv1.WebhookGoneReason {
		t.Errorf("stale Delivering %+v, want the last WebhookGone", c)
	}
	svy = survey("http://mailer.example.com/cx")
	setSurveyStatus(svy, obs)
	if c := meta.FindStatusCondition(svy.Status.Conditions, cxv1.DeliveringCondition); c == nil || c.Status != metav1.ConditionFalse || c.Reason != cxv1.InsecureWebhookReason {
		t.Errorf("stale Delivering of an http webhook %+v, want InsecureWebhook", c)
	}
}

// urlRuntime is a collector runtime that only knows its collector's URL.
type urlRuntime struct {
	CollectorRuntime
	url string
}

func (r urlRuntime) URL(string) string { return r.url }

// TestLastAnswerMovesOnlyWhenTheCollectorAnswers: an answer served from
// the status source's cache is no news from the collector, so
// cxop_collector_last_answer_timestamp_seconds stays at the time the
// collector last really answered, and a failed request leaves it too.
func TestLastAnswerMovesOnlyWhenTheCollectorAnswers(t *testing.T) {
	const ns = "last-answer"
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Query().Has("touchpoint") {
			_, _ = w.Write([]byte(`{"interactions":1}`))
			return
		}
		_, _ = w.Write([]byte(`{"touchpoints":{"chat":{"interactions":1}},"surveys":{}}`))
	}))
	defer srv.Close()
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ReadTokenSecretName}, Data: map[string][]byte{TokenKey: []byte("read")}}
	s := NewStatusSource(fake.NewClientBuilder().WithObjects(token).Build(), urlRuntime{url: srv.URL}, time.Hour)

	clock := time.Unix(1_800_000_000, 0)
	collectorStates.mu.Lock()
	collectorStates.now = func() time.Time { return clock }
	collectorStates.mu.Unlock()
	t.Cleanup(func() {
		collectorStates.mu.Lock()
		collectorStates.now = time.Now
		collectorStates.mu.Unlock()
		forgetCollectorMetrics(ns)
	})
	gauges := func() (up, last float64) {
		t.Helper()
		collectorStates.mu.RLock()
		defer collectorStates.mu.RUnlock()
		st, ok := collectorStates.byNamespace[ns]
		if !ok {
			t.Fatal("no collector series")
		}
		if st.up {
			up = 1
		}
		return up, float64(st.lastAnswer.Unix())
	}
	ctx := context.Background()

	if _, err := s.all(ctx, ns, "1h", nil); err != nil {
		t.Fatal(err)
	}
	if up, last := gauges(); up != 1 || last != 1_800_000_000 {
		t.Fatalf("after an answer: up %v, last answer %v", up, last)
	}
	clock = clock.Add(time.Minute)
	if _, err := s.all(ctx, ns, "1h", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.touchpoints(ctx, ns, "1h", []string{"chat"}); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("%d requests, want the summary once and the touchpoints once", n)
	}
	clock = clock.Add(time.Minute)
	if _, err := s.all(ctx, ns, "1h", nil); err != nil {
		t.Fatal(err)
	}
	if up, last := gauges(); up != 1 || last != 1_800_000_060 {
		t.Errorf("after cache hits: up %v, last answer %v, want the time of the last request (1800000060)", up, last)
	}

	srv.Close()
	s.API.Forget(srv.URL)
	clock = clock.Add(time.Minute)
	if _, err := s.all(ctx, ns, "1h", nil); !collectorapi.IsUnavailable(err) {
		t.Fatalf("closed collector: %v", err)
	}
	if up, last := gauges(); up != 0 || last != 1_800_000_060 {
		t.Errorf("after a failed request: up %v, last answer %v", up, last)
	}
}
