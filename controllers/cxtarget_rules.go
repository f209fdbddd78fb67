package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/promrules"
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

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=prometheusrules,verbs=get;create;update;delete

// prometheusRuleName names a target's PrometheusRule.
func prometheusRuleName(target string) string { return "cxop-" + target }

// applyRules writes the target's PrometheusRule, or deletes it when the
// target wants no burn-rate alerts or its objective has no metric to alert
// on. It is a no-op when the cluster has no PrometheusRule kind.
func (r *CXTargetReconciler) applyRules(ctx context.Context, cxt *cxv1.CXTarget, scope targetScope) error {
	if !r.PrometheusRules {
		return nil
	}
	rule := &unstructured.Unstructured{}
	rule.SetGroupVersionKind(PrometheusRuleGVK)
	rule.SetNamespace(cxt.Namespace)
	rule.SetName(prometheusRuleName(cxt.Name))

	target, ok := rulesTarget(cxt, scope)
	want := ok && cxt.Spec.Alerting.GetBurnRateAlerts()
	var data []byte
	if want {
		groups, err := promrules.Generate(target)
		if err != nil {
			return fmt.Errorf("generate alert rules: %w", err)
		}
		if data, err = json.Marshal(groups); err != nil {
			return err
		}
	}
	// The rules change only with the target's spec or scope; remembering
	// what was applied keeps a periodic refresh from reading the
	// PrometheusRule (uncached, as unstructured) every time.
	key := client.ObjectKeyFromObject(cxt)
	applied := appliedRule{uid: cxt.UID, sum: sha256.Sum256(data)}
	if last, seen := r.appliedRules.Load(key); seen && last.(appliedRule) == applied {
		return nil
	}
	if !want {
		if err := r.Delete(ctx, rule); client.IgnoreNotFound(err) != nil && !meta.IsNoMatchError(err) {
			return fmt.Errorf("delete PrometheusRule %s/%s: %w", cxt.Namespace, rule.GetName(), err)
		}
		r.appliedRules.Store(key, applied)
		return nil
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, rule, func() error {
		labels := rule.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[ManagedByLabel] = ManagedByValue
		labels["cx.cxop.dev/cxtarget"] = cxt.Name
		rule.SetLabels(labels)
		if err := unstructured.SetNestedField(rule.Object, spec["groups"], "spec", "groups"); err != nil {
			return err
		}
		return controllerutil.SetControllerReference(cxt, rule, r.Scheme())
	})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		// The CRD went away after start; alerts resume on restart.
		return nil
	}
	if err != nil {
		r.appliedRules.Delete(key)
		return fmt.Errorf("apply PrometheusRule %s/%s: %w", cxt.Namespace, rule.GetName(), err)
	}
	r.appliedRules.Store(key, applied)
	return nil
}

// appliedRule is what a target's PrometheusRule was last written from: the
// target's UID (a target deleted and created again under the same name
// needs its rule again, the old one going with its owner) and a hash of
// the rule groups.
type appliedRule struct {
	uid types.UID
	sum [sha256.Size]byte
}

// rulesTarget describes a target for rule generation; ok is false for
// objectives the collector exports no metric for (response rate).
func rulesTarget(cxt *cxv1.CXTarget, scope targetScope) (promrules.Target, bool) {
	kind, _ := cxt.Spec.Subject()
	window, err := cxt.Spec.GetWindow().Parse()
	if err != nil {
		return promrules.Target{}, false
	}
	t := promrules.Target{
		Namespace: cxt.Namespace, Name: cxt.Name, SubjectKind: kind,
		Touchpoints: scope.touchpoints, Surveys: scope.surveys, Window: window,
	}
	if a := cxt.Spec.Alerting; a != nil {
		t.Labels, t.RunbookURL = a.Labels, a.RunbookURL
	}
	s, err := scaleOf(cxt.Spec.Objective)
	if err != nil {
		return t, false
	}
	t.Objective = s.target
	obj := cxt.Spec.Objective
	switch {
	case obj.WaitTime != nil:
		t.Kind = promrules.WaitTime
	case obj.FirstContactResolution != nil:
		t.Kind = promrules.FirstContactResolution
	case obj.NPS != nil:
		t.Kind = promrules.NPS
	case obj.CSAT != nil:
		t.Kind = promrules.CSAT
	case obj.CES != nil:
		t.Kind = promrules.CES
	default:
		return t, false
	}
	return t, true
}
