package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SurveyType is the kind of question a Survey asks, which fixes its scale
// and its score.
// +kubebuilder:validation:Enum=NPS;CSAT;CES
type SurveyType string

// The survey types.
const (
	// SurveyTypeNPS asks how likely the customer is to recommend, 0–10.
	// Score: % promoters (9–10) − % detractors (0–6), from −100 to 100.
	SurveyTypeNPS SurveyType = "NPS"
	// SurveyTypeCSAT asks how satisfied the customer is, 1–5.
	// Score: % of answers that are 4 or 5.
	SurveyTypeCSAT SurveyType = "CSAT"
	// SurveyTypeCES asks how easy it was, 1–7. Score: the mean answer.
	SurveyTypeCES SurveyType = "CES"
)

// SurveySpec declares a question customers are asked, and when.
// +kubebuilder:validation:XValidation:rule="has(self.trigger) || has(self.schedule)",message="spec must set trigger, schedule, or both"
type SurveySpec struct {
	// type is NPS (0–10), CSAT (1–5) or CES (1–7).
	// +required
	Type SurveyType `json:"type"`

	// question is the question shown to the customer, such as "How likely
	// are you to recommend us to a friend?".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=500
	Question string `json:"question"`

	// followUpQuestion is an optional open question shown under the scale,
	// such as "What is the main reason for your score?".
	// +optional
	// +kubebuilder:validation:MaxLength=500
	FollowUpQuestion string `json:"followUpQuestion,omitempty"`

	// trigger makes the survey transactional: it is sent after a customer's
	// interaction with one of the listed touchpoints.
	// +optional
	Trigger *SurveyTrigger `json:"trigger,omitempty"`

	// schedule makes the survey relational: it is sent in waves, on a cron
	// schedule, to an audience listed in a ConfigMap.
	// +optional
	Schedule *SurveySchedule `json:"schedule,omitempty"`

	// throttle limits how often one customer is asked.
	// +optional
	Throttle *SurveyThrottle `json:"throttle,omitempty"`

	// linkTTL is how long a survey link stays valid after it is sent, as a
	// Prometheus-style duration. Defaults to 7d.
	// +optional
	LinkTTL Duration `json:"linkTTL,omitempty"`

	// delivery says how invitations reach customers.
	// +optional
	Delivery *SurveyDelivery `json:"delivery,omitempty"`

	// closedLoop sends detractors' answers to a team that follows up.
	// +optional
	ClosedLoop *ClosedLoop `json:"closedLoop,omitempty"`

	// suspend stops sending new invitations; answers to links already sent
	// are still accepted. Defaults to false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// window is the rolling window over which status figures are computed,
	// as a Prometheus-style duration. Defaults to 28d.
	// +optional
	Window Duration `json:"window,omitempty"`
}

// SurveyTrigger sends the survey after an interaction.
type SurveyTrigger struct {
	// touchpoints are the names of Touchpoints, in the same namespace, whose
	// interactions trigger the survey.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=set
	Touchpoints []string `json:"touchpoints"`

	// delay is how long after the interaction the invitation is sent, as a
	// Prometheus-style duration such as "1h" or "2d". Without it the
	// invitation is sent at once.
	// +optional
	Delay Duration `json:"delay,omitempty"`

	// samplePercent is the percentage of eligible customers who are asked,
	// from 0 to 100, such as 100, 25 or "12.5". Sampling is deterministic per
	// customer and survey. Defaults to 100.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('0')) >= 0 && quantity(string(self)).compareTo(quantity('100')) <= 0",message="must be between 0 and 100"
	SamplePercent *resource.Quantity `json:"samplePercent,omitempty"`
}

// SurveySchedule sends the survey in waves.
type SurveySchedule struct {
	// cron is a standard five-field cron expression (minute hour
	// day-of-month month day-of-week), such as "0 9 1 */3 *" for 09:00 on the
	// first day of every quarter.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.split(' ').filter(f, f != '').size() == 5",message="must have five fields: minute hour day-of-month month day-of-week"
	Cron string `json:"cron"`

	// timeZone is the IANA time zone the cron expression is read in, such as
	// "Europe/Paris". Defaults to UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$`
	TimeZone string `json:"timeZone,omitempty"`

	// audience names the ConfigMap key that lists who is asked in each wave:
	// one customer per line (customer id, optionally followed by contact
	// fields) or a JSON array.
	// +required
	Audience ConfigMapKeyReference `json:"audience"`
}

// SurveyThrottle protects customers from being asked too often.
type SurveyThrottle struct {
	// perCustomer is the shortest time between two invitations to the same
	// customer, as a Prometheus-style duration such as "30d".
	// +required
	PerCustomer Duration `json:"perCustomer"`
}

// SurveyDelivery says how invitations are delivered.
type SurveyDelivery struct {
	// webhook receives each invitation (customer id, contact fields, survey,
	// question, signed link, expiry) as a signed JSON POST, for a mailer or
	// SMS gateway to send on.
	// +optional
	Webhook *WebhookSpec `json:"webhook,omitempty"`
}

