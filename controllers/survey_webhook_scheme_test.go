package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// TestInsecureWebhookIsNotShownAsDelivering: a plain-http webhook under
// https-only collectors waits in the outbox, and the Survey says so, naming
// the field and the flag, whether or not the collector answers; with http
// allowed, or an https URL, it delivers.
func TestInsecureWebhookIsNotShownAsDelivering(t *testing.T) {
	survey := func(delivery, detractor string) *cxv1.Survey {
		s := &cxv1.Survey{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: cxv1.SurveySpec{
			Delivery: &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: delivery}},
		}}
		if detractor != "" {
			s.Spec.ClosedLoop = &cxv1.ClosedLoop{DetractorWebhook: &cxv1.WebhookSpec{URL: detractor}}
		}
		return s
	}
	for _, tc := range []struct {
		name       string
		svy        *cxv1.Survey
		allowHTTP  bool
		keyMissing string
		// down: the collector does not answer.
		down    bool
		reason  string
		message string
	}{
		{"https", survey("https://mailer.example.com/cx", "https://crm.example.com/d"), false, "", false, cxv1.DeliveringReason, ""},
		{"http refused", survey("http://mailer.example.com/cx", ""), false, "", false, cxv1.InsecureWebhookReason,
			"spec.delivery.webhook.url: plain http, and collectors send webhooks over https only (the manager's --allow-insecure-webhooks, chart surveys.allowInsecureWebhooks, permits http); its messages wait in the collector's outbox"},
		{"HTTP upper case refused", survey("HTTP://mailer.example.com/cx", ""), false, "", false, cxv1.InsecureWebhookReason, "spec.delivery.webhook.url: plain http"},
		{"http detractor webhook refused", survey("https://mailer.example.com/cx", "http://crm.example.com/d"), false, "", false, cxv1.InsecureWebhookReason,
			"spec.closedLoop.detractorWebhook.url: plain http"},
		{"both http", survey("http://mailer.example.com/cx", "http://crm.example.com/d"), false, "", false, cxv1.InsecureWebhookReason,
			"spec.delivery.webhook.url and spec.closedLoop.detractorWebhook.url: plain http"},
		{"http allowed", survey("http://mailer.example.com/cx", "http://crm.example.com/d"), true, "", false, cxv1.DeliveringReason, ""},
		{"a missing key stays the reason", survey("http://mailer.example.com/cx", ""), false, `spec.delivery.webhook.secretRef: Secret "m" not found`,
			false, cxv1.WebhookKeyMissingReason, `Secret "m" not found`},
		// What the manager knows by itself does not wait for the
		// collector's answer: a stale Delivering must not hide it.
		{"http refused while the collector is down", survey("http://mailer.example.com/cx", ""), false, "", true, cxv1.InsecureWebhookReason,
			"spec.delivery.webhook.url: plain http"},
		{"https while the collector is down", survey("https://mailer.example.com/cx", ""), false, "", true, cxv1.CollectorUnavailableReason, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := surveyObservation{summary: &collectorapi.SurveySummary{}, keyMissing: tc.keyMissing, servesPages: true, allowsHTTPWebhooks: tc.allowHTTP}
			if tc.down {
				obs.summary = nil
			}
			c := deliveryCondition(tc.svy, obs)
			wantStatus := metav1.ConditionFalse
			switch tc.reason {
			case cxv1.DeliveringReason:
				wantStatus = metav1.ConditionTrue
			case cxv1.CollectorUnavailableReason:
				wantStatus = metav1.ConditionUnknown
			}
			if c.Status != wantStatus || c.Reason != tc.reason || c.ObservedGeneration != 2 {
				t.Errorf("condition %s/%s (generation %d), want %s/%s", c.Status, c.Reason, c.ObservedGeneration, wantStatus, tc.reason)
			}
			if tc.message != "" && !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q, want it to contain %q", c.Message, tc.message)
			}
		})
	}
}
