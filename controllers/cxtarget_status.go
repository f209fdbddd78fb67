package controllers

import (
	"fmt"
	"math"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/slo"
)

// setCXTargetStatus writes the whole status obs implies: conditions,
// objective text, observedGeneration and the verdict of obs.result. While
// the numbers cannot be read, the last verdict of this generation stays,
// with TargetMet Unknown saying it is the last evaluated and Stale marking
// it (keepsLastVerdict). Without a result otherwise (the subject is
// missing, the spec changed) the numbers and state are cleared, and
// TargetMet is Unknown. obs.rules is the AlertRules condition of this
// loop; it is kept as it was when the loop did not get as far as the
// rules.
func setCXTargetStatus(cxt *cxv1.CXTarget, obs targetObservation, now time.Time) {
	o, res := obs.objective, obs.result
	keep := keepsLastVerdict(cxt, obs.readiness, res)
	setReadinessConditions(&cxt.Status.Conditions, cxt.Generation, obs.readiness)
	stale := obs.stale
	if !keep {
		stale = staleness{}
	}
	setStaleCondition(&cxt.Status.Conditions, stale)
	st := &cxt.Status
	st.Objective = ""
	if obs.invalid == nil {
		st.Objective = o.Text()
	}
	st.ObservedGeneration = cxt.Generation
	switch {
	case obs.rules != nil:
		meta.SetStatusCondition(&st.Conditions, *obs.rules)
	case res != nil || !cxt.Spec.Alerting.GetBurnRateAlerts():
		meta.RemoveStatusCondition(&st.Conditions, cxv1.AlertRulesCondition)
	}
	if keep {
		reason, why := obs.unread()
		msg := fmt.Sprintf("The collector cannot answer (%s): state %s and the numbers are the last evaluated", why, st.State)
		if reason == cxv1.ReadFailedReason {
			msg = fmt.Sprintf("A read failed (%s): state %s and the numbers are the last evaluated", why, st.State)
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: cxv1.TargetMetCondition, Status: metav1.ConditionUnknown, ObservedGeneration: cxt.Generation,
			Reason: reason, Message: msg,
		})
		return
	}
	prev := st.State
	st.State, st.Current, st.CurrentLower, st.CurrentUpper, st.Samples = "", "", "", "", 0
	st.ErrorBudgetRemaining, st.BurnRates, st.BudgetAttribution = "", nil, nil

	met := metav1.Condition{Type: cxv1.TargetMetCondition, Status: metav1.ConditionUnknown, ObservedGeneration: cxt.Generation}
	if res == nil {
		met.Reason, met.Message = notEvaluatedReason, "The target is not evaluated: see the Ready condition"
	} else {
		v := res.verdict
		st.State = v.State
		st.Samples = int64(v.Samples)
		if v.HasValue {
			st.Current, st.CurrentLower, st.CurrentUpper = o.Format(v.Current), o.Format(v.Lower), o.Format(v.Upper)
		}
		if v.HasBudget {
			st.ErrorBudgetRemaining = slo.Decimal(v.BudgetRemaining, 1)
		}
		for _, b := range v.BurnRates {
			st.BurnRates = append(st.BurnRates, cxv1.BurnRate{Window: b.Window, Rate: slo.Decimal(b.Rate, 2)})
		}
		st.BudgetAttribution = res.attribution
		met.Reason, met.Message = string(v.State), v.Reason
		switch v.State {
		case cxv1.TargetStateMet:
			met.Status = metav1.ConditionTrue
		case cxv1.TargetStateAtRisk, cxv1.TargetStateBreached:
			met.Status = metav1.ConditionFalse
		}
	}
	meta.SetStatusCondition(&st.Conditions, met)
	if st.State != prev && st.State != "" {
		st.LastTransitionTime = &metav1.Time{Time: now.Truncate(time.Second)}
	}
}

