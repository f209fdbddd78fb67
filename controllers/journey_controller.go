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
func (r *JourneyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	jny := &cxv1.Journey{}
	if err := r.Get(ctx, req.NamespacedName, jny); err != nil {
		if apierrors.IsNotFound(err) {
			r.Live.readings.forget(readingKey{"Journey", req.Namespace, req.Name})
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !jny.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	orig := jny.DeepCopy()

	obs, err := r.observe(ctx, jny)
	if err != nil {
		return ctrl.Result{}, err
	}

	var numbers *journeyNumbers
	if obs.invalid == nil && len(obs.missing) == 0 {
		numbers, err = r.measureJourney(ctx, jny)
		if err := collectorProblem(&obs, err); err != nil {
			return ctrl.Result{}, err
		}
	}

	stale := r.Live.readings.staleness("Journey", jny, orig.Status.ObservedGeneration, orig.Status.Conditions, obs, numbers != nil, time.Now())
	setJourneyStatus(jny, obs, numbers, stale.keep)
	setStaleCondition(&jny.Status.Conditions, stale)
	recordReadyTransition(r.Recorder, jny, orig.Status.Conditions, jny.Status.Conditions)
	if err := patchStatus(ctx, r.Client, orig, jny); err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid != nil {
		return ctrl.Result{}, reconcile.TerminalError(obs.invalid)
	}
	if len(obs.missing) > 0 {
		// The watches on Touchpoints and Surveys bring it back.
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
}

// observe checks the spec and resolves every Touchpoint the stages name and
// every Survey, reporting all that are missing at once.
func (r *JourneyReconciler) observe(ctx context.Context, jny *cxv1.Journey) (readiness, error) {
	if err := checkDuration("spec.window", jny.Spec.Window); err != nil {
		return readiness{invalid: err}, nil
	}
	missingTPs, err := findMissing(ctx, r.Client, jny.Namespace, "Touchpoint",
		func() client.Object { return &cxv1.Touchpoint{} }, journeyTouchpoints(jny))
	if err != nil {
		return readiness{}, err
	}
	missingSurveys, err := findMissing(ctx, r.Client, jny.Namespace, "Survey",
		func() client.Object { return &cxv1.Survey{} }, jny.Spec.Surveys)
	if err != nil {
		return readiness{}, err
	}
	return readiness{missing: append(missingTPs, missingSurveys...)}, nil
}
