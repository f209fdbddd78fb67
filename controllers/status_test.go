package controllers

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

func TestMissingMessage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		missing []missingRef
		want    string
	}{
		{"one", []missingRef{{"Touchpoint", "chat"}}, `Touchpoint "chat" not found`},
		{"plural, sorted", []missingRef{{"Touchpoint", "phone"}, {"Touchpoint", "chat"}}, `Touchpoints "chat", "phone" not found`},
		{"kinds in order of appearance", []missingRef{{"Survey", "nps"}, {"Touchpoint", "web"}, {"Survey", "csat"}},
			`Surveys "csat", "nps" not found; Touchpoint "web" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := missingMessage(tc.missing); got != tc.want {
				t.Errorf("missingMessage() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetReadinessConditions(t *testing.T) {
	type cond struct {
		status metav1.ConditionStatus
		reason string
	}
	for _, tc := range []struct {
		name        string
		obs         readiness
		ready       cond
		reconciling *cond
		stalled     *cond
	}{
		{"ready", readiness{}, cond{metav1.ConditionTrue, cxv1.ReconciledReason}, nil, nil},
		{"missing reference waits, not stalled",
			readiness{missing: []missingRef{{"Journey", "shop"}}},
			cond{metav1.ConditionFalse, cxv1.JourneyNotFoundReason},
			&cond{metav1.ConditionTrue, cxv1.JourneyNotFoundReason}, nil},
		{"invalid spec stalls",
			readiness{invalid: errors.New("spec.window: bad")},
			cond{metav1.ConditionFalse, cxv1.InvalidSpecReason},
			nil, &cond{metav1.ConditionTrue, cxv1.InvalidSpecReason}},
		{"invalid wins over missing",
			readiness{invalid: errors.New("spec.window: bad"), missing: []missingRef{{"Survey", "x"}}},
			cond{metav1.ConditionFalse, cxv1.InvalidSpecReason},
			nil, &cond{metav1.ConditionTrue, cxv1.InvalidSpecReason}},
		{"mismatch waits for a change",
			readiness{mismatch: "spec.objective.nps needs a NPS survey"},
			cond{metav1.ConditionFalse, cxv1.ObjectiveMismatchReason},
			&cond{metav1.ConditionTrue, cxv1.ObjectiveMismatchReason}, nil},
		{"a step someone must fix stalls, before a missing reference",
			readiness{missing: []missingRef{{"Touchpoint", "x"}}, failures: []failure{{reason: cxv1.AudienceNotFoundReason, message: "m", stalled: true}}},
			cond{metav1.ConditionFalse, cxv1.AudienceNotFoundReason},
			nil, &cond{metav1.ConditionTrue, cxv1.AudienceNotFoundReason}},
		{"a step that failed in passing waits, after a missing reference",
			readiness{missing: []missingRef{{"Touchpoint", "x"}}, failures: []failure{{reason: cxv1.ReadFailedReason, message: "m"}}},
			cond{metav1.ConditionFalse, cxv1.TouchpointNotFoundReason},
			&cond{metav1.ConditionTrue, cxv1.TouchpointNotFoundReason}, nil},
		{"a failed step comes before the collector's numbers",
			readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "down", failures: []failure{{reason: cxv1.ApplyFailedReason, message: "m"}}},
			cond{metav1.ConditionFalse, cxv1.ApplyFailedReason},
			&cond{metav1.ConditionTrue, cxv1.ApplyFailedReason}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Start from the opposite verdict to prove stale conditions go.
			conds := []metav1.Condition{
				{Type: cxv1.StalledCondition, Status: metav1.ConditionTrue, Reason: "Old"},
				{Type: cxv1.ReconcilingCondition, Status: metav1.ConditionTrue, Reason: "Old"},
			}
			setReadinessConditions(&conds, 7, tc.obs)
			check := func(typ string, want *cond) {
				t.Helper()
				got := meta.FindStatusCondition(conds, typ)
				if want == nil {
					if got != nil {
						t.Errorf("%s = %s/%s, want absent", typ, got.Status, got.Reason)
					}
					return
				}
				if got == nil {
					t.Fatalf("%s absent, want %s/%s", typ, want.status, want.reason)
				}
				if got.Status != want.status || got.Reason != want.reason || got.ObservedGeneration != 7 {
					t.Errorf("%s = %s/%s gen %d, want %s/%s gen 7", typ, got.Status, got.Reason, got.ObservedGeneration, want.status, want.reason)
				}
			}
			check(cxv1.ReadyCondition, &tc.ready)
			check(cxv1.ReconcilingCondition, tc.reconciling)
			check(cxv1.StalledCondition, tc.stalled)
		})
	}
}

func TestReadyNamesEveryFailedStep(t *testing.T) {
	obs := readiness{
		missing:         []missingRef{{"Touchpoint", "chat"}},
		collectorReason: cxv1.CollectorUnavailableReason, collector: "the collector did not answer",
	}
	obs.apiStep(cxv1.ReadFailedReason, "read wave CronJob", apierrors.NewServiceUnavailable("etcd is restarting"))
	obs.apiStep(cxv1.ApplyFailedReason, "apply wave CronJob ns/cxop-wave-x", apierrors.NewForbidden(schema.GroupResource{Resource: "cronjobs"}, "cxop-wave-x", errors.New("quota")))
	ready := obs.readyCondition(3)
	if ready.Reason != cxv1.ApplyFailedReason {
		t.Errorf("Ready reason = %s, want the refused step first (%s)", ready.Reason, cxv1.ApplyFailedReason)
	}
	want := `apply wave CronJob ns/cxop-wave-x: cronjobs "cxop-wave-x" is forbidden: quota; read wave CronJob: etcd is restarting`
	if ready.Message != want {
		t.Errorf("Ready message = %q, want %q", ready.Message, want)
	}
	if !obs.stalled() {
		t.Error("a refused object does not stall")
	}
}

func TestAPIStep(t *testing.T) {
	gr := schema.GroupResource{Resource: "cronjobs"}
	for _, tc := range []struct {
		name    string
		err     error
		ok      bool
		failed  bool
		stalled bool
	}{
		{"success", nil, true, false, false},
		{"forbidden is refused", apierrors.NewForbidden(gr, "x", errors.New("no")), false, true, true},
		{"invalid is refused", apierrors.NewInvalid(schema.GroupKind{Kind: "CronJob"}, "x", nil), false, true, true},
		{"owned by another is refused", &controllerutil.AlreadyOwnedError{Object: &cxv1.Survey{}}, false, true, true},
		{"what someone must fix is refused", needsAction(errors.New("secret ns/x has no \"token\" key; delete it")), false, true, true},
		{"timeout passes", apierrors.NewServerTimeout(gr, "create", 1), false, true, false},
		{"an unknown error passes", errors.New("connection reset"), false, true, false},
		{"a conflict is a race, not a failure", apierrors.NewConflict(gr, "x", errors.New("changed")), false, false, false},
		{"already exists is a race, not a failure", apierrors.NewAlreadyExists(gr, "x"), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var obs readiness
			if ok := obs.apiStep(cxv1.ApplyFailedReason, "apply x", tc.err); ok != tc.ok {
				t.Errorf("apiStep() = %v, want %v", ok, tc.ok)
			}
			if got := len(obs.failures) == 1; got != tc.failed {
				t.Fatalf("failures = %v, want one: %v", obs.failures, tc.failed)
			}
			if tc.failed && obs.failures[0].stalled != tc.stalled {
				t.Errorf("stalled = %v, want %v", obs.failures[0].stalled, tc.stalled)
			}
			_, err := obs.outcome(time.Second)
			if (err != nil) != (tc.err != nil) {
				t.Errorf("outcome error = %v, want one: %v (every failed call is retried)", err, tc.err != nil)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	res, err := readiness{invalid: errors.New("spec.window: bad")}.outcome(time.Second)
	if !errors.Is(err, reconcile.TerminalError(nil)) || res.RequeueAfter != 0 {
		t.Errorf("invalid spec: %v, %v; want a terminal error", res, err)
	}
	res, err = readiness{failures: []failure{{reason: cxv1.AudienceNotFoundReason, stalled: true}}}.outcome(time.Second)
	if err != nil || res.RequeueAfter != time.Second {
		t.Errorf("a failure found by reading: %v, %v; want a requeue after 1s", res, err)
	}
}

func TestReadyEvent(t *testing.T) {
	ready := func(s metav1.ConditionStatus, reason string) []metav1.Condition {
		return []metav1.Condition{{Type: cxv1.ReadyCondition, Status: s, Reason: reason}}
	}
	for _, tc := range []struct {
		name          string
		before, after []metav1.Condition
		want          bool
	}{
		{"first verdict ready", nil, ready(metav1.ConditionTrue, cxv1.ReconciledReason), false},
		{"first verdict failed", nil, ready(metav1.ConditionFalse, cxv1.TouchpointNotFoundReason), true},
		{"pending", nil, ready(metav1.ConditionFalse, cxv1.CollectorPendingReason), false},
		{"ready after pending", ready(metav1.ConditionFalse, cxv1.CollectorPendingReason), ready(metav1.ConditionTrue, cxv1.ReconciledReason), false},
		{"unchanged", ready(metav1.ConditionTrue, cxv1.ReconciledReason), ready(metav1.ConditionTrue, cxv1.ReconciledReason), false},
		{"flip", ready(metav1.ConditionTrue, cxv1.ReconciledReason), ready(metav1.ConditionFalse, cxv1.TouchpointNotFoundReason), true},
		{"recovered", ready(metav1.ConditionFalse, cxv1.CollectorUnavailableReason), ready(metav1.ConditionTrue, cxv1.ReconciledReason), true},
		{"new reason", ready(metav1.ConditionFalse, cxv1.TouchpointNotFoundReason), ready(metav1.ConditionFalse, cxv1.SurveyNotFoundReason), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := readyEvent(tc.before, tc.after); got != tc.want {
				t.Errorf("readyEvent() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHoldFirstStatus(t *testing.T) {
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	obj := &cxv1.Touchpoint{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
	pending := readiness{collectorReason: cxv1.CollectorPendingReason, collector: "not loaded yet"}
	readyBefore := []metav1.Condition{{Type: cxv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: cxv1.CollectorPendingReason}}
	for _, tc := range []struct {
		name   string
		before []metav1.Condition
		obs    readiness
		age    time.Duration
		want   bool
	}{
		{"new, collector loading", nil, pending, 2 * time.Second, true},
		{"new, collector not provisioned", nil, readiness{collectorReason: cxv1.CollectorUnavailableReason, collector: "not provisioned"}, 2 * time.Second, true},
		{"waited past the grace", nil, pending, firstStatusGrace, false},
		{"already has a status", readyBefore, pending, 2 * time.Second, false},
		{"numbers known", nil, readiness{}, 2 * time.Second, false},
		{"missing reference", nil, readiness{missing: []missingRef{{Kind: "Touchpoint", Name: "chat"}}, collector: "x"}, 2 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := holdFirstStatus(obj, tc.before, tc.obs, created.Add(tc.age)); got != tc.want {
				t.Errorf("holdFirstStatus() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDeliveryCondition(t *testing.T) {
	withHook := &cxv1.Survey{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Spec: cxv1.SurveySpec{
		Delivery: &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: "https://mailer.example.com"}},
	}}
	gone := "2026-11-23T10:00:00Z"
	goneSummary := &collectorapi.SurveySummary{Invitations: &collectorapi.InvitationSummary{WebhookGoneSince: &gone}}
	failingSummary := &collectorapi.SurveySummary{Invitations: &collectorapi.InvitationSummary{WebhookFailingSince: &gone, WebhookError: "the receiver answered 401"}}
	for _, tc := range []struct {
		name       string
		svy        *cxv1.Survey
		summary    *collectorapi.SurveySummary
		keyMissing string
		hasPage    bool
		want       *metav1.Condition
	}{
		{"no webhook", &cxv1.Survey{}, nil, "", true, nil},
		{"delivering", withHook, &collectorapi.SurveySummary{}, "", true,
			&metav1.Condition{Status: metav1.ConditionTrue, Reason: cxv1.DeliveringReason}},
		{"no page URL", withHook, nil, "", false,
			&metav1.Condition{Status: metav1.ConditionFalse, Reason: cxv1.NoSurveyPageReason}},
		{"key missing", withHook, nil, `spec.delivery.webhook.secretRef: Secret "mailer" not found`, true,
			&metav1.Condition{Status: metav1.ConditionFalse, Reason: cxv1.WebhookKeyMissingReason}},
		{"collector not asked", withHook, nil, "", true,
			&metav1.Condition{Status: metav1.ConditionUnknown, Reason: cxv1.CollectorUnavailableReason}},
		{"gone", withHook, goneSummary, "", true,
			&metav1.Condition{Status: metav1.ConditionFalse, Reason: cxv1.WebhookGoneReason}},
		{"failing", withHook, failingSummary, "", true,
			&metav1.Condition{Status: metav1.ConditionFalse, Reason: cxv1.WebhookFailingReason}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := deliveryCondition(tc.svy, surveyObservation{summary: tc.summary, keyMissing: tc.keyMissing, servesPages: tc.hasPage})
			if (got == nil) != (tc.want == nil) {
				t.Fatalf("deliveryCondition = %+v, want %+v", got, tc.want)
			}
			if got == nil {
				return
			}
			if got.Type != cxv1.DeliveringCondition || got.Status != tc.want.Status || got.Reason != tc.want.Reason || got.ObservedGeneration != 3 || got.Message == "" {
				t.Errorf("deliveryCondition = %+v, want %s/%s", got, tc.want.Status, tc.want.Reason)
			}
			if tc.summary == failingSummary && (!strings.Contains(got.Message, "401") || !strings.Contains(got.Message, gone)) {
				t.Errorf("message %q does not say since when and why", got.Message)
			}
			if tc.keyMissing != "" && !strings.Contains(got.Message, tc.keyMissing) {
				t.Errorf("message %q does not name the missing key", got.Message)
			}
		})
	}
}

func TestCollectorWrittenWakesOnChangeOnly(t *testing.T) {
	s := &StatusSource{}
	ch := s.collectorChanges()
	woken := func() []string {
		var ns []string
		for {
			select {
			case ev := <-ch:
				ns = append(ns, ev.Object.GetNamespace())
			default:
				return ns
			}
		}
	}
	refused := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "cxop-touchpoint-web", errors.New("quota"))
	for _, step := range []struct {
		name  string
		err   error
		woken []string
	}{
		{"written", nil, nil},
		{"refused", refused, []string{"shop"}},
		{"refused again, the same way", refused, nil},
		{"refused otherwise", errors.New("run collector: timeout"), []string{"shop"}},
		{"written again", nil, []string{"shop"}},
		{"still written", nil, nil},
	} {
		s.CollectorWritten("shop", step.err)
		if got := woken(); !slices.Equal(got, step.woken) {
			t.Errorf("%s: woke %v, want %v", step.name, got, step.woken)
		}
		f, failed := s.collectorFailure("shop")
		if failed != (step.err != nil) {
			t.Fatalf("%s: failure recorded = %v", step.name, failed)
		}
		if failed && (f.reason != cxv1.CollectorFailedReason || !strings.Contains(f.message, step.err.Error()) || f.stalled != apierrors.IsForbidden(step.err)) {
			t.Errorf("%s: failure = %+v", step.name, f)
		}
	}
}
