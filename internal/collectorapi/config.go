package collectorapi

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/cxop-dev/cxop/internal/score"
)

// Config is the collector's configuration file, rendered by the operator
// from the namespace's Touchpoints and Surveys. docs/collector.md
// documents it.
type Config struct {
	// Revision rises whenever the operator renders a config whose content
	// differs from the last one. Replicas over PostgreSQL record it before
	// they accept records under the config, and a replica's survey engine
	// consumes no records while another replica has loaded a newer
	// revision (its surveys may not know what they trigger). 0: none.
	Revision    int64              `json:"revision,omitempty"`
	Touchpoints []TouchpointConfig `json:"touchpoints,omitempty"`
	Surveys     []SurveyConfig     `json:"surveys,omitempty"`
	// ReadTokenSHA256, when set, protects /v1/summary and /v1/export.
	ReadTokenSHA256 []string `json:"readTokenSHA256,omitempty"`
	// Retention is how long records, and every other class of stored
	// customer data, are kept (Prometheus duration, default 400d).
	Retention string `json:"retention,omitempty"`
	// ContactRetention is how long contact fields are kept after delivery
	// succeeded or was given up (Prometheus duration, default 7d).
	ContactRetention string `json:"contactRetention,omitempty"`
	// PageURL is the base URL of this collector's hosted survey page as
	// customers reach it; survey links are PageURL/s/TOKEN.
	PageURL string `json:"pageURL,omitempty"`
	// PseudonymizeCustomers stores HMAC-SHA256(customerIDKey, customer id)
	// instead of the customer id, on every ingest path.
	PseudonymizeCustomers bool `json:"pseudonymizeCustomers,omitempty"`
	// CustomerDataTokenSHA256 are the hashes of the tokens that may read
	// and erase one customer's data (/v1/customers, /v1/erasures).
	CustomerDataTokenSHA256 []string `json:"customerDataTokenSHA256,omitempty"`
}

// TouchpointConfig is one touchpoint.
type TouchpointConfig struct {
	Name          string         `json:"name"`
	WaitThreshold string         `json:"waitThreshold,omitempty"`
	BusinessHours *BusinessHours `json:"businessHours,omitempty"`
	TokenSHA256   []string       `json:"tokenSHA256,omitempty"`
}

// SurveyConfig is one survey.
type SurveyConfig struct {
	Name        string     `json:"name"`
	Type        score.Kind `json:"type"`
	TokenSHA256 []string   `json:"tokenSHA256,omitempty"`

	Question         string         `json:"question,omitempty"`
	FollowUpQuestion string         `json:"followUpQuestion,omitempty"`
	Trigger          *TriggerConfig `json:"trigger,omitempty"`
	// Throttle: never invite a customer invited by any survey within it.
	Throttle string `json:"throttle,omitempty"`
	// LinkTTL is how long a link stays valid (default 7d).
	LinkTTL string `json:"linkTTL,omitempty"`
	// Suspend stops new invitations; links already sent still work.
	Suspend bool           `json:"suspend,omitempty"`
	Webhook *WebhookConfig `json:"webhook,omitempty"`
	// DetractorWebhook receives detractors' answers (closed loop).
	DetractorWebhook *WebhookConfig `json:"detractorWebhook,omitempty"`
}

// TriggerConfig makes a survey transactional.
type TriggerConfig struct {
	Touchpoints []string `json:"touchpoints"`
	// Delay after the interaction (default 0).
	Delay string `json:"delay,omitempty"`
	// SamplePercent of eligible customers invited (default 100).
	SamplePercent *float64 `json:"samplePercent,omitempty"`
}

// WebhookConfig is a receiver of signed webhooks. Key names the signing
// key in the secrets file, which keeps key material out of the config.
type WebhookConfig struct {
	URL string `json:"url"`
	Key string `json:"key"`
}

// BusinessHours is a weekly calendar, as on the Touchpoint API.
type BusinessHours struct {
	TimeZone string           `json:"timeZone,omitempty"`
	Hours    []BusinessPeriod `json:"hours"`
}

// BusinessPeriod is an opening interval on some weekdays.
type BusinessPeriod struct {
	Days  []string `json:"days"`
	Start string   `json:"start"`
	End   string   `json:"end"`
}

// HashToken is the form a token takes in the config: hex SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Files are what a collector is started with: its config and its secrets
// file (nil when there is none).
type Files struct {
	Config  []byte
	Secrets []byte
}

// Secrets is the collector's secrets file: the keys that sign survey links
// and webhooks, base64-encoded. It is a file of its own (a Secret volume
// in a cluster) so that the config, a ConfigMap, holds no key material.
type Secrets struct {
	LinkKeys struct {
		Current  string `json:"current"`
		Previous string `json:"previous,omitempty"`
	} `json:"linkKeys"`
	// WebhookKeys by the name a survey's webhook.key gives.
	WebhookKeys map[string]string `json:"webhookKeys,omitempty"`
	// CustomerIDKey keys customer pseudonyms (base64, at least 32 bytes);
	// required when pseudonymizeCustomers is true.
	CustomerIDKey string `json:"customerIDKey,omitempty"`
	// CustomerIDKeyPrevious is the key customerIDKey replaced (base64),
	// when it was rotated: ingest uses customerIDKey alone, while erasure,
	// access and per-customer exports also find the pseudonyms made with
	// this one.
	CustomerIDKeyPrevious string `json:"customerIDKeyPrevious,omitempty"`
}
