package controllers

import (
	"context"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// JourneyReconciler resolves a Journey's stage Touchpoints and Surveys and
// reports them in status.
type JourneyReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Live     *StatusSource
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=journeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=journeys/status,verbs=patch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints;surveys,verbs=get;list;watch

// Reconcile brings one Journey's status up to date.
func (r *JourneyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	jny := &cxv1.Journey{}
	if live, err := fetchLive(ctx, r.Client, req, jny, r.Live.readings.forgetting("Journey", req)); !live {
		return ctrl.Result{}, err
	}
	st := newStatusPatch(r.Client, r.Recorder, jny, &jny.Status.Conditions)
	defer st.patch(ctx, &retErr)

	obs := r.observe(ctx, jny)
	obs.stale = r.Live.readings.staleness("Journey", jny, jny.Status.ObservedGeneration, st.before, obs.readiness, obs.numbers != nil, time.Now())
	setJourneyStatus(jny, obs)
	if len(obs.missing) > 0 {
		// The watches on Touchpoints and Surveys bring it back.
		return obs.outcome(0)
	}
	return obs.outcome(r.Live.next(obs.readiness))
}

// journeyObservation is what one reconcile of a Journey found.
type journeyObservation struct {
	readiness
	// numbers are the collector's, nil when it could not answer or the
	// Journey cannot be measured.
	numbers *journeyNumbers
	// stale says whether status keeps the numbers it shows when there are
	// none, and the Stale condition that marks them.
	stale staleness
}

// observe checks the spec, resolves every Touchpoint the stages name and
// every Survey (reporting all that are missing at once), and measures the
// Journey once they all exist.
func (r *JourneyReconciler) observe(ctx context.Context, jny *cxv1.Journey) journeyObservation {
	var obs journeyObservation
	if obs.invalid = checkDuration("spec.window", jny.Spec.Window); obs.invalid != nil {
		return obs
	}
	obs.resolve(ctx, r.Client, jny.Namespace, "Touchpoint", func() client.Object { return &cxv1.Touchpoint{} }, journeyTouchpoints(jny))
	obs.resolve(ctx, r.Client, jny.Namespace, "Survey", func() client.Object { return &cxv1.Survey{} }, jny.Spec.Surveys)
	if len(obs.missing) > 0 || len(obs.failures) > 0 {
		return obs
	}
	obs.numbers = r.measureJourney(ctx, jny, &obs.readiness)
	return obs
}
