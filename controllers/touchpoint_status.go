package controllers

import (
	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// checkTouchpointSpec reports what the schema cannot: a window that
// overflows, a time zone that does not exist.
func checkTouchpointSpec(spec *cxv1.TouchpointSpec) error {
	errs := []error{checkDuration("spec.window", spec.Window)}
	if spec.WaitTime != nil {
		errs = append(errs, checkDuration("spec.waitTime.threshold", spec.WaitTime.Threshold))
	}
	if spec.BusinessHours != nil {
		errs = append(errs, checkTimeZone("spec.businessHours.timeZone", spec.BusinessHours.GetTimeZone()))
	}
	return firstError(errs...)
}

// setTouchpointStatus writes the conditions and observedGeneration that obs
// implies.
func setTouchpointStatus(tp *cxv1.Touchpoint, obs readiness) {
	setReadinessConditions(&tp.Status.Conditions, tp.Generation, obs)
	tp.Status.ObservedGeneration = tp.Generation
}
