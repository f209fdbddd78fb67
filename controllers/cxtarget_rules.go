package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/promrules"
	"github.com/cxop-dev/cxop/internal/slo"
)

// PrometheusRuleGVK is the Prometheus Operator's rule kind. cxop writes it
// as unstructured data, so the Prometheus Operator's API module is not a
// dependency and its CRDs are never required.
var PrometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}

// HasKind reports whether the cluster serves gvk, for optional
// integrations detected at start.
func HasKind(mapper meta.RESTMapper, gvk schema.GroupVersionKind) bool {
	_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	return err == nil
}

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=prometheusrules,verbs=get;list;watch;create;update;delete

// targetRuleLabel names, on a PrometheusRule, the CXTarget it holds the
// alerts of.
const targetRuleLabel = "cx.cxop.dev/cxtarget"

// prometheusRuleName names a target's PrometheusRule.
func prometheusRuleName(target string) string { return "cxop-" + target }

// applyRules writes the target's PrometheusRule, or deletes it when the
// target wants no burn-rate alerts or the rules cannot express it, and
// returns the AlertRules condition that says which (nil when alerts are
// turned off). Rules never keep a target from being judged: what they
// cannot express is a reason on the condition, and a write the API server
// refuses is one too, returned as well so the reconcile is retried.
func (r *CXTargetReconciler) applyRules(ctx context.Context, cxt *cxv1.CXTarget, o slo.Objective, scope slo.Scope) (*metav1.Condition, error) {
	wanted := cxt.Spec.Alerting.GetBurnRateAlerts()
	if !r.PrometheusRules {
		return r.noRuleKind(cxt), nil
	}
	cond := &metav1.Condition{Type: cxv1.AlertRulesCondition, Status: metav1.ConditionFalse, ObservedGeneration: cxt.Generation}
	rule := &unstructured.Unstructured{}
	rule.SetGroupVersionKind(PrometheusRuleGVK)
	rule.SetNamespace(cxt.Namespace)
	rule.SetName(prometheusRuleName(cxt.Name))

	var data []byte
	if wanted {
		kind, _ := cxt.Spec.Subject()
		window, _ := cxt.Spec.GetWindow().Parse() // checked by checkCXTargetSpec
		labels := slo.RuleLabels{Namespace: cxt.Namespace, Name: cxt.Name, SubjectKind: kind}
		if a := cxt.Spec.Alerting; a != nil {
			labels.Labels, labels.RunbookURL = a.Labels, a.RunbookURL
		}
		target, why := o.AlertRules(window, scope, labels)
		var groups promrules.Groups
		var err error
		if why == nil {
			if groups, err = promrules.Generate(target); err != nil {
				why = &slo.Inexpressible{Reason: cxv1.NotExpressibleReason, Message: "Burn-rate alerts cannot be generated: " + err.Error()}
			}
		}
		if why != nil {
			cond.Reason, cond.Message = why.Reason, why.Message
			wanted = false
		} else if data, err = json.Marshal(groups); err != nil {
			return nil, err
		} else {
			cond.Status, cond.Reason = metav1.ConditionTrue, cxv1.AlertRulesAppliedReason
			cond.Message = fmt.Sprintf("PrometheusRule %s holds the burn-rate alerts", rule.GetName())
		}
	} else {
		cond = nil
	}
	// The rules change only with the target's spec or scope, or when
	// someone else changes the PrometheusRule (ruleEvents forgets what was
	// applied then); remembering what was applied keeps a periodic refresh
	// from reading the PrometheusRule (uncached, as unstructured) every
	// time.
	key := client.ObjectKeyFromObject(cxt)
	applied := &appliedRule{uid: cxt.UID, sum: sha256.Sum256(data)}
	last, seen := r.appliedRules.Load(key)
	if seen && last.(*appliedRule).same(applied) {
		return cond, nil
	}
	// remember stores what was applied unless an event forgot it while it
	// was written (a deletion racing the write): then the next reconcile
	// writes again rather than trusting a rule that may be gone.
	remember := func(generation int64) {
		applied.generation = generation
		if seen {
			r.appliedRules.CompareAndSwap(key, last, applied)
		} else {
			r.appliedRules.LoadOrStore(key, applied)
		}
	}
	refused := func(what string, err error) (*metav1.Condition, error) {
		r.appliedRules.Delete(key)
		err = fmt.Errorf("%s PrometheusRule %s/%s: %w", what, cxt.Namespace, rule.GetName(), err)
		return &metav1.Condition{Type: cxv1.AlertRulesCondition, Status: metav1.ConditionFalse, ObservedGeneration: cxt.Generation,
			Reason: cxv1.PrometheusRuleFailedReason, Message: "The API server refused to " + err.Error()}, err
	}
	if !wanted {
		if err := r.Delete(ctx, rule); client.IgnoreNotFound(err) != nil && !meta.IsNoMatchError(err) {
			return refused("delete", err)
		}
		remember(0)
		return cond, nil
	}
	groups, err := ruleGroups(data)
	if err != nil {
		return nil, err
	}
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, rule, func() error {
		labels := rule.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[ManagedByLabel] = ManagedByValue
		labels[targetRuleLabel] = cxt.Name
		rule.SetLabels(labels)
		if err := unstructured.SetNestedField(rule.Object, groups, "spec", "groups"); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(cxt, rule, r.Scheme())
	})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		// The CRD went away after start; alerts resume on restart.
		cond.Status, cond.Reason = metav1.ConditionFalse, cxv1.NoPrometheusRuleKindReason
		cond.Message = "The cluster no longer serves monitoring.coreos.com/v1 PrometheusRule: reinstall the Prometheus Operator's CRDs and restart the manager for burn-rate alerts"
		return cond, nil
	}
	if err != nil {
		return refused("write", err)
	}
	remember(rule.GetGeneration())
	return cond, nil
}

