package controllers

import (
	"context"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
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
	if live, err := fetchLive(ctx, r.Client, req, tp, r.Live.readings.forgetting("Touchpoint", req)); !live {
		return ctrl.Result{}, err
	}
	st := newStatusPatch(r.Client, r.Recorder, tp, &tp.Status.Conditions)
	defer st.patch(ctx, &retErr)

	now := time.Now()
	obs := r.observe(ctx, tp)
	obs.stale = r.Live.readings.staleness("Touchpoint", tp, tp.Status.ObservedGeneration, st.before, obs.readiness, obs.summary != nil, now)
	st.hold = holdFirstStatus(tp, st.before, obs.readiness, now)
	setTouchpointStatus(tp, obs)
	return obs.outcome(r.Live.next(obs.readiness))
}

// touchpointObservation is what one reconcile of a Touchpoint found.
type touchpointObservation struct {
	readiness
	// ingestURL is the namespace's collector, "" before it runs.
	ingestURL string
	// summary is the collector's numbers, nil when it could not answer.
	summary *collectorapi.TouchpointSummary
	// stale says whether status keeps the numbers it shows when there is
	// no summary, and the Stale condition that marks them.
	stale staleness
}

// observe checks the spec and reads the Touchpoint's numbers.
func (r *TouchpointReconciler) observe(ctx context.Context, tp *cxv1.Touchpoint) touchpointObservation {
	obs := touchpointObservation{ingestURL: r.Live.Runtime.URL(tp.Namespace)}
	if obs.invalid = checkTouchpointSpec(&tp.Spec); obs.invalid != nil {
		return obs
	}
	obs.summary = summaryOf(ctx, r.Live, &obs.readiness, tp.Namespace, tp.Spec.GetWindow(), "touchpoint",
		func(a *collectorapi.AllSummary) *collectorapi.TouchpointSummary { return a.Touchpoints[tp.Name] })
	return obs
}
