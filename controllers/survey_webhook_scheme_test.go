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
// the field and the flag; with http allowed, or an https URL, it delivers.
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
		reason     string
		message    string
	}{
		{"https", survey("https://mailer.example.com/cx", "https://crm.example.com/d"), false, "", cxv1.DeliveringReason, ""},
		{"http refused", survey("http://mailer.example.com/cx", ""), false, "", cxv1.InsecureWebhookReason,
			"spec.delivery.webhook.url: plain http, and collectors send webhooks over https only (the manager's --allow-insecure-webhooks, chart surveys.allowInsecureWebhooks, permits http); its messages wait in the collector's outbox"},
		{"HTTP upper case refused", survey("HTTP://mailer.example.com/cx", ""), false, "", cxv1.InsecureWebhookReason, "spec.delivery.webhook.url: plain http"},
		{"http detractor webhook refused", survey("https://mailer.example.com/cx", "http://crm.example.com/d"), false, "", cxv1.InsecureWebhookReason,
			"spec.closedLoop.detractorWebhook.url: plain http"},
		{"both http", survey("http://mailer.example.com/cx", "http://crm.example.com/d"), false, "", cxv1.InsecureWebhookReason,
			"spec.delivery.webhook.url and spec.closedLoop.detractorWebhook.url: plain http"},
		{"http allowed", survey("http://mailer.example.com/cx", "http://crm.example.com/d"), true, "", cxv1.DeliveringReason, ""},
		{"a missing key stays the reason", survey("http://mailer.example.com/cx", ""), false, `spec.delivery.webhook.secretRef: Secret "m" not found`,
			cxv1.WebhookKeyMissingReason, `Secret "m" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := deliveryCondition(tc.svy, &collectorapi.SurveySummary{}, tc.keyMissing, true)
			refuseInsecureWebhooks(c, tc.svy, tc.allowHTTP)
			wantStatus := metav1.ConditionFalse
			if tc.reason == cxv1.DeliveringReason {
				wantStatus = metav1.ConditionTrue
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
