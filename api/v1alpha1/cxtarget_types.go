package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CXTargetSpec declares a customer-experience objective on one subject.
//
// +kubebuilder:validation:XValidation:rule="[has(self.journeyRef), has(self.touchpointRef), has(self.surveyRef)].filter(x, x).size() == 1",message="spec must set exactly one of journeyRef, touchpointRef or surveyRef"
// +kubebuilder:validation:XValidation:rule="has(self.journeyRef) == has(oldSelf.journeyRef) && has(self.touchpointRef) == has(oldSelf.touchpointRef) && has(self.surveyRef) == has(oldSelf.surveyRef)",message="spec subject (journeyRef, touchpointRef or surveyRef) is immutable; create a new CXTarget instead"
// +kubebuilder:validation:XValidation:rule="!has(self.objective.waitTime) || !has(self.surveyRef)",message="spec.objective.waitTime needs a touchpointRef or journeyRef subject"
// +kubebuilder:validation:XValidation:rule="!has(self.objective.firstContactResolution) || !has(self.surveyRef)",message="spec.objective.firstContactResolution needs a touchpointRef or journeyRef subject"
// +kubebuilder:validation:XValidation:rule="!has(self.objective.responseRate) || has(self.surveyRef)",message="spec.objective.responseRate needs a surveyRef subject"
// +kubebuilder:validation:XValidation:rule="!(has(self.objective.nps) || has(self.objective.csat) || has(self.objective.ces)) || !has(self.touchpointRef)",message="spec.objective nps, csat and ces need a surveyRef or journeyRef subject"
type CXTargetSpec struct {
	// journeyRef makes a Journey the subject of the target. Exactly one of
	// journeyRef, touchpointRef and surveyRef must be set, and it cannot be
	// changed afterwards.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.journeyRef is immutable"
	JourneyRef *LocalObjectReference `json:"journeyRef,omitempty"`

	// touchpointRef makes a Touchpoint the subject of the target. Exactly one
	// of journeyRef, touchpointRef and surveyRef must be set, and it cannot be
	// changed afterwards.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.touchpointRef is immutable"
	TouchpointRef *LocalObjectReference `json:"touchpointRef,omitempty"`

	// surveyRef makes a Survey the subject of the target. Exactly one of
	// journeyRef, touchpointRef and surveyRef must be set, and it cannot be
	// changed afterwards.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.surveyRef is immutable"
	SurveyRef *LocalObjectReference `json:"surveyRef,omitempty"`

	// objective is what must hold over the window. Exactly one of nps, csat,
	// ces, waitTime, responseRate and firstContactResolution must be set.
	// +required
	Objective Objective `json:"objective"`

	// window is the rolling window the objective is evaluated over, as a
	// Prometheus-style duration such as "7d" or "28d". Defaults to 28d.
	// +optional
	Window Duration `json:"window,omitempty"`

	// minSamples is the fewest answers or interactions in the window for the
	// target to be judged; below it the state is InsufficientData, never
	// Breached. Defaults to 30.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	MinSamples *int32 `json:"minSamples,omitempty"`

	// alerting configures how breaches are signalled beyond status,
	// conditions and events.
	// +optional
	Alerting *Alerting `json:"alerting,omitempty"`
}

// Objective is a CX objective. Exactly one field is set.
//
// +kubebuilder:validation:XValidation:rule="[has(self.nps), has(self.csat), has(self.ces), has(self.waitTime), has(self.responseRate), has(self.firstContactResolution)].filter(x, x).size() == 1",message="spec.objective must set exactly one of nps, csat, ces, waitTime, responseRate or firstContactResolution"
type Objective struct {
	// nps requires the Net Promoter Score to stay at or above a minimum.
	// +optional
	NPS *NPSObjective `json:"nps,omitempty"`

	// csat requires the percentage of satisfied answers (4 or 5 of 5) to stay
	// at or above a minimum.
	// +optional
	CSAT *PercentObjective `json:"csat,omitempty"`

	// ces requires the mean Customer Effort Score (1–7, higher is easier) to
	// stay at or above a minimum.
	// +optional
	CES *CESObjective `json:"ces,omitempty"`

	// waitTime requires a percentage of waits to be at or under a threshold,
	// such as 95% of chat waits at or under 2m.
	// +optional
	WaitTime *WaitTimeObjective `json:"waitTime,omitempty"`

	// responseRate requires the percentage of invitations answered to stay at
	// or above a minimum: answers received over invitations the receiver of
	// spec.delivery.webhook acknowledged. The collector counts invitations
	// by UTC day, so the window reaches back to the midnight it starts in,
	// and burn rates are shown over 1d and 3d only. Answers beyond the
	// invitations sent (posted to /v1/responses without one) are not
	// counted, so the rate never exceeds 100%. No alert rules are generated
	// for it (the AlertRules condition says so).
	// +optional
	ResponseRate *PercentObjective `json:"responseRate,omitempty"`

	// firstContactResolution requires the percentage of interactions resolved
	// at first contact to stay at or above a minimum.
	// +optional
	FirstContactResolution *PercentObjective `json:"firstContactResolution,omitempty"`
}

