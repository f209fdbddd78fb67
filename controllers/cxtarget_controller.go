package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/slo"
)

// CXTargetReconciler resolves a CXTarget's subject, checks that the
// objective can be measured on it, and reports both in status.
type CXTargetReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Live     *StatusSource
	// PrometheusRules is set when the cluster serves the Prometheus
	// Operator's PrometheusRule kind; each target then gets its alerts.
	PrometheusRules bool
	// appliedRules remembers, by target name, the rules last applied.
	appliedRules sync.Map
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=cxtargets,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=cxtargets/status,verbs=patch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=journeys;touchpoints;surveys,verbs=get;list;watch

// Reconcile brings one CXTarget's status up to date.
func (r *CXTargetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cxt := &cxv1.CXTarget{}
	if err := r.Get(ctx, req.NamespacedName, cxt); err != nil {
		if apierrors.IsNotFound(err) {
			// The PrometheusRule goes with its owner.
			forgetTargetMetrics(req.Namespace, req.Name)
			r.Live.readings.forget(readingKey{"CXTarget", req.Namespace, req.Name})
			r.appliedRules.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cxt.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	orig := cxt.DeepCopy()

	// A step that fails (reading the subject, its scope or the
	// collector's numbers) is recorded in obs, not returned: the status
	// below says so, and no earlier Ready=True stays showing.
	o, obs, subject := r.observe(ctx, cxt)
	var result *targetResult
	var rules *metav1.Condition
	var rulesErr error
	if subject != nil && obs.mismatch == "" {
		result, rules, rulesErr = r.judge(ctx, cxt, o, subject, &obs)
	}

	if holdFirstStatus(cxt, orig.Status.Conditions, obs, time.Now()) {
		return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
	}
	now := time.Now()
	stale := r.Live.readings.staleness("CXTarget", cxt, orig.Status.ObservedGeneration, orig.Status.Conditions, obs, result != nil, now)
	if kept := setCXTargetStatus(cxt, o, obs, result, rules, now); !kept {
		stale = staleness{}
	}
	setStaleCondition(&cxt.Status.Conditions, stale)
	recordReadyTransition(r.Recorder, cxt, orig.Status.Conditions, cxt.Status.Conditions)
	recordTargetTransition(r.Recorder, cxt, o, orig.Status.State, cxt.Status.State)
	exportTargetMetrics(cxt, o, obs.invalid == nil, result)
	if err := patchStatus(ctx, r.Client, orig, cxt); err != nil {
		return ctrl.Result{}, err
	}
	if rulesErr != nil {
		// The verdict is written; the rules are retried with backoff.
		obs.retry = append(obs.retry, rulesErr)
	}
	next := r.Live.next(obs)
	if subject == nil || obs.mismatch != "" {
		// Watches on the subject bring the target back when it changes.
		next = 0
	}
	return obs.outcome(next)
}

// targetResult is what the collector's numbers say about a target.
type targetResult struct {
	verdict     slo.Verdict
	attribution []cxv1.BudgetShare
}

// judge measures the target's objective, writes its alert rules and
// evaluates it. The rules are written whether or not the collector
// answers, so a target has its alerts while its collector starts, and
// they never keep it from being judged: rules says how they went,
// rulesErr is a write the API server refused. An unreachable collector,
// and any step that fails, is recorded in obs and yields no result.
func (r *CXTargetReconciler) judge(ctx context.Context, cxt *cxv1.CXTarget, o slo.Objective, subject client.Object, obs *readiness) (
	result *targetResult, rules *metav1.Condition, rulesErr error) {
	scope, mismatch, err := r.scopeOf(ctx, o, subject)
	if !obs.apiStep(cxv1.ReadFailedReason, "read the target's scope", err) || mismatch != "" {
		obs.mismatch = mismatch
		return nil, nil, nil
	}
	window, lookbacks, measureErr := r.measureTarget(ctx, cxt, o, scope)
	if measureErr != nil && !obs.collectorUnavailable(measureErr) {
		obs.apiStep(cxv1.ReadFailedReason, "measure the target", measureErr)
		return nil, nil, nil
	}
	rules, rulesErr = r.applyRules(ctx, cxt, o, scope)
	if measureErr != nil {
		return nil, rules, rulesErr
	}
	atRisk := cxt.Spec.Alerting.GetAtRiskBelow()
	res := &targetResult{verdict: o.Evaluate(cxt.Spec.GetMinSamples(), atRisk.AsApproximateFloat64(), window, lookbacks)}
	if _, isJourney := subject.(*cxv1.Journey); isJourney {
		res.attribution = slo.BudgetShares(window.BadByTouchpoint)
	}
	return res, rules, rulesErr
}

// observe reads the objective, checks the spec, fetches the subject and
// checks that the objective fits it. The subject is nil unless it was read.
func (r *CXTargetReconciler) observe(ctx context.Context, cxt *cxv1.CXTarget) (slo.Objective, readiness, client.Object) {
	o, err := checkCXTargetSpec(&cxt.Spec)
	if err != nil {
		return o, readiness{invalid: err}, nil
	}
	kind, name := cxt.Spec.Subject()
	subject, err := newSubject(kind)
	if err != nil {
		// The schema requires exactly one subject; reaching here means the
		// CRD in the cluster is older than this manager.
		return o, readiness{invalid: err}, nil
	}
	var obs readiness
	err = r.Get(ctx, types.NamespacedName{Namespace: cxt.Namespace, Name: name}, subject)
	switch {
	case apierrors.IsNotFound(err):
		return o, readiness{missing: []missingRef{{Kind: kind, Name: name}}}, nil
	case !obs.apiStep(cxv1.ReadFailedReason, fmt.Sprintf("get %s %s/%s", kind, cxt.Namespace, name), err):
		return o, obs, nil
	}
	return o, readiness{mismatch: objectiveMismatch(o, subject)}, subject
}

func newSubject(kind string) (client.Object, error) {
	switch kind {
	case "Journey":
		return &cxv1.Journey{}, nil
	case "Touchpoint":
		return &cxv1.Touchpoint{}, nil
	case "Survey":
		return &cxv1.Survey{}, nil
	}
	return nil, fmt.Errorf("spec: exactly one of journeyRef, touchpointRef or surveyRef must be set")
}

// checkCXTargetSpec reads the objective and reports what the schema
// cannot: durations that overflow.
func checkCXTargetSpec(spec *cxv1.CXTargetSpec) (slo.Objective, error) {
	o, err := slo.FromSpec(spec.Objective)
	if err != nil {
		return o, err
	}
	errs := []error{checkDuration("spec.window", spec.Window)}
	if o.Threshold != "" {
		errs = append(errs, checkDuration(o.Field()+".threshold", o.Threshold))
	}
	return o, firstError(errs...)
}

// objectiveMismatch explains why the objective cannot be measured on the
// subject, or returns "" when it can. The schema already pairs objectives
// with subject kinds; this checks what needs the subject itself.
func objectiveMismatch(o slo.Objective, subject client.Object) string {
	switch s := subject.(type) {
	case *cxv1.Survey:
		return o.MismatchOnSurvey(s)
	case *cxv1.Touchpoint:
		return o.MismatchOnTouchpoint(s)
	}
	return ""
}
