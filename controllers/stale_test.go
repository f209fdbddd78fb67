package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
			case tc.message != "" && (s.stale == nil || s.stale.Message != tc.message || s.stale.Reason != cxv1.CollectorUnavailableReason || s.stale.ObservedGeneration != 2):
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

func TestKeptDelivery(t *testing.T) {
	gone := metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookGoneReason, Message: "410"}
	delivering := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionTrue, Reason: cxv1.DeliveringReason}
	keyMissing := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionFalse, Reason: cxv1.WebhookKeyMissingReason}
	kept, live := staleness{keep: true}, staleness{}
	if c := kept.keptDelivery(delivering, []metav1.Condition{gone}); c.Reason != cxv1.WebhookGoneReason {
		t.Errorf("while stale, a Gone webhook reads %s", c.Reason)
	}
	if c := kept.keptDelivery(keyMissing, []metav1.Condition{gone}); c.Reason != cxv1.WebhookKeyMissingReason {
		t.Errorf("while stale, a missing key reads %s", c.Reason)
	}
	if c := live.keptDelivery(delivering, []metav1.Condition{gone}); c.Reason != cxv1.DeliveringReason {
		t.Errorf("with a live answer, the webhook reads %s", c.Reason)
	}
	if c := kept.keptDelivery(nil, []metav1.Condition{gone}); c != nil {
		t.Errorf("no delivery webhook, yet %+v", c)
	}
}
