package controllers

import (
	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// setJourneyStatus writes the conditions and observedGeneration that obs
// implies.
func setJourneyStatus(jny *cxv1.Journey, obs readiness) {
	setReadinessConditions(&jny.Status.Conditions, jny.Generation, obs)
	jny.Status.ObservedGeneration = jny.Generation
}
