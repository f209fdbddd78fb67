package controllers

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collector"
)

// TouchpointReconciler checks a Touchpoint's spec and keeps its status
// live: where to send events, and the interactions, wait-time compliance
// and waits of its window as the namespace's collector counts them.
type TouchpointReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Live     *StatusSource
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints/status,verbs=patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one Touchpoint's status up to date.
func (r *TouchpointReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	tp := &cxv1.Touchpoint{}
	if err := r.Get(ctx, req.NamespacedName, tp); err != nil {
		if apierrors.IsNotFound(err) {
			r.Live.readings.forget(readingKey{"Touchpoint", req.Namespace, req.Name})
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tp.DeletionTimestamp.IsZero() {
		// Nothing outside the cluster to clean up; owned objects are
		// garbage-collected.
		return ctrl.Result{}, nil
	}
	orig := tp.DeepCopy()

	obs := readiness{invalid: checkTouchpointSpec(&tp.Spec)}
	var summary *collector.TouchpointSummary
	if obs.invalid == nil {
		var err error
		summary, err = summaryOf(ctx, r.Live, &obs, tp.Namespace, tp.Spec.GetWindow(), "touchpoint",
			func(a *collector.AllSummary) *collector.TouchpointSummary { return a.Touchpoints[tp.Name] })
		if err != nil {
			return ctrl.Result{}, err
		}
	}

	if holdFirstStatus(tp, orig.Status.Conditions, obs, time.Now()) {
		return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
	}
	stale := r.Live.readings.staleness("Touchpoint", tp, orig.Status.ObservedGeneration, orig.Status.Conditions, obs, summary != nil, time.Now())
	setTouchpointStatus(tp, obs, r.Live.Runtime.URL(tp.Namespace), summary, stale.keep)
	setStaleCondition(&tp.Status.Conditions, stale)
	recordReadyTransition(r.Recorder, tp, orig.Status.Conditions, tp.Status.Conditions)
	if err := patchStatus(ctx, r.Client, orig, tp); err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid != nil {
		// Retrying cannot help until the spec changes, which triggers a
		// new reconcile by itself.
		return ctrl.Result{}, reconcile.TerminalError(obs.invalid)
	}
	return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
}
