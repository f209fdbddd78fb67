package controllers

import (
	"fmt"

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
// observedGeneration that obs implies.
func setCXTargetStatus(cxt *cxv1.CXTarget, obs readiness) {
	setReadinessConditions(&cxt.Status.Conditions, cxt.Generation, obs)
	cxt.Status.Objective = objectiveText(cxt.Spec.Objective)
	cxt.Status.ObservedGeneration = cxt.Generation
}

// decimal renders a quantity as a plain decimal ("99.5"), not in the
// canonical quantity form ("99500m") that String returns.
func decimal(q resource.Quantity) string {
	return q.AsDec().String()
}