// noRuleKind is the AlertRules condition of a target that wants burn-rate
// alerts in a cluster that served no PrometheusRule kind when the manager
// started (nil when it wants none). The kind is looked up once, at start:
// the condition says so, and that the manager needs a restart once the
// Prometheus Operator's CRDs are installed.
func (r *CXTargetReconciler) noRuleKind(cxt *cxv1.CXTarget) *metav1.Condition {
	if r.PrometheusRules || !cxt.Spec.Alerting.GetBurnRateAlerts() {
		return nil
	}
	return &metav1.Condition{Type: cxv1.AlertRulesCondition, Status: metav1.ConditionFalse, ObservedGeneration: cxt.Generation,
		Reason: cxv1.NoPrometheusRuleKindReason,
		Message: "The cluster served no monitoring.coreos.com/v1 PrometheusRule when the manager started: " +
			"install the Prometheus Operator's CRDs and restart the manager for burn-rate alerts"}
}

// appliedRule is what a target's PrometheusRule was last written from: the
// target's UID (a target deleted and created again under the same name
// needs its rule again, the old one going with its owner) and a hash of
// the rule groups; and the generation the write left the PrometheusRule
// at, which tells ruleEvents an update of someone else's from the echo of
// the manager's own write. The zero value, stored by ruleEvents, matches
// nothing.
type appliedRule struct {
	uid        types.UID
	sum        [sha256.Size]byte
	generation int64
}

// same reports whether a was written from what b would write.
func (a *appliedRule) same(b *appliedRule) bool {
	return a.uid != "" && a.uid == b.uid && a.sum == b.sum
}

// ruleEvents wakes the target whose PrometheusRule someone else deleted or
// changed, after forgetting what was applied, so that its reconcile writes
// the rule again and AlertRules stays true to what the cluster holds. The
// echo of the manager's own write (the generation it left) and creations
// are ignored.
func (r *CXTargetReconciler) ruleEvents() handler.EventHandler {
	ownerOf := func(obj client.Object) (types.NamespacedName, bool) {
		owner := metav1.GetControllerOf(obj)
		if owner == nil || owner.Kind != "CXTarget" {
			return types.NamespacedName{}, false
		}
		if gv, err := schema.ParseGroupVersion(owner.APIVersion); err != nil || gv.Group != cxv1.GroupVersion.Group {
			return types.NamespacedName{}, false
		}
		return types.NamespacedName{Namespace: obj.GetNamespace(), Name: owner.Name}, true
	}
	wake := func(key types.NamespacedName, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		// A new value, never equal to the one a reconcile in flight
		// loaded: its remember then stores nothing.
		r.appliedRules.Store(key, &appliedRule{})
		q.Add(reconcile.Request{NamespacedName: key})
	}
	return handler.Funcs{
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			key, ok := ownerOf(e.ObjectNew)
			if !ok {
				return
			}
			if last, seen := r.appliedRules.Load(key); seen && last.(*appliedRule).generation == e.ObjectNew.GetGeneration() {
				return
			}
			wake(key, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if key, ok := ownerOf(e.Object); ok {
				wake(key, q)
			}
		},
	}
}

// ruleGroups is the value of a PrometheusRule's spec.groups for the JSON
// of promrules.Groups, as unstructured objects hold it.
func ruleGroups(data []byte) (any, error) {
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, err
	}
	return spec["groups"], nil
}
