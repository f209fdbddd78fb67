package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// SetupWithManager registers the Survey reconciler. A Touchpoint that is
// created or deleted wakes the Surveys whose trigger names it, found through
// the trigger index.
func (r *SurveyReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&cxv1.Survey{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A wave's run updates its CronJob's lastScheduleTime.
		Owns(&batchv1.CronJob{}).
		// A namespace's collector that cannot be written, or can be again.
		WatchesRawSource(r.Live.collectorChangeSource(mgr.GetClient(), &cxv1.SurveyList{})).
		Watches(&cxv1.Touchpoint{},
			enqueueReferrers(mgr.GetClient(), &cxv1.SurveyList{}, surveyTriggerTouchpointsIndex, client.Object.GetName),
			builder.WithPredicates(existencePredicate())).
		Named("survey").
		WithOptions(opts).
		Complete(r)
}