// keepsLastVerdict reports whether status keeps the verdict it shows
// rather than clearing it: the numbers could not be read (the collector
// cannot answer in a restart or a rollout, an API read failed in passing;
// see readiness.unread), which says nothing new about the target, and the
// verdict shown judged this generation of the spec. Cleared, a Breached
// target would read as recovered on every dashboard and alert for the
// length of a restart.
func keepsLastVerdict(cxt *cxv1.CXTarget, obs readiness, res *targetResult) bool {
	if reason, _ := obs.unread(); res != nil || reason == "" || cxt.Status.State == "" {
		return false
	}
	met := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition)
	return met != nil && met.ObservedGeneration == cxt.Generation && met.Reason != notEvaluatedReason
}

// notEvaluatedReason marks a TargetMet with no verdict behind it.
const notEvaluatedReason = "NotEvaluated"

// reportTarget shows the status just computed outside it: an event when
// the target's state crossed Breached (recordTargetTransition), and the
// manager's cxop_target_* metrics (exportTargetMetrics).
func reportTarget(rec events.EventRecorder, cxt *cxv1.CXTarget, obs targetObservation) {
	recordTargetTransition(rec, cxt, obs.objective, obs.wasState, cxt.Status.State)
	exportTargetMetrics(cxt, obs.objective, obs.invalid == nil, obs.result)
}

// recordTargetTransition emits TargetBreached when a target becomes
// Breached and TargetRecovered when it leaves Breached for Met or AtRisk;
// nothing otherwise, so an SRE's event stream holds transitions only.
func recordTargetTransition(rec events.EventRecorder, cxt *cxv1.CXTarget, o slo.Objective, before, after cxv1.TargetState) {
	if rec == nil || before == after {
		return
	}
	met := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition)
	msg := ""
	if met != nil {
		msg = met.Message
	}
	switch {
	case after == cxv1.TargetStateBreached:
		rec.Eventf(cxt, nil, corev1.EventTypeWarning, "TargetBreached", "Evaluate", "%s %s: %s", o.Name(), cxt.Status.Objective, msg)
	case before == cxv1.TargetStateBreached && (after == cxv1.TargetStateMet || after == cxv1.TargetStateAtRisk):
		rec.Eventf(cxt, nil, corev1.EventTypeNormal, "TargetRecovered", "Evaluate", "%s %s: %s", o.Name(), cxt.Status.Objective, msg)
	}
}

// exportTargetMetrics mirrors the verdict in the manager's metrics; the
// value and budget series exist only while there is a value to show.
func exportTargetMetrics(cxt *cxv1.CXTarget, o slo.Objective, valid bool, res *targetResult) {
	kind, _ := cxt.Spec.Subject()
	sample := targetSample{subjectKind: kind, value: math.NaN(), objective: math.NaN(), budget: math.NaN()}
	if valid {
		sample.objective = o.Target
	}
	v := keptVerdict(cxt)
	if res != nil {
		v = res.verdict
	}
	if v.State == cxv1.TargetStateBreached {
		sample.breached = 1
	}
	if v.HasValue && v.State != cxv1.TargetStateInsufficientData {
		sample.value = v.Current
	}
	if v.HasBudget {
		sample.budget = v.BudgetRemaining / 100
	}
	targets.set(cxt.Namespace, cxt.Name, sample)
}

// keptVerdict reads back the verdict status keeps while the numbers cannot
// be read (see keepsLastVerdict), so the metrics go on showing it;
// the zero verdict when status keeps none.
func keptVerdict(cxt *cxv1.CXTarget) slo.Verdict {
	st := &cxt.Status
	met := meta.FindStatusCondition(st.Conditions, cxv1.TargetMetCondition)
	if met == nil || met.Status != metav1.ConditionUnknown || (met.Reason != cxv1.CollectorUnavailableReason && met.Reason != cxv1.ReadFailedReason) || st.State == "" {
		return slo.Verdict{}
	}
	v := slo.Verdict{State: st.State}
	if c, err := strconv.ParseFloat(st.Current, 64); err == nil {
		v.HasValue, v.Current = true, c
	}
	if b, err := strconv.ParseFloat(st.ErrorBudgetRemaining, 64); err == nil {
		v.HasBudget, v.BudgetRemaining = true, b
	}
	return v
}
