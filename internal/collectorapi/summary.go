package collectorapi

import (
	"time"

	"github.com/cxop-dev/cxop/internal/score"
)

// TouchpointSummary answers GET /v1/summary?touchpoint=…; pointers are
// absent when there is nothing to compute them from, never NaN.
type TouchpointSummary struct {
	Window                 string    `json:"window"`
	Start                  time.Time `json:"start"`
	End                    time.Time `json:"end"`
	Touchpoints            []string  `json:"touchpoints"`
	Interactions           uint64    `json:"interactions"`
	Customers              uint64    `json:"customers"`
	Waits                  uint64    `json:"waits"`
	AssessedWaits          uint64    `json:"assessedWaits"`
	CompliantWaits         uint64    `json:"compliantWaits"`
	WaitCompliance         *float64  `json:"waitCompliance,omitempty"` // percent
	WaitThresholdSeconds   *float64  `json:"waitThresholdSeconds,omitempty"`
	WaitP50Seconds         *float64  `json:"waitP50Seconds,omitempty"`
	WaitP95Seconds         *float64  `json:"waitP95Seconds,omitempty"`
	WaitP99Seconds         *float64  `json:"waitP99Seconds,omitempty"`
	ResolvedKnown          uint64    `json:"resolvedKnown"`
	Resolved               uint64    `json:"resolved"`
	FirstContactResolution *float64  `json:"firstContactResolution,omitempty"` // percent
	LastEventTime          *string   `json:"lastEventTime,omitempty"`
}

// SurveySummary answers GET /v1/summary?survey=….
type SurveySummary struct {
	Window           string     `json:"window"`
	Start            time.Time  `json:"start"`
	End              time.Time  `json:"end"`
	Survey           string     `json:"survey"`
	Type             score.Kind `json:"type"`
	Responses        uint64     `json:"responses"`
	Customers        uint64     `json:"customers"`
	Score            *float64   `json:"score,omitempty"`
	ScoreLower       *float64   `json:"scoreLower,omitempty"`
	ScoreUpper       *float64   `json:"scoreUpper,omitempty"`
	Promoters        *uint64    `json:"promoters,omitempty"`
	Passives         *uint64    `json:"passives,omitempty"`
	Detractors       *uint64    `json:"detractors,omitempty"`
	Satisfied        *uint64    `json:"satisfied,omitempty"`
	Unhappy          uint64     `json:"unhappy"`
	Distribution     []uint64   `json:"distribution"` // index = score
	LastResponseTime *string    `json:"lastResponseTime,omitempty"`
	// Invitations counts what the survey engine did in the window (whole
	// UTC days).
	Invitations *InvitationSummary `json:"invitations,omitempty"`
}

// InvitationSummary is a survey's invitations over a window.
type InvitationSummary struct {
	// Invited customers: invitations written to the outbox.
	Invited uint64 `json:"invited"`
	// Sent: invitations the receiver acknowledged with 2xx.
	Sent       uint64            `json:"sent"`
	Suppressed map[string]uint64 `json:"suppressed"`
	Retries    uint64            `json:"deliveryRetries"`
	Failed     uint64            `json:"deliveryFailed"`
	// ResponseRate is responses over invitations sent, in percent.
	ResponseRate *float64 `json:"responseRate,omitempty"`
	// WebhookGoneSince is when the receiver answered 410 Gone; delivery is
	// off until the webhook URL changes.
	WebhookGoneSince *string `json:"webhookGoneSince,omitempty"`
	// WebhookFailingSince is when the webhook's first message ran out of
	// retries and was parked; WebhookError is the last attempt's error.
	// Parked messages are delivered once the webhook works again.
	WebhookFailingSince *string `json:"webhookFailingSince,omitempty"`
	WebhookError        string  `json:"webhookError,omitempty"`
	// Detractors sent to the closed loop in the window, those of any age
	// not followed up yet, and the median time to follow up the window's.
	Detractors         uint64   `json:"detractors"`
	OpenDetractors     uint64   `json:"openDetractors"`
	FollowUpP50Seconds *float64 `json:"followUpP50Seconds,omitempty"`
}

// AllSummary answers GET /v1/summary with no subject: every configured
// touchpoint and survey, so the operator needs one call per namespace.
type AllSummary struct {
	Touchpoints map[string]*TouchpointSummary `json:"touchpoints"`
	Surveys     map[string]*SurveySummary     `json:"surveys"`
}