// ClosedLoop sends unhappy answers to the people who follow them up.
type ClosedLoop struct {
	// detractorWebhook receives each detractor's answer (NPS 0–6, CSAT 1–2,
	// CES 1–2) as a signed JSON POST.
	// +optional
	DetractorWebhook *WebhookSpec `json:"detractorWebhook,omitempty"`
}

// SurveyStatus is the observed state of a Survey.
type SurveyStatus struct {
	// conditions: Ready summarises the survey; Reconciling and Stalled appear
	// only while true. Stale, present only while true, says the numbers are
	// those of the last good reading (its time in the message) because the
	// collector cannot answer.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ingest tells answer sources where to POST responses for this survey and
	// which Secret holds their token.
	// +optional
	Ingest *IngestStatus `json:"ingest,omitempty"`

	// invitationsSent is the number of invitations sent in the window.
	// +optional
	InvitationsSent int64 `json:"invitationsSent,omitempty"`

	// responses is the number of answers received in the window.
	// +optional
	Responses int64 `json:"responses,omitempty"`

	// responseRate is responses as a percentage of invitations sent in the
	// window, as a decimal string.
	// +optional
	ResponseRate string `json:"responseRate,omitempty"`

	// score is the survey's score in the window as a decimal string: NPS
	// (−100 to 100), CSAT percent satisfied, or CES mean.
	// +optional
	Score string `json:"score,omitempty"`

	// scoreLower is the lower bound of the score's 95% confidence interval.
	// +optional
	ScoreLower string `json:"scoreLower,omitempty"`

	// scoreUpper is the upper bound of the score's 95% confidence interval.
	// +optional
	ScoreUpper string `json:"scoreUpper,omitempty"`

	// promoters is the number of NPS answers of 9 or 10 in the window.
	// +optional
	Promoters int64 `json:"promoters,omitempty"`

	// passives is the number of NPS answers of 7 or 8 in the window.
	// +optional
	Passives int64 `json:"passives,omitempty"`

	// detractors is the number of NPS answers from 0 to 6 in the window.
	// +optional
	Detractors int64 `json:"detractors,omitempty"`

	// suppressed counts, by reason, the eligible customers not invited in
	// the window.
	// +optional
	Suppressed *SuppressedInvitations `json:"suppressed,omitempty"`

	// openDetractors is the number of detractors sent to the closed loop
	// and not followed up yet, of any age.
	// +optional
	OpenDetractors int64 `json:"openDetractors,omitempty"`

	// followUpP50 is the median time from a detractor's answer to its
	// follow-up in the window, as a duration such as "2h15m".
	// +optional
	FollowUpP50 string `json:"followUpP50,omitempty"`

	// lastScheduleTime is when the last scheduled wave was sent.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// nextScheduleTime is when the next scheduled wave is due.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`
}

// SuppressedInvitations counts eligible customers not invited, by reason.
type SuppressedInvitations struct {
	// sample: the customer is outside the survey's deterministic sample.
	// +optional
	Sample int64 `json:"sample,omitempty"`
	// throttle: a survey of the namespace asked the customer within the
	// contact budget.
	// +optional
	Throttle int64 `json:"throttle,omitempty"`
	// suspended: the survey was suspended.
	// +optional
	Suspended int64 `json:"suspended,omitempty"`
	// rateLimited: the interaction's touchpoint, or the namespace, had
	// triggered as many invitations in the last hour as the collector
	// allows (--invitation-rate-per-touchpoint, --invitation-rate-per-namespace).
	// A suppressed invitation is not sent later.
	// +optional
	RateLimited int64 `json:"rateLimited,omitempty"`
}

// Survey asks customers one question on a fixed scale (NPS, CSAT or CES),
// after an interaction (trigger), in scheduled waves (schedule), or both, and
// reports the score with its confidence interval in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=svy,categories=cx
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Score",type=string,JSONPath=`.status.score`
// +kubebuilder:printcolumn:name="Responses",type=integer,JSONPath=`.status.responses`
// +kubebuilder:printcolumn:name="Detractors",type=integer,JSONPath=`.status.detractors`
// +kubebuilder:printcolumn:name="Open",type=integer,JSONPath=`.status.openDetractors`,priority=10
// +kubebuilder:printcolumn:name="Response Rate",type=string,JSONPath=`.status.responseRate`,priority=10
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=10
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",message="metadata.name must be a DNS-1123 label (at most 63 lowercase letters, digits and '-'): the collector keys its data, tokens and metrics by it"
// +kubebuilder:validation:XValidation:rule="self.metadata.name != 'link-keys'",message="metadata.name link-keys is reserved: the Secret cxop-survey-link-keys holds the namespace's survey link keys"
type Survey struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the survey.
	// +required
	Spec SurveySpec `json:"spec"`

	// status is the survey's observed state, written by the operator.
	// +optional
	Status SurveyStatus `json:"status,omitempty"`
}

// SurveyList is a list of Surveys.
//
// +kubebuilder:object:root=true
type SurveyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's standard metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the Surveys.
	Items []Survey `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Survey{}, &SurveyList{})
}
