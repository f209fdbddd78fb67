package controllers

import (
	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// checkSurveySpec reports what the schema cannot: durations that overflow,
// unknown time zones, cron expressions that do not parse.
func checkSurveySpec(spec *cxv1.SurveySpec) error {
	errs := []error{
		checkDuration("spec.window", spec.Window),
		checkDuration("spec.linkTTL", spec.LinkTTL),
	}
	if spec.Trigger != nil {
		errs = append(errs, checkDuration("spec.trigger.delay", spec.Trigger.Delay))
	}
	if spec.Schedule != nil {
		errs = append(errs,
			checkCron("spec.schedule.cron", spec.Schedule.Cron),
			checkTimeZone("spec.schedule.timeZone", spec.Schedule.GetTimeZone()))
	}
	if spec.Throttle != nil {
		errs = append(errs, checkDuration("spec.throttle.perCustomer", spec.Throttle.PerCustomer))
	}
	return firstError(errs...)
}

// setSurveyStatus writes the conditions and observedGeneration that obs
// implies.
func setSurveyStatus(svy *cxv1.Survey, obs readiness) {
	setReadinessConditions(&svy.Status.Conditions, svy.Generation, obs)
	svy.Status.ObservedGeneration = svy.Generation
}
