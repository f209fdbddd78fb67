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

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// checkCXTargetSpec reports what the schema cannot: durations that overflow.
func checkCXTargetSpec(spec *cxv1.CXTargetSpec) error {
	errs := []error{checkDuration("spec.window", spec.Window)}
	if wt := spec.Objective.WaitTime; wt != nil {
		errs = append(errs, checkDuration("spec.objective.waitTime.threshold", wt.Threshold))
	}
	return firstError(errs...)
}

// objectiveMismatch explains why the objective cannot be measured on the
// subject, or returns "" when it can. The schema already pairs objectives
// with subject kinds; this checks what needs the subject itself.
func objectiveMismatch(spec *cxv1.CXTargetSpec, subject client.Object) string {
	obj := spec.Objective
	switch s := subject.(type) {
	case *cxv1.Survey:
		want := objectiveSurveyType(obj)
		if want != "" && s.Spec.Type != want {
			return fmt.Sprintf("spec.objective.%s needs a %s survey, but Survey %q is of type %s",
				objectiveName(obj), want, s.Name, s.Spec.Type)
		}
	case *cxv1.Touchpoint:
		if obj.WaitTime != nil {
			return waitThresholdMismatch(obj.WaitTime.Threshold, s)
		}
	}
	return ""
}

// waitThresholdMismatch explains why a wait-time objective cannot be
// measured at tp, or returns "". The collector counts compliant waits
// against the Touchpoint's own threshold (within its business hours), so
// an objective may restate that threshold but not name another one.
func waitThresholdMismatch(objective cxv1.Duration, tp *cxv1.Touchpoint) string {
	if tp.Spec.WaitTime == nil {
		if objective == "" {
			return fmt.Sprintf("spec.objective.waitTime.threshold is not set and Touchpoint %q has no spec.waitTime.threshold", tp.Name)
		}
		return fmt.Sprintf("Touchpoint %q has no spec.waitTime.threshold: waits are judged against the Touchpoint's threshold, so set it to %s there", tp.Name, objective)
	}
	if objective == "" {
		return ""
	}
	want, err1 := objective.Parse()
	have, err2 := tp.Spec.WaitTime.Threshold.Parse()
	if err1 == nil && err2 == nil && want != have {
		return fmt.Sprintf("spec.objective.waitTime.threshold is %s but Touchpoint %q judges waits against %s: waits are judged against the Touchpoint's threshold, so use the same one or leave it out",
			objective, tp.Name, tp.Spec.WaitTime.Threshold)
	}
	return ""
}

// objectiveSurveyType returns the survey type a score objective is measured
// on, or "" for objectives that are not scores.
func objectiveSurveyType(obj cxv1.Objective) cxv1.SurveyType {
	switch {
	case obj.NPS != nil:
		return cxv1.SurveyTypeNPS
	case obj.CSAT != nil:
		return cxv1.SurveyTypeCSAT
	case obj.CES != nil:
		return cxv1.SurveyTypeCES
	}
	return ""
}

// objectiveName returns the JSON name of the objective that is set.
func objectiveName(obj cxv1.Objective) string {
	switch {
	case obj.NPS != nil:
		return "nps"
	case obj.CSAT != nil:
		return "csat"
	case obj.CES != nil:
		return "ces"
	case obj.WaitTime != nil:
		return "waitTime"
	case obj.ResponseRate != nil:
		return "responseRate"
	case obj.FirstContactResolution != nil:
		return "firstContactResolution"
	}
	return ""
}

// objectiveText renders the objective for people, as status.objective and
// the Objective printer column show it: ">= 40", ">= 85%", "95% <= 2m".
func objectiveText(obj cxv1.Objective) string {
	switch {
	case obj.NPS != nil:
		return fmt.Sprintf(">= %d", obj.NPS.Min)
	case obj.CSAT != nil:
		return fmt.Sprintf(">= %s%%", decimal(obj.CSAT.Min))
	case obj.CES != nil:
		return fmt.Sprintf(">= %s", decimal(obj.CES.Min))
	case obj.WaitTime != nil:
		threshold := string(obj.WaitTime.Threshold)
		if threshold == "" {
			threshold = "threshold"
		}
		return fmt.Sprintf("%s%% <= %s", decimal(obj.WaitTime.Percent), threshold)
	case obj.ResponseRate != nil:
		return fmt.Sprintf(">= %s%%", decimal(obj.ResponseRate.Min))
	case obj.FirstContactResolution != nil:
		return fmt.Sprintf(">= %s%%", decimal(obj.FirstContactResolution.Min))
	}
	return ""
}

