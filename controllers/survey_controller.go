package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
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
	// Waves runs the scheduled waves.
	Waves WaveScheduler
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys,verbs=get;list;watch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=surveys/status,verbs=patch
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints,verbs=get;list;watch

// Reconcile brings one Survey's status up to date.
func (r *SurveyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	svy := &cxv1.Survey{}
	if live, err := fetchLive(ctx, r.Client, req, svy, r.Live.readings.forgetting("Survey", req)); !live {
		return ctrl.Result{}, err
	}
	st := newStatusPatch(r.Client, r.Recorder, svy, &svy.Status.Conditions)
	defer st.patch(ctx, &retErr)

	obs := r.observe(ctx, svy, time.Now())
	obs.stale = r.Live.readings.staleness("Survey", svy, svy.Status.ObservedGeneration, st.before, obs.readiness, obs.summary != nil, obs.now)
	st.hold = holdFirstStatus(svy, st.before, obs.readiness, obs.now)
	setSurveyStatus(svy, obs)
	next := r.Live.next(obs.readiness)
	if due, ok := r.Waves.recheck(svy, obs.now); ok {
		next = min(next, due)
	}
	return obs.outcome(next)
}

// surveyObservation is what one reconcile of a Survey found.
type surveyObservation struct {
	readiness
	now time.Time
	// ingestURL is the namespace's collector, "" before it runs.
	ingestURL string
	// servesPages: the manager gives customers a survey page URL.
	servesPages bool
	// allowsHTTPWebhooks: collectors send webhooks over plain http too.
	allowsHTTPWebhooks bool
	// summary is the collector's numbers, nil when it could not answer.
	summary *collectorapi.SurveySummary
	// keyMissing names the webhook secretRefs that do not resolve.
	keyMissing string
	// lastSchedule is when the last wave ran: as its CronJob records it in
	// a cluster, or the wave the manager sent itself under `cxop dev`.
	lastSchedule *metav1.Time
	// stale says whether status keeps the numbers it shows when there is
	// no summary, and the Stale condition that marks them.
	stale staleness
}

// observe checks the spec, resolves the trigger's Touchpoints (a missing
// one is not an error: the Touchpoint watch brings the Survey back here
// when it appears), reads the numbers, checks the webhook keys and the
// audience, and runs the waves.
func (r *SurveyReconciler) observe(ctx context.Context, svy *cxv1.Survey, now time.Time) surveyObservation {
	obs := surveyObservation{now: now, ingestURL: r.Live.Runtime.URL(svy.Namespace), servesPages: r.Live.Runtime.ServesSurveyPages(),
		allowsHTTPWebhooks: r.Live.Runtime.AllowsInsecureWebhooks()}
	if obs.invalid = checkSurveySpec(&svy.Spec); obs.invalid != nil {
		// Nothing runs; when the last wave ran is still true.
		obs.lastSchedule = svy.Status.LastScheduleTime
		return obs
	}
	if t := svy.Spec.Trigger; t != nil {
		obs.resolve(ctx, r.Client, svy.Namespace, "Touchpoint", func() client.Object { return &cxv1.Touchpoint{} }, t.Touchpoints)
	}
	obs.summary = summaryOf(ctx, r.Live, &obs.readiness, svy.Namespace, svy.Spec.GetWindow(), "survey",
		func(a *collectorapi.AllSummary) *collectorapi.SurveySummary { return a.Surveys[svy.Name] })
	obs.keyMissing = r.checkWebhookKeys(ctx, svy, &obs.readiness)
	audience := r.checkAudience(ctx, svy, &obs.readiness)
	if len(obs.missing) > 0 {
		audience = nil // a wave waits for the trigger's Touchpoints
	}
	r.Waves.apply(ctx, r, svy, &obs.readiness)
	obs.lastSchedule = r.Waves.lastRun(ctx, r, svy, audience, &obs)
	return obs
}

// checkWebhookKeys records the webhook signing keys the Survey refers to
// that do not exist, and returns their description ("" when all do).
// Nothing is signed or sent without them, and the Secrets are the user's:
// the Survey is stalled until someone creates them.
func (r *SurveyReconciler) checkWebhookKeys(ctx context.Context, svy *cxv1.Survey, obs *readiness) string {
	missing, err := r.missingWebhookKeys(ctx, svy)
	if !obs.apiStep(cxv1.ReadFailedReason, "read webhook signing keys", err) {
		return ""
	}
	if missing != "" {
		obs.fail(failure{reason: cxv1.WebhookKeyMissingReason, message: missing, stalled: true})
	}
	return missing
}

// missingWebhookKeys names the webhook signing keys the Survey refers to
// that do not exist, or returns "". The Secrets are the user's, outside the
// manager's cache, so they are read from the API server.
func (r *SurveyReconciler) missingWebhookKeys(ctx context.Context, svy *cxv1.Survey) (string, error) {
	var missing []string
	for field, hook := range map[string]*cxv1.WebhookSpec{"spec.delivery.webhook": deliveryWebhook(svy), "spec.closedLoop.detractorWebhook": detractorWebhook(svy)} {
		if hook == nil {
			continue
		}
		var sec corev1.Secret
		err := r.uncached().Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: hook.SecretRef.Name}, &sec)
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

// uncached reads the user's objects a Survey names (webhook Secrets, the
// audience ConfigMap), which are outside the manager's cache.
func (r *SurveyReconciler) uncached() client.Reader {
	if r.APIReader == nil {
		return r.Client
	}
	return r.APIReader
}