// NPSObjective is a minimum Net Promoter Score.
type NPSObjective struct {
	// min is the lowest acceptable NPS, from -100 to 100.
	// +required
	// +kubebuilder:validation:Minimum=-100
	// +kubebuilder:validation:Maximum=100
	Min int32 `json:"min"`
}

// PercentObjective is a minimum percentage.
type PercentObjective struct {
	// min is the lowest acceptable percentage, from 0 to 100, such as 85 or
	// "99.5".
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('0')) >= 0 && quantity(string(self)).compareTo(quantity('100')) <= 0",message="must be between 0 and 100"
	Min resource.Quantity `json:"min"`
}

// CESObjective is a minimum mean Customer Effort Score.
type CESObjective struct {
	// min is the lowest acceptable mean score, from 1 to 7, such as "5.5".
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1')) >= 0 && quantity(string(self)).compareTo(quantity('7')) <= 0",message="must be between 1 and 7"
	Min resource.Quantity `json:"min"`
}

// WaitTimeObjective requires a share of waits to be short enough.
type WaitTimeObjective struct {
	// threshold is the longest compliant wait, as a Prometheus-style duration
	// such as "2m". Defaults to the Touchpoint's spec.waitTime.threshold.
	// +optional
	Threshold Duration `json:"threshold,omitempty"`

	// percent is the percentage of waits that must be at or under the
	// threshold, from 0 to 100 (exclusive of 100, which leaves no error
	// budget), such as 95 or "99.5".
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('0')) > 0 && quantity(string(self)).compareTo(quantity('100')) < 0",message="must be greater than 0 and less than 100"
	Percent resource.Quantity `json:"percent"`
}

// Alerting configures breach signalling.
//
// +kubebuilder:validation:XValidation:rule="!has(self.webhook)",message="spec.alerting.webhook is removed: route breaches through Alertmanager's receivers (the CXTargetErrorBudgetBurn alerts, or an alert on cxop_target_breached) or forward the TargetBreached and TargetRecovered events"
type Alerting struct {
	// burnRateAlerts generates a PrometheusRule with multi-window,
	// multi-burn-rate alerts for this target when the Prometheus Operator's
	// CRDs are installed. Defaults to true. A target the rules cannot
	// express is still evaluated; its AlertRules condition says why it has
	// no rules.
	// +optional
	BurnRateAlerts *bool `json:"burnRateAlerts,omitempty"`

	// labels are added to every generated alert, such as team or severity
	// routing labels.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	Labels map[string]string `json:"labels,omitempty"`

	// runbookURL is put in the runbook_url annotation of generated alerts.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="must be an absolute URL"
	RunbookURL string `json:"runbookURL,omitempty"`

	// atRiskBelow is the error budget remaining, in percent, under which a
	// target that is not breached is AtRisk. Defaults to 25.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('0')) >= 0 && quantity(string(self)).compareTo(quantity('100')) <= 0",message="must be between 0 and 100"
	AtRiskBelow *resource.Quantity `json:"atRiskBelow,omitempty"`

	// webhook is removed and refused: route breaches through Alertmanager's
	// receivers (the generated CXTargetErrorBudgetBurn alerts, or an alert
	// on cxop_target_breached), which keep silences, inhibition and
	// grouping, or forward the TargetBreached and TargetRecovered events.
	// An object stored before it was refused keeps it, unused, until its
	// spec.alerting is next changed.
	//
	// Deprecated: refused by the schema; nothing reads it.
	// +optional
	Webhook *WebhookSpec `json:"webhook,omitempty"`
}

// TargetState is the verdict on a CXTarget.
// +kubebuilder:validation:Enum=Met;AtRisk;Breached;InsufficientData
type TargetState string

