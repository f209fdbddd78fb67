package controllers

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/slo"
)

func TestObjectiveMismatch(t *testing.T) {
	survey := func(typ cxv1.SurveyType) *cxv1.Survey {
		return &cxv1.Survey{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: cxv1.SurveySpec{Type: typ}}
	}
	chat := &cxv1.Touchpoint{ObjectMeta: metav1.ObjectMeta{Name: "chat"}, Spec: cxv1.TouchpointSpec{Channel: cxv1.ChannelChat}}
	chatWithThreshold := chat.DeepCopy()
	chatWithThreshold.Spec.WaitTime = &cxv1.WaitTimeSpec{Threshold: "2m"}
	wait := func(threshold cxv1.Duration) cxv1.Objective {
		return cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Threshold: threshold, Percent: resource.MustParse("95")}}
	}
	for _, tc := range []struct {
		name    string
		obj     cxv1.Objective
		subject client.Object
		want    string
	}{
		{"nps on nps", cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}}, survey(cxv1.SurveyTypeNPS), ""},
		{"nps on csat", cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}}, survey(cxv1.SurveyTypeCSAT),
			`spec.objective.nps needs a NPS survey, but Survey "s" is of type CSAT`},
		{"ces on nps", cxv1.Objective{CES: &cxv1.CESObjective{Min: resource.MustParse("5")}}, survey(cxv1.SurveyTypeNPS),
			`spec.objective.ces needs a CES survey, but Survey "s" is of type NPS`},
		{"response rate on any survey", cxv1.Objective{ResponseRate: &cxv1.PercentObjective{Min: resource.MustParse("20")}}, survey(cxv1.SurveyTypeCES), ""},
		{"wait restating the touchpoint's threshold", wait("120s"), chatWithThreshold, ""},
		{"wait with a threshold the touchpoint lacks", wait("2m"), chat,
			`Touchpoint "chat" has no spec.waitTime.threshold: waits are judged against the Touchpoint's threshold, so set it to 2m there`},
		{"wait with another threshold", wait("5m"), chatWithThreshold,
			`spec.objective.waitTime.threshold is 5m but Touchpoint "chat" judges waits against 2m: waits are judged against the Touchpoint's threshold, so use the same one or leave it out`},
		{"wait with touchpoint threshold", wait(""), chatWithThreshold, ""},
		{"wait with no threshold anywhere", wait(""), chat,
			`spec.objective.waitTime.threshold is not set and Touchpoint "chat" has no spec.waitTime.threshold`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := slo.FromSpec(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			got := objectiveMismatch(o, tc.subject)
			if got != tc.want {
				t.Errorf("objectiveMismatch() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTargetMetricsCollect(t *testing.T) {
	m := &targetMetrics{byTarget: map[targetKey]targetSample{}}
	m.set("shop", "chat-wait", targetSample{subjectKind: "Touchpoint", value: 97.5, objective: 95, breached: 0, budget: 0.5})
	m.set("shop", "new", targetSample{subjectKind: "Survey", value: math.NaN(), objective: 40, breached: 0, budget: math.NaN()})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	want := `
# HELP cxop_target_value Current value of a CXTarget's objective over its window (NPS, percent, or CES mean). Absent while the target has insufficient data.
# TYPE cxop_target_value gauge
cxop_target_value{name="chat-wait",namespace="shop",subject_kind="Touchpoint"} 97.5
# HELP cxop_target_error_budget_remaining Share of a CXTarget's error budget left over its window, as a ratio (1 = untouched; negative when overspent). Absent while the target has insufficient data.
# TYPE cxop_target_error_budget_remaining gauge
cxop_target_error_budget_remaining{name="chat-wait",namespace="shop",subject_kind="Touchpoint"} 0.5
# HELP cxop_target_objective The value a CXTarget's objective requires (NPS minimum, percent, or CES mean).
# TYPE cxop_target_objective gauge
cxop_target_objective{name="chat-wait",namespace="shop",subject_kind="Touchpoint"} 95
cxop_target_objective{name="new",namespace="shop",subject_kind="Survey"} 40
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cxop_target_value", "cxop_target_objective", "cxop_target_error_budget_remaining"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "cxop_target_breached"); n != 2 {
		t.Errorf("cxop_target_breached has %d series, want 2", n)
	}
	m.forget("shop", "chat-wait")
	if n := testutil.CollectAndCount(m); n != 2 {
		t.Errorf("after forget: %d series, want 2 (objective and breached of the other target)", n)
	}
}

// TestCollectorOutageKeepsTheLastVerdict: a collector restart says nothing
// new about a target. The Breached state, its numbers and
// cxop_target_breached stay as last evaluated (TargetMet Unknown says so)
// instead of clearing to what a dashboard reads as a recovery; a spec change
// during the outage clears them, since they judged another objective.
func TestCollectorOutageKeepsTheLastVerdict(t *testing.T) {
	cxt := &cxv1.CXTarget{}
	cxt.Namespace, cxt.Name, cxt.Generation = "shop", "csat-85", 1
	cxt.Spec.SurveyRef = &cxv1.LocalObjectReference{Name: "delivery-csat"}
	cxt.Spec.Objective.CSAT = &cxv1.PercentObjective{Min: resource.MustParse("85")}
	o, err := slo.FromSpec(cxt.Spec.Objective)
	if err != nil {
		t.Fatal(err)
	}
	breached := &targetResult{verdict: slo.Verdict{State: cxv1.TargetStateBreached, Samples: 40, HasValue: true, Current: 50, Lower: 35, Upper: 65,
		HasBudget: true, BudgetRemaining: -41.2, BurnRates: []slo.BurnRate{{Window: "1h", Rate: 3.33}}, Reason: "below"}}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	setCXTargetStatus(cxt, targetObservation{objective: o, result: breached}, now)
	exportTargetMetrics(cxt, o, true, breached)

	down := readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "connection refused"}
	setCXTargetStatus(cxt, targetObservation{readiness: down, objective: o}, now.Add(time.Minute))
	exportTargetMetrics(cxt, o, true, nil)
	st := cxt.Status
	if st.State != cxv1.TargetStateBreached || st.Current != "50" || st.ErrorBudgetRemaining != "-41.2" || st.Samples != 40 {
		t.Errorf("during the outage: state %q, current %q, budget %q, samples %d; want the last verdict", st.State, st.Current, st.ErrorBudgetRemaining, st.Samples)
	}
	if !st.LastTransitionTime.Time.Equal(now) {
		t.Errorf("lastTransitionTime moved to %s during the outage", st.LastTransitionTime)
	}
	met := meta.FindStatusCondition(st.Conditions, cxv1.TargetMetCondition)
	if met.Status != metav1.ConditionUnknown || met.Reason != cxv1.CollectorUnavailableReason || !strings.Contains(met.Message, "last evaluated") {
		t.Errorf("TargetMet during the outage: %+v", met)
	}
	if ready := meta.FindStatusCondition(st.Conditions, cxv1.ReadyCondition); ready.Status != metav1.ConditionFalse {
		t.Errorf("Ready during the outage: %+v", ready)
	}
	if s := targets.byTarget[targetKey{"shop", "csat-85"}]; s.breached != 1 || s.value != 50 || math.Abs(s.budget+0.412) > 1e-9 {
		t.Errorf("metrics during the outage: %+v; want breached 1, value 50, budget -0.412", s)
	}

	// Still down on the next loop: still the last verdict.
	setCXTargetStatus(cxt, targetObservation{readiness: down, objective: o}, now.Add(2*time.Minute))
	if cxt.Status.State != cxv1.TargetStateBreached {
		t.Errorf("second loop of the outage: state %q", cxt.Status.State)
	}

	// An API read failing in passing says nothing new either.
	readFailed := readiness{failures: []failure{{reason: cxv1.ReadFailedReason, message: "get Journey shop/help: etcd is restarting"}}}
	setCXTargetStatus(cxt, targetObservation{readiness: readFailed, objective: o}, now.Add(2*time.Minute))
	exportTargetMetrics(cxt, o, true, nil)
	met = meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition)
	if cxt.Status.State != cxv1.TargetStateBreached || met.Reason != cxv1.ReadFailedReason || !strings.Contains(met.Message, "etcd is restarting") {
		t.Errorf("a failed read: state %q, TargetMet %+v; want the last verdict, saying why", cxt.Status.State, met)
	}
	if s := targets.byTarget[targetKey{"shop", "csat-85"}]; s.breached != 1 {
		t.Errorf("metrics after a failed read: breached %v", s.breached)
	}

	// The objective changes while the collector is down: nothing to keep.
	cxt.Generation = 2
	setCXTargetStatus(cxt, targetObservation{readiness: down, objective: o}, now.Add(3*time.Minute))
	exportTargetMetrics(cxt, o, true, nil)
	if cxt.Status.State != "" || cxt.Status.Current != "" {
		t.Errorf("after a spec change during the outage: state %q, current %q; want cleared", cxt.Status.State, cxt.Status.Current)
	}
	if s := targets.byTarget[targetKey{"shop", "csat-85"}]; s.breached != 0 {
		t.Errorf("after a spec change during the outage: breached %v", s.breached)
	}
	forgetTargetMetrics("shop", "csat-85")
}

// TestNoPrometheusRuleKindShowsHoweverFarTheLoopGets: in a cluster that
// served no PrometheusRule kind at start, a target that wants alerts says
// so, naming the restart, even while its subject is missing; one that
// wants none has no AlertRules condition.
func TestNoPrometheusRuleKindShowsHoweverFarTheLoopGets(t *testing.T) {
	sch := runtime.NewScheme()
	if err := cxv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	r := &CXTargetReconciler{Client: fake.NewClientBuilder().WithScheme(sch).Build()}
	cxt := &cxv1.CXTarget{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "chat-wait", Generation: 1}, Spec: cxv1.CXTargetSpec{
		TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
		Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
	}}
	now := time.Now()
	obs := r.observe(context.Background(), cxt, now)
	if len(obs.missing) != 1 {
		t.Fatalf("missing %v, want the Touchpoint", obs.missing)
	}
	setCXTargetStatus(cxt, obs, now)
	c := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.AlertRulesCondition)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != cxv1.NoPrometheusRuleKindReason || !strings.Contains(c.Message, "restart the manager") {
		t.Errorf("AlertRules %+v, want False/NoPrometheusRuleKind naming the restart", c)
	}

	cxt.Spec.Alerting = &cxv1.Alerting{BurnRateAlerts: ptr.To(false)}
	cxt.Generation = 2
	setCXTargetStatus(cxt, r.observe(context.Background(), cxt, now), now)
	if c := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.AlertRulesCondition); c != nil {
		t.Errorf("AlertRules %+v with burn-rate alerts off", c)
	}
}
