package controllers

import (
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// SetupWithManager registers the Touchpoint reconciler. Status writes do not
// change metadata.generation, so the generation predicate keeps the
// reconciler from waking itself up. A namespace's collector that cannot be
// written, or can be again, wakes its Touchpoints.
func (r *TouchpointReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&cxv1.Touchpoint{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(r.Live.collectorChangeSource(mgr.GetClient(), &cxv1.TouchpointList{})).
		Named("touchpoint").
		WithOptions(opts).
		Complete(r)
}
