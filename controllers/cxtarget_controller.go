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
func (r *CXTargetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	cxt := &cxv1.CXTarget{}
	if live, err := fetchLive(ctx, r.Client, req, cxt, r.forgetting(req)); !live {
		return ctrl.Result{}, err
	}
	st := newStatusPatch(r.Client, r.Recorder, cxt, &cxt.Status.Conditions)
	defer st.patch(ctx, &retErr)

	now := time.Now()
	obs := r.observe(ctx, cxt, now)
	obs.stale = r.Live.readings.staleness("CXTarget", cxt, cxt.Status.ObservedGeneration, st.before, obs.readiness, obs.result != nil, now)
	st.hold = holdFirstStatus(cxt, st.before, obs.readiness, now)
	setCXTargetStatus(cxt, obs, now)
	reportTarget(r.Recorder, cxt, obs)
	return obs.outcome(r.next(obs))
}

// forgetting returns what drops everything the manager remembers of the
// target req names, for fetchLive to call when it is gone; its
// PrometheusRule goes with it (garbage-collected with its owner).
func (r *CXTargetReconciler) forgetting(req ctrl.Request) func() {
	forgetReading := r.Live.readings.forgetting("CXTarget", req)
	return func() {
		forgetTargetMetrics(req.Namespace, req.Name)
		forgetReading()
		r.appliedRules.Delete(req.NamespacedName)
	}
}

// next is when the target is refreshed again: never by the clock while its
// subject is missing or does not fit (watches on the subject bring it
// back when it changes), else as the status source says.
func (r *CXTargetReconciler) next(obs targetObservation) time.Duration {
	if !obs.subjectRead || obs.mismatch != "" {
		return 0
	}
	return r.Live.next(obs.readiness)
}

// targetObservation is what one reconcile of a CXTarget found.
type targetObservation struct {
	readiness
	objective slo.Objective
	// subjectRead: the subject was read (it exists and the read worked).
	subjectRead bool
	// result is what the collector's numbers say, nil when the target
	// was not judged.
	result *targetResult
	// rules is the AlertRules condition of this loop; nil when alerts are
	// off, or when the loop did not get as far as the rules.
	rules *metav1.Condition
	// wasState is the state status showed as read, for the transition
	// events.
	wasState cxv1.TargetState
	// stale says whether status keeps the verdict it shows when there is
	// no result, and the Stale condition that marks it.
	stale staleness
}

// targetResult is what the collector's numbers say about a target.
type targetResult struct {
	verdict     slo.Verdict
	attribution []cxv1.BudgetShare
}

// observe reads the objective and checks the spec, fetches the subject and
// checks that the objective fits it, resolves the scope the objective is
// counted over, measures it (cxtarget_measure.go), writes the alert rules
// (cxtarget_rules.go) and judges the counts (internal/slo). The rules are
// written whether or not the collector answers, so a target has its
// alerts while its collector starts, and they never keep it from being
// judged. A step that fails (a read, an unreachable collector, a rule
// write the API server refuses) is recorded in obs, not returned, and
// leaves the target unjudged.
func (r *CXTargetReconciler) observe(ctx context.Context, cxt *cxv1.CXTarget, now time.Time) targetObservation {
	obs := targetObservation{wasState: cxt.Status.State}
	o, err := checkCXTargetSpec(&cxt.Spec)
	obs.objective = o
	if obs.invalid = err; err != nil {
		return obs
	}
	// Without the kind, AlertRules says so however far the loop gets.
	obs.rules = r.noRuleKind(cxt)
	kind, name := cxt.Spec.Subject()
	subject, err := newSubject(kind)
	if err != nil {
		// The schema requires exactly one subject; reaching here means the
		// CRD in the cluster is older than this manager.
		obs.invalid = err
		return obs
	}
	err = r.Get(ctx, types.NamespacedName{Namespace: cxt.Namespace, Name: name}, subject)
	switch {
	case apierrors.IsNotFound(err):
		obs.missing = []missingRef{{Kind: kind, Name: name}}
		return obs
	case !obs.apiStep(cxv1.ReadFailedReason, fmt.Sprintf("get %s %s/%s", kind, cxt.Namespace, name), err):
		return obs
	}
	obs.subjectRead = true
	if obs.mismatch = objectiveMismatch(o, subject); obs.mismatch != "" {
		return obs
	}

	scope, mismatch, err := r.scopeOf(ctx, o, subject)
	if !obs.apiStep(cxv1.ReadFailedReason, "read the target's scope", err) || mismatch != "" {
		obs.mismatch = mismatch
		return obs
	}
	window, lookbacks, measureErr := r.measureTarget(ctx, cxt, o, scope, now)
	if measureErr != nil && !obs.collectorUnavailable(measureErr) {
		obs.apiStep(cxv1.ReadFailedReason, "measure the target", measureErr)
		return obs
	}
	var rulesErr error
	if obs.rules, rulesErr = r.applyRules(ctx, cxt, o, scope); rulesErr != nil {
		// The verdict is still written; the rules are retried with
		// backoff, and AlertRules says what was refused.
		obs.retry = append(obs.retry, rulesErr)
	}
	if measureErr != nil {
		return obs
	}
	atRisk := cxt.Spec.Alerting.GetAtRiskBelow()
	obs.result = &targetResult{verdict: o.Evaluate(cxt.Spec.GetMinSamples(), atRisk.AsApproximateFloat64(), window, lookbacks)}
	if _, isJourney := subject.(*cxv1.Journey); isJourney {
		obs.result.attribution = slo.BudgetShares(window.BadByTouchpoint)
	}
	return obs
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
