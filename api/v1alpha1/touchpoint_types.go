package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Channel is the medium through which customers reach a Touchpoint.
// +kubebuilder:validation:Enum=web;mobile;email;chat;phone;store;social;other
type Channel string

// The channels a Touchpoint may have.
const (
	ChannelWeb    Channel = "web"
	ChannelMobile Channel = "mobile"
	ChannelEmail  Channel = "email"
	ChannelChat   Channel = "chat"
	ChannelPhone  Channel = "phone"
	ChannelStore  Channel = "store"
	ChannelSocial Channel = "social"
	ChannelOther  Channel = "other"
)

// Weekday is a day of the week, as used in business hours.
// +kubebuilder:validation:Enum=Monday;Tuesday;Wednesday;Thursday;Friday;Saturday;Sunday
type Weekday string

// TouchpointSpec declares a place where customers interact with the business.
type TouchpointSpec struct {
	// channel is the medium of the touchpoint: web, mobile, email, chat,
	// phone, store, social or other.
	// +required
	Channel Channel `json:"channel"`

	// displayName is a human-readable name for dashboards and messages, such
	// as "Support chat (EU)". Defaults to metadata.name.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// waitTime sets the wait a customer may be kept waiting (in a chat queue,
	// on hold, at a counter) before the wait counts as non-compliant. Without
	// it, waits are recorded but no compliance is computed.
	// +optional
	WaitTime *WaitTimeSpec `json:"waitTime,omitempty"`

	// businessHours is the calendar during which the touchpoint is staffed.
	// When set, waits of interactions outside business hours are excluded from
	// wait-time compliance and wait-time objectives, so night-time silence
	// neither pages nor flatters. Without it, every hour counts.
	// +optional
	BusinessHours *BusinessHours `json:"businessHours,omitempty"`

	// window is the rolling window over which status figures are computed,
	// as a Prometheus-style duration such as "7d" or "28d". Defaults to 28d.
	// +optional
	Window Duration `json:"window,omitempty"`
}

// WaitTimeSpec is the wait-time threshold of a Touchpoint.
type WaitTimeSpec struct {
	// threshold is the longest compliant wait: a wait at or under it is
	// compliant. A Prometheus-style duration such as "30s" or "2m".
	// +required
	Threshold Duration `json:"threshold"`
}

// BusinessHours is a weekly calendar in one time zone.
type BusinessHours struct {
	// timeZone is the IANA time zone the hours are given in, such as
	// "Europe/Berlin" or "America/New_York". Defaults to UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$`
	TimeZone string `json:"timeZone,omitempty"`

	// hours lists the opening intervals; a moment is within business hours
	// when it falls in any of them.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=28
	// +listType=atomic
	Hours []BusinessHoursInterval `json:"hours"`
}

// BusinessHoursInterval is one daily opening interval on some weekdays.
// +kubebuilder:validation:XValidation:rule="self.start < self.end",message="start must be before end"
type BusinessHoursInterval struct {
	// days are the weekdays this interval applies to.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=7
	// +listType=set
	Days []Weekday `json:"days"`

	// start is the local opening time as HH:MM (24-hour clock), inclusive.
	// +required
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`

	// end is the local closing time as HH:MM (24-hour clock), exclusive;
	// "24:00" means midnight at the end of the day.
	// +required
	// +kubebuilder:validation:Pattern=`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`
	End string `json:"end"`
}

// TouchpointStatus is the observed state of a Touchpoint.
type TouchpointStatus struct {
	// conditions: Ready summarises the touchpoint; Reconciling and Stalled
	// appear only while true. Stale, present only while true, says the
	// numbers are those of the last good reading (its time in the message)
	// because the collector cannot answer.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ingest tells event sources where to POST interactions for this
	// touchpoint and which Secret holds their token.
	// +optional
	Ingest *IngestStatus `json:"ingest,omitempty"`

	// interactions is the number of interactions in the window.
	// +optional
	Interactions int64 `json:"interactions,omitempty"`

	// waitCompliance is the percentage of waits at or under the threshold in
	// the window, as a decimal string such as "97.2".
	// +optional
	WaitCompliance string `json:"waitCompliance,omitempty"`

	// waitP50 is the median wait in the window, such as "42s".
	// +optional
	WaitP50 string `json:"waitP50,omitempty"`

	// waitP95 is the 95th-percentile wait in the window, such as "1m50s".
	// +optional
	WaitP95 string `json:"waitP95,omitempty"`

	// firstContactResolution is the percentage of interactions resolved at
	// first contact in the window (of those that report it), as a decimal
	// string.
	// +optional
	FirstContactResolution string `json:"firstContactResolution,omitempty"`

	// lastEventTime is the time of the most recent interaction received.
	// +optional
	LastEventTime *metav1.Time `json:"lastEventTime,omitempty"`
}

// Touchpoint is a place where customers interact with the business (a web
// shop, a checkout, a support chat, a phone line, a store). The operator runs
// a collector for the namespace that receives the touchpoint's interaction
// events, and reports the interactions and wait-time compliance in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp,categories=cx
// +kubebuilder:printcolumn:name="Channel",type=string,JSONPath=`.spec.channel`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Compliance",type=string,JSONPath=`.status.waitCompliance`,description="Percent of waits at or under the threshold"
// +kubebuilder:printcolumn:name="Interactions",type=integer,JSONPath=`.status.interactions`
// +kubebuilder:printcolumn:name="Wait P95",type=string,JSONPath=`.status.waitP95`,priority=10
// +kubebuilder:printcolumn:name="Last Event",type=date,JSONPath=`.status.lastEventTime`,priority=10
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=10
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",message="metadata.name must be a DNS-1123 label (at most 63 lowercase letters, digits and '-'): the collector keys its data, tokens and metrics by it"
type Touchpoint struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the touchpoint.
	// +required
	Spec TouchpointSpec `json:"spec"`

	// status is the touchpoint's observed state, written by the operator.
	// +optional
	Status TouchpointStatus `json:"status,omitempty"`
}

// TouchpointList is a list of Touchpoints.
//
// +kubebuilder:object:root=true
type TouchpointList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's standard metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the Touchpoints.
	Items []Touchpoint `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Touchpoint{}, &TouchpointList{})
}
