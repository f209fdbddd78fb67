package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
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
	// APIReader reads the Secrets the Survey's webhooks name, which are
	// outside the manager's cache.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Live      *StatusSource
	// Waves runs scheduled waves as CronJobs; nil creates none.
	Waves *WaveJobs
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys/status,verbs=patch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints,verbs=get;list;watch

// Reconcile brings one Survey's status up to date.
func (r *SurveyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	svy := &cxv1.Survey{}
	if err := r.Get(ctx, req.NamespacedName, svy); err != nil {
		if apierrors.IsNotFound(err) {
			r.Live.readings.forget(readingKey{"Survey", req.Namespace, req.Name})
		}
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
	stale := r.Live.readings.staleness("Survey", svy, orig.Status.ObservedGeneration, orig.Status.Conditions, obs, summary != nil, time.Now())
	setSurveyStatus(svy, obs, r.Live.Runtime.URL(svy.Namespace), summary, stale.keep)
	setStaleCondition(&svy.Status.Conditions, stale)
	keyMissing, err := r.missingWebhookKeys(ctx, svy)
	if err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid == nil {
		if err := r.syncWaves(ctx, svy); err != nil {
			return ctrl.Result{}, err
		}
	}
	if obs.invalid == nil && len(obs.missing) == 0 {
		if err := r.runLocalWave(ctx, svy, time.Now()); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.setScheduleStatus(ctx, svy, time.Now()); err != nil {
		return ctrl.Result{}, err
	}
	if c := stale.keptDelivery(deliveryCondition(svy, summary, keyMissing, r.Live.Runtime.ServesSurveyPages()), orig.Status.Conditions); c != nil {
		refuseInsecureWebhooks(c, svy, r.Live.Runtime.AllowsInsecureWebhooks())
		meta.SetStatusCondition(&svy.Status.Conditions, *c)
	} else {
		meta.RemoveStatusCondition(&svy.Status.Conditions, cxv1.DeliveringCondition)
	}
	recordReadyTransition(r.Recorder, svy, orig.Status.Conditions, svy.Status.Conditions)
	if err := patchStatus(ctx, r.Client, orig, svy); err != nil {
		return ctrl.Result{}, err
	}
	if obs.invalid != nil {
		return ctrl.Result{}, reconcile.TerminalError(obs.invalid)
	}
	next := r.Live.next(obs)
	if r.Waves == nil && svy.Status.NextScheduleTime != nil {
		// The manager sends the waves itself: come back when one is due.
		next = min(next, max(time.Until(svy.Status.NextScheduleTime.Time), 0)+time.Second)
	}
	return ctrl.Result{RequeueAfter: next}, nil
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

// missingWebhookKeys names the webhook signing keys the Survey refers to
// that do not exist, or returns "". The Secrets are the user's, outside the
// manager's cache, so they are read from the API server.
func (r *SurveyReconciler) missingWebhookKeys(ctx context.Context, svy *cxv1.Survey) (string, error) {
	if r.APIReader == nil {
		return "", nil
	}
	var missing []string
	for field, hook := range map[string]*cxv1.WebhookSpec{"spec.delivery.webhook": deliveryWebhook(svy), "spec.closedLoop.detractorWebhook": detractorWebhook(svy)} {
		if hook == nil {
			continue
		}
		var sec corev1.Secret
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: hook.SecretRef.Name}, &sec)
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, fmt.Sprintf("%s.secretRef: Secret %q not found", field, hook.SecretRef.Name))
		case err != nil:
			return "", fmt.Errorf("get secret %s/%s: %w", svy.Namespace, hook.SecretRef.Name, err)
		case len(sec.Data[hook.SecretRef.Key]) == 0:
			missing = append(missing, fmt.Sprintf("%s.secretRef: Secret %q has no key %q", field, hook.SecretRef.Name, hook.SecretRef.Key))
		}
	}
	slices.Sort(missing)
	return strings.Join(missing, "; "), nil
}
