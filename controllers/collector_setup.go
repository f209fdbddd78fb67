package controllers

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// SetupWithManager registers the collector reconciler. Every Touchpoint or
// Survey event, and every change to an object cxop made for a collector
// (a token Secret deleted to rotate it, a ConfigMap edited by hand), wakes
// the reconcile of its namespace.
func (r *CollectorReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	toNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: CollectorName}}}
	})
	managed := builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
		return obj.GetLabels()[ManagedByLabel] == ManagedByValue
	}))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("collector").
		Watches(&cxv1.Touchpoint{}, toNamespace, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&cxv1.Survey{}, toNamespace, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, toNamespace, managed).
		Watches(&corev1.ConfigMap{}, toNamespace, managed)
	if err := r.watchNamespaces(mgr, b); err != nil {
		return err
	}
	if _, ok := r.Runtime.(*KubeCollectorRuntime); ok {
		b = b.Watches(&appsv1.StatefulSet{}, toNamespace, managed).
			Watches(&appsv1.Deployment{}, toNamespace, managed).
			Watches(&policyv1.PodDisruptionBudget{}, toNamespace, managed).
			Watches(&corev1.Service{}, toNamespace, managed)
	}
	return b.WithOptions(opts).Complete(r)
}
