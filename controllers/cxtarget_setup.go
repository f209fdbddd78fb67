package controllers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// SetupWithManager registers the CXTarget reconciler. Changes to a subject's
// spec matter too (a Survey's type, a Touchpoint's threshold), so subjects
// are watched for creation, deletion and generation changes.
func (r *CXTargetReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	c := mgr.GetClient()
	bySubject := func(kind string) func(client.Object) string {
		return func(o client.Object) string { return subjectKey(kind, o.GetName()) }
	}
	subjectChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	b := ctrl.NewControllerManagedBy(mgr).
		For(&cxv1.CXTarget{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&cxv1.Journey{}, enqueueReferrers(c, &cxv1.CXTargetList{}, targetSubjectIndex, bySubject("Journey")), subjectChanged).
		Watches(&cxv1.Touchpoint{}, enqueueReferrers(c, &cxv1.CXTargetList{}, targetSubjectIndex, bySubject("Touchpoint")), subjectChanged).
		Watches(&cxv1.Survey{}, enqueueReferrers(c, &cxv1.CXTargetList{}, targetSubjectIndex, bySubject("Survey")), subjectChanged)
	if r.PrometheusRules {
		// The targets' PrometheusRules, metadata only (their spec is the
		// manager's to write, not to read back), so that one deleted or
		// edited by hand is written again (ruleEvents).
		rules := &metav1.PartialObjectMetadata{}
		rules.SetGroupVersionKind(PrometheusRuleGVK)
		b = b.WatchesMetadata(rules, r.ruleEvents(), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[ManagedByLabel] == ManagedByValue && o.GetLabels()[targetRuleLabel] != ""
		})))
	}
	return b.Named("cxtarget").WithOptions(opts).Complete(r)
}