// setCXTargetStatus writes the conditions, objective text and
// observedGeneration that obs implies, and the verdict of res. While the
// collector cannot answer, the last verdict of this generation stays, with
// TargetMet Unknown saying it is the last evaluated (keepsLastVerdict).
// Without a result otherwise (the subject is missing, the spec changed) the
// numbers and state are cleared, and TargetMet is Unknown.
func setCXTargetStatus(cxt *cxv1.CXTarget, obs readiness, res *targetResult, now time.Time) {
	keep := keepsLastVerdict(cxt, obs, res)
	setReadinessConditions(&cxt.Status.Conditions, cxt.Generation, obs)
	st := &cxt.Status
	st.Objective = objectiveText(cxt.Spec.Objective)
	st.ObservedGeneration = cxt.Generation
	if keep {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: cxv1.TargetMetCondition, Status: metav1.ConditionUnknown, ObservedGeneration: cxt.Generation,
			Reason:  cxv1.CollectorUnavailableReason,
			Message: fmt.Sprintf("The collector cannot answer (%s): state %s and the numbers are the last evaluated", obs.collector, st.State),
		})
		return
	}
	prev := st.State
	st.State, st.Current, st.CurrentLower, st.CurrentUpper, st.Samples = "", "", "", "", 0
	st.ErrorBudgetRemaining, st.BurnRates, st.BudgetAttribution = "", nil, nil

	met := metav1.Condition{Type: cxv1.TargetMetCondition, Status: metav1.ConditionUnknown, ObservedGeneration: cxt.Generation}
	switch {
	case res == nil:
		met.Reason, met.Message = notEvaluatedReason, "The target is not evaluated: see the Ready condition"
	case res.notMeasurable != "":
		st.State = cxv1.TargetStateInsufficientData
		met.Reason, met.Message = string(cxv1.TargetStateInsufficientData), res.notMeasurable
	default:
		v := res.verdict
		st.State = v.State
		st.Samples = int64(v.Samples)
		s, _ := scaleOf(cxt.Spec.Objective)
		if v.HasValue {
			st.Current = decimalString(v.Current, s.digits)
			st.CurrentLower = decimalString(v.Lower, s.digits)
			st.CurrentUpper = decimalString(v.Upper, s.digits)
		}
		if v.HasBudget {
			st.ErrorBudgetRemaining = decimalString(v.BudgetRemaining, 1)
		}
		for i, w := range burnRateWindows {
			st.BurnRates = append(st.BurnRates, cxv1.BurnRate{Window: w, Rate: decimalString(v.BurnRates[i], 2)})
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
// rather than clearing it: the collector cannot answer (a restart, a
// rollout), which says nothing new about the target, and the verdict shown
// judged this generation of the spec. Cleared, a Breached target would read
// as recovered on every dashboard and alert for the length of a restart.
func keepsLastVerdict(cxt *cxv1.CXTarget, obs readiness, res *targetResult) bool {
	if res != nil || obs.collectorReason == "" || cxt.Status.State == "" {
		return false
	}
	met := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition)
	return met != nil && met.ObservedGeneration == cxt.Generation && met.Reason != notEvaluatedReason
}

// notEvaluatedReason marks a TargetMet with no verdict behind it.
const notEvaluatedReason = "NotEvaluated"

// recordTargetTransition emits TargetBreached when a target becomes
// Breached and TargetRecovered when it leaves Breached for Met or AtRisk;
// nothing otherwise, so an SRE's event stream holds transitions only.
func recordTargetTransition(rec events.EventRecorder, cxt *cxv1.CXTarget, before, after cxv1.TargetState) {
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
		rec.Eventf(cxt, nil, corev1.EventTypeWarning, "TargetBreached", "Evaluate", "%s %s: %s", objectiveName(cxt.Spec.Objective), cxt.Status.Objective, msg)
	case before == cxv1.TargetStateBreached && (after == cxv1.TargetStateMet || after == cxv1.TargetStateAtRisk):
		rec.Eventf(cxt, nil, corev1.EventTypeNormal, "TargetRecovered", "Evaluate", "%s %s: %s", objectiveName(cxt.Spec.Objective), cxt.Status.Objective, msg)
	}
}

// exportTargetMetrics mirrors the verdict in the manager's metrics; the
// value and budget series exist only while there is a value to show.
func exportTargetMetrics(cxt *cxv1.CXTarget, res *targetResult) {
	kind, _ := cxt.Spec.Subject()
	sample := targetSample{subjectKind: kind, value: math.NaN(), objective: math.NaN(), budget: math.NaN()}
	if s, err := scaleOf(cxt.Spec.Objective); err == nil {
		sample.objective = s.target
	}
	var v verdict
	switch {
	case res != nil && res.notMeasurable == "":
		v = res.verdict
	case res == nil:
		v = keptVerdict(cxt)
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

// keptVerdict reads back the verdict status keeps while the collector
// cannot answer (see keepsLastVerdict), so the metrics go on showing it;
// the zero verdict when status keeps none.
func keptVerdict(cxt *cxv1.CXTarget) verdict {
	st := &cxt.Status
	met := meta.FindStatusCondition(st.Conditions, cxv1.TargetMetCondition)
	if met == nil || met.Reason != cxv1.CollectorUnavailableReason || st.State == "" {
		return verdict{}
	}
	v := verdict{State: st.State}
	if c, err := strconv.ParseFloat(st.Current, 64); err == nil {
		v.HasValue, v.Current = true, c
	}
	if b, err := strconv.ParseFloat(st.ErrorBudgetRemaining, 64); err == nil {
		v.HasBudget, v.BudgetRemaining = true, b
	}
	return v
}

// decimal renders a quantity as a plain decimal ("99.5"), not in the
// canonical quantity form ("99500m") that String returns.
func decimal(q resource.Quantity) string {
	return q.AsDec().String()
}
