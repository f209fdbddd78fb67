package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// CXTargetReconciler resolves a CXTarget's subject, checks that the
// objective can be measured on it, and reports both in status.
type CXTargetReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Live     *StatusSource
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=cxtargets,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=cxtargets/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=journeys;touchpoints;surveys,verbs=get;list;watch

// Reconcile brings one CXTarget's status up to date.
func (r *CXTargetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	cxt := &cxv1.CXTarget{}
	if err := r.Get(ctx, req.NamespacedName, cxt); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cxt.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	orig := cxt.DeepCopy()

	obs, err := r.observe(ctx, cxt)
	if err != nil {
		return ctrl.Result{}, err
	}

	setCXTargetStatus(cxt, obs)
	recordReadyTransition(r.Recorder, cxt, orig.Status.Conditions, cxt.Status.Conditions)
	if err := patchStatus(ctx, r.Client, orig, cxt); err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid != nil {
		return ctrl.Result{}, reconcile.TerminalError(obs.invalid)
	}
	return ctrl.Result{}, nil
}

// observe checks the spec, fetches the subject and checks that the
// objective fits it.
func (r *CXTargetReconciler) observe(ctx context.Context, cxt *cxv1.CXTarget) (readiness, error) {
	if err := checkCXTargetSpec(&cxt.Spec); err != nil {
		return readiness{invalid: err}, nil
	}
	kind, name := cxt.Spec.Subject()
	subject, err := newSubject(kind)
	if err != nil {
		// The schema requires exactly one subject; reaching here means the
		// CRD in the cluster is older than this manager.
		return readiness{invalid: err}, nil
	}
	err = r.Get(ctx, types.NamespacedName{Namespace: cxt.Namespace, Name: name}, subject)
	switch {
	case apierrors.IsNotFound(err):
		return readiness{missing: []missingRef{{Kind: kind, Name: name}}}, nil
	case err != nil:
		return readiness{}, fmt.Errorf("get %s %s/%s: %w", kind, cxt.Namespace, name, err)
	}
	return readiness{mismatch: objectiveMismatch(&cxt.Spec, subject)}, nil
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
