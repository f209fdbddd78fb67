package controllers

import (
	"context"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collector"
)

// SurveyReconciler resolves a Survey's trigger Touchpoints, checks its
// schedule and reports both in status.
type SurveyReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Live     *StatusSource
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints,verbs=get;list;watch

// Reconcile brings one Survey's status up to date.
func (r *SurveyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	svy := &cxv1.Survey{}
	if err := r.Get(ctx, req.NamespacedName, svy); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !svy.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	orig := svy.DeepCopy()

	obs, err := r.observe(ctx, svy)
	if err != nil {
		return ctrl.Result{}, err
	}

	var summary *collector.SurveySummary
	if obs.invalid == nil {
		summary, err = summaryOf(ctx, r.Live, &obs, svy.Namespace, svy.Spec.GetWindow(), "survey",
			func(a *collector.AllSummary) *collector.SurveySummary { return a.Surveys[svy.Name] })
		if err != nil {
			return ctrl.Result{}, err
		}
	}

	if holdFirstStatus(svy, orig.Status.Conditions, obs, time.Now()) {
		return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
	}
	setSurveyStatus(svy, obs, r.Live.Runtime.URL(svy.Namespace), summary)
	recordReadyTransition(r.Recorder, svy, orig.Status.Conditions, svy.Status.Conditions)
	if err := patchStatus(ctx, r.Client, orig, svy); err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid != nil {
		return ctrl.Result{}, reconcile.TerminalError(obs.invalid)
	}
	return ctrl.Result{RequeueAfter: r.Live.next(obs)}, nil
}

// observe checks the spec and resolves the trigger's Touchpoints. A missing
// Touchpoint is not an error: the Touchpoint watch brings the Survey back
// here when it appears.
func (r *SurveyReconciler) observe(ctx context.Context, svy *cxv1.Survey) (readiness, error) {
	if err := checkSurveySpec(&svy.Spec); err != nil {
		return readiness{invalid: err}, nil
	}
	var obs readiness
	if svy.Spec.Trigger != nil {
		missing, err := findMissing(ctx, r.Client, svy.Namespace, "Touchpoint",
			func() client.Object { return &cxv1.Touchpoint{} }, svy.Spec.Trigger.Touchpoints)
		if err != nil {
			return obs, err
		}
		obs.missing = missing
	}
	return obs, nil
}