// The target states.
const (
	// TargetStateMet: the objective holds.
	TargetStateMet TargetState = "Met"
	// TargetStateAtRisk: not breached, but the error budget is running low or
	// burning faster than the window allows.
	TargetStateAtRisk TargetState = "AtRisk"
	// TargetStateBreached: the whole 95% confidence interval of the current
	// value is on the wrong side of the objective.
	TargetStateBreached TargetState = "Breached"
	// TargetStateInsufficientData: fewer samples than spec.minSamples.
	TargetStateInsufficientData TargetState = "InsufficientData"
)

// BudgetShare is one touchpoint's share of a Journey target's spent budget.
type BudgetShare struct {
	// touchpoint is the Touchpoint's name.
	Touchpoint string `json:"touchpoint"`
	// percent is its share of the bad events, as a decimal string.
	Percent string `json:"percent"`
}

// BurnRate is the error-budget burn rate over one lookback window.
type BurnRate struct {
	// window is the lookback, such as "1h" or "3d".
	// +required
	Window Duration `json:"window"`
	// rate is the burn rate as a decimal string: 1 spends the budget exactly
	// over the target's window, 14.4 spends 2% of a 30-day budget in an hour.
	// +required
	Rate string `json:"rate"`
}

// CXTargetStatus is the observed state of a CXTarget.
type CXTargetStatus struct {
	// conditions: Ready says the target can be evaluated; TargetMet says
	// whether the objective holds; AlertRules says whether its burn-rate
	// alerts are generated, or what they cannot express (a window under 6h,
	// an objective at the best value, a response rate); Reconciling and
	// Stalled appear only while true; Stale, present only while true, says
	// state and numbers are those of the last good reading (its time in the
	// message) because the collector cannot answer.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// observedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// state is Met, AtRisk, Breached or InsufficientData.
	// +optional
	State TargetState `json:"state,omitempty"`

	// current is the objective's measured value over the window, as a
	// decimal string.
	// +optional
	Current string `json:"current,omitempty"`

	// currentLower is the lower bound of the 95% confidence interval of
	// current.
	// +optional
	CurrentLower string `json:"currentLower,omitempty"`

	// currentUpper is the upper bound of the 95% confidence interval of
	// current.
	// +optional
	CurrentUpper string `json:"currentUpper,omitempty"`

	// objective is the objective in words, such as ">= 40" or
	// "95% <= 2m".
	// +optional
	Objective string `json:"objective,omitempty"`

	// samples is the number of answers or interactions the value is based on.
	// +optional
	Samples int64 `json:"samples,omitempty"`

	// errorBudgetRemaining is the percentage of the error budget left in the
	// window, as a decimal string; negative once the budget is overspent.
	// +optional
	ErrorBudgetRemaining string `json:"errorBudgetRemaining,omitempty"`

	// burnRates are the burn rates over 1h, 6h, 1d and 3d (1d and 3d only
	// for a response rate, whose invitations are counted by UTC day; none
	// for an objective at the best value, such as csat.min 100, which
	// leaves no error budget to burn).
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=window
	BurnRates []BurnRate `json:"burnRates,omitempty"`

	// budgetAttribution, for a ratio objective on a Journey, says which
	// touchpoint spent how much of the budget: each touchpoint's share of
	// the bad events in the window, largest first.
	// +optional
	// +listType=atomic
	BudgetAttribution []BudgetShare `json:"budgetAttribution,omitempty"`

	// lastTransitionTime is when state last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
}

// CXTarget is an SLO-like customer-experience objective on a Journey,
// Touchpoint or Survey, such as "NPS >= 40 over 28d" or "95% of chat waits
// <= 2m". The operator evaluates it over its rolling window with confidence
// intervals, tracks the error budget and burn rates, and signals breaches as
// conditions, events, metrics and generated alert rules.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cxt,categories=cx
// +kubebuilder:printcolumn:name="Objective",type=string,JSONPath=`.status.objective`
// +kubebuilder:printcolumn:name="Current",type=string,JSONPath=`.status.current`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Budget",type=string,JSONPath=`.status.errorBudgetRemaining`,description="Error budget remaining, percent"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Samples",type=integer,JSONPath=`.status.samples`,priority=10
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=10
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CXTarget struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the target.
	// +required
	Spec CXTargetSpec `json:"spec"`

	// status is the target's observed state, written by the operator.
	// +optional
	Status CXTargetStatus `json:"status,omitempty"`
}

// CXTargetList is a list of CXTargets.
//
// +kubebuilder:object:root=true
type CXTargetList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's standard metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the CXTargets.
	Items []CXTarget `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CXTarget{}, &CXTargetList{})
}
