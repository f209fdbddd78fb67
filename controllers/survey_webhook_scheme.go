package controllers

import (
	"net/url"
	"strings"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// insecureWebhooks explains why collectors will not send to the Survey's
// webhooks, or returns "": a plain-http webhook under https-only collectors
// is left out of their config and its messages wait, which status must not
// show as delivering.
func insecureWebhooks(svy *cxv1.Survey, allowHTTP bool) string {
	if allowHTTP {
		return ""
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
		return ""
	}
	return strings.Join(fields, " and ") + ": plain http, and collectors send webhooks over https only " +
		"(the manager's --allow-insecure-webhooks, chart surveys.allowInsecureWebhooks, permits http); " +
		"its messages wait in the collector's outbox"
}
