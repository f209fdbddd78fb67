package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// Field indexes let a change to a referenced object find the objects that
// reference it in the informer cache, without listing the namespace.
const (
	// journeyTouchpointsIndex indexes Journeys by every Touchpoint a stage names.
	journeyTouchpointsIndex = ".spec.stages.touchpoints"
	// journeySurveysIndex indexes Journeys by every Survey they name.
	journeySurveysIndex = ".spec.surveys"
	// surveyTriggerTouchpointsIndex indexes Surveys by their trigger's Touchpoints.
	surveyTriggerTouchpointsIndex = ".spec.trigger.touchpoints"
	// targetSubjectIndex indexes CXTargets by subject, as "Kind/name".
	targetSubjectIndex = ".spec.subject"
)

func subjectKey(kind, name string) string { return kind + "/" + name }

func journeyTouchpoints(obj client.Object) []string {
	j := obj.(*cxv1.Journey)
	seen := map[string]bool{}
	var names []string
	for _, s := range j.Spec.Stages {
		for _, tp := range s.Touchpoints {
			if !seen[tp] {
				seen[tp] = true
				names = append(names, tp)
			}
		}
	}
	return names
}

func journeySurveys(obj client.Object) []string {
	return obj.(*cxv1.Journey).Spec.Surveys
}

func surveyTriggerTouchpoints(obj client.Object) []string {
	s := obj.(*cxv1.Survey)
	if s.Spec.Trigger == nil {
		return nil
	}
	return s.Spec.Trigger.Touchpoints
}

func targetSubject(obj client.Object) []string {
	kind, name := obj.(*cxv1.CXTarget).Spec.Subject()
	if kind == "" {
		return nil
	}
	return []string{subjectKey(kind, name)}
}

// setupIndexes registers every field index the reconcilers use. Indexes are
// global to the manager's cache, so they are registered once, here.
func setupIndexes(ctx context.Context, mgr manager.Manager) error {
	idx := mgr.GetFieldIndexer()
	for _, i := range []struct {
		obj   client.Object
		field string
		fn    client.IndexerFunc
	}{
		{&cxv1.Journey{}, journeyTouchpointsIndex, journeyTouchpoints},
		{&cxv1.Journey{}, journeySurveysIndex, journeySurveys},
		{&cxv1.Survey{}, surveyTriggerTouchpointsIndex, surveyTriggerTouchpoints},
		{&cxv1.CXTarget{}, targetSubjectIndex, targetSubject},
	} {
		if err := idx.IndexField(ctx, i.obj, i.field, i.fn); err != nil {
			return fmt.Errorf("index %T by %s: %w", i.obj, i.field, err)
		}
	}
	return nil
}

// enqueueReferrers returns an event handler that, for a changed object,
// enqueues every object of list's kind in the same namespace whose field
// index holds key(changed object).
func enqueueReferrers(c client.Client, list client.ObjectList, field string, key func(client.Object) string) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		l := list.DeepCopyObject().(client.ObjectList)
		if err := c.List(ctx, l, client.InNamespace(obj.GetNamespace()), client.MatchingFields{field: key(obj)}); err != nil {
			// The cache fails here only when the index is missing, a
			// programming error the tests catch; there is nothing to retry.
			ctrl.LoggerFrom(ctx).Error(err, "list referrers", "field", field)
			return nil
		}
		var reqs []reconcile.Request
		_ = meta.EachListItem(l, func(o runtime.Object) error {
			co := o.(client.Object)
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(co)})
			return nil
		})
		return reqs
	})
}

// existencePredicate passes only creations and deletions: a reference
// resolves or stops resolving only then.
func existencePredicate() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return true },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
