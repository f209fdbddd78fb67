package slo

import (
	"fmt"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// MismatchOnSurvey explains why the objective cannot be measured on the
// Survey, or returns "" when it can: a score objective needs a survey of
// its type. The schema already keeps touchpoint objectives off Surveys.
func (o Objective) MismatchOnSurvey(s *cxv1.Survey) string {
	if want := o.SurveyType(); want != "" && s.Spec.Type != want {
		return fmt.Sprintf("%s needs a %s survey, but Survey %q is of type %s", o.Field(), want, s.Name, s.Spec.Type)
	}
	return ""
}

// MismatchOnTouchpoint explains why the objective cannot be measured at
// the Touchpoint, or returns "". The collector counts compliant waits
// against the Touchpoint's own threshold (within its business hours), so a
// wait-time objective may restate that threshold but not name another one.
func (o Objective) MismatchOnTouchpoint(tp *cxv1.Touchpoint) string {
	if !o.kind().touchpointThreshold {
		return ""
	}
	if tp.Spec.WaitTime == nil {
		if o.Threshold == "" {
			return fmt.Sprintf("%s.threshold is not set and Touchpoint %q has no spec.waitTime.threshold", o.Field(), tp.Name)
		}
		return fmt.Sprintf("Touchpoint %q has no spec.waitTime.threshold: waits are judged against the Touchpoint's threshold, so set it to %s there", tp.Name, o.Threshold)
	}
	if o.Threshold == "" {
		return ""
	}
	want, err1 := o.Threshold.Parse()
	have, err2 := tp.Spec.WaitTime.Threshold.Parse()
	if err1 == nil && err2 == nil && want != have {
		return fmt.Sprintf("%s.threshold is %s but Touchpoint %q judges waits against %s: waits are judged against the Touchpoint's threshold, so use the same one or leave it out",
			o.Field(), o.Threshold, tp.Name, tp.Spec.WaitTime.Threshold)
	}
	return ""
}
