package controllers

import (
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// SetupWithManager registers the Journey reconciler. A Touchpoint or Survey
// that is created or deleted wakes the Journeys that name it, found through
// field indexes.
func (r *JourneyReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	c := mgr.GetClient()
	return ctrl.NewControllerManagedBy(mgr).
		For(&cxv1.Journey{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&cxv1.Touchpoint{},
			enqueueReferrers(c, &cxv1.JourneyList{}, journeyTouchpointsIndex, client.Object.GetName),
			builder.WithPredicates(existencePredicate())).
		Watches(&cxv1.Survey{},
			enqueueReferrers(c, &cxv1.JourneyList{}, journeySurveysIndex, client.Object.GetName),
			builder.WithPredicates(existencePredicate())).
		Named("journey").
		WithOptions(opts).
		Complete(r)
}
