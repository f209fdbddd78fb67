package v1alpha1

import (
	"time"

	"github.com/prometheus/common/model"
)

// Duration is a Prometheus-style duration such as "90s", "5m", "2h", "28d" or
// "1w": one or more whole numbers, each followed by a unit (ms, s, m, h, d, w,
// y), largest unit first. It must be greater than zero.
//
// +kubebuilder:validation:MinLength=2
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^(0+(y|w|d|h|m|s|ms))+$')",message="must be greater than zero"
type Duration string

// Parse returns the duration as a time.Duration.
func (d Duration) Parse() (time.Duration, error) {
	md, err := model.ParseDuration(string(d))
	return time.Duration(md), err
}

// LocalObjectReference names an object of a known kind in the same namespace.
type LocalObjectReference struct {
	// name of the referenced object, in the same namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// SecretKeyReference names one key of a Secret in the same namespace.
type SecretKeyReference struct {
	// name of the Secret, in the same namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key within the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// ConfigMapKeyReference names one key of a ConfigMap in the same namespace.
type ConfigMapKeyReference struct {
	// name of the ConfigMap, in the same namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key within the ConfigMap's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// WebhookSpec is an outbound HTTPS endpoint that cxop POSTs signed JSON to.
type WebhookSpec struct {
	// url is the absolute https URL that receives the POST. The schema
	// also takes plain http, but collectors send to it only when the
	// manager runs with --allow-insecure-webhooks (as `cxop dev` does);
	// otherwise a Survey's messages wait, and its Delivering condition
	// says why.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || url(self).getScheme() == 'http')",message="must be an absolute http or https URL"
	URL string `json:"url"`

	// secretRef names the Secret key holding the HMAC-SHA256 signing key.
	// Requests are signed in the Standard Webhooks form (webhook-id,
	// webhook-timestamp and webhook-signature headers).
	// +required
	SecretRef SecretKeyReference `json:"secretRef"`
}

// IngestStatus tells clients where and with what credential to send data.
type IngestStatus struct {
	// url is the collector's base URL; clients append /v1/events (for a
	// Touchpoint) or /v1/responses (for a Survey).
	// +optional
	URL string `json:"url,omitempty"`

	// tokenSecretRef names the Secret key, created by the operator, that
	// holds the bearer token allowed to write for this object only.
	// +optional
	TokenSecretRef *SecretKeyReference `json:"tokenSecretRef,omitempty"`
}
