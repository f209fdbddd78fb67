package controllers

import (
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// refuseInsecureWebhooks turns a Delivering=True condition False when a
// webhook of the Survey is plain http and collectors send over https only:
// the collector leaves such a webhook out and its messages wait, which
// status must not show as delivering. A condition already False for
// another reason keeps it.
func refuseInsecureWebhooks(c *metav1.Condition, svy *cxv1.Survey, allowHTTP bool) {
	if allowHTTP || c.Status != metav1.ConditionTrue {
		return
	}
	var fields []string
	for _, h := range []struct {
		field string
		hook  *cxv1.WebhookSpec
	}{{"spec.delivery.webhook.url", deliveryWebhook(svy)}, {"spec.closedLoop.detractorWebhook.url", detractorWebhook(svy)}} {
		if h.hook == nil {
			continue
		}
		if u, err := url.Parse(h.hook.URL); err == nil && strings.EqualFold(u.Scheme, "http") {
			fields = append(fields, h.field)
		}
	}
	if len(fields) == 0 {
		return
	}
	c.Status, c.Reason = metav1.ConditionFalse, cxv1.InsecureWebhookReason
	c.Message = strings.Join(fields, " and ") + ": plain http, and collectors send webhooks over https only " +
		"(the manager's --allow-insecure-webhooks, chart surveys.allowInsecureWebhooks, permits http); " +
		"its messages wait in the collector's outbox"
}
