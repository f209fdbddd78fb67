package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// JourneySpec declares the ordered stages a customer passes through.
type JourneySpec struct {
	// displayName is a human-readable name, such as "Buy online, get help".
	// Defaults to metadata.name.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// stages are the steps of the journey in the order customers take them,
	// such as discover, buy, receive, get help. Each stage lists the
	// touchpoints where it happens. Stage names must be unique.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:XValidation:rule="self.all(s, self.exists_one(t, t.name == s.name))",message="stage names must be unique"
	// +listType=atomic
	Stages []JourneyStage `json:"stages"`

	// surveys are the names of Surveys, in the same namespace, whose answers
	// make up the journey's score.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=set
	Surveys []string `json:"surveys,omitempty"`

	// window is the rolling window over which status figures are computed,
	// as a Prometheus-style duration. Defaults to 28d.
	// +optional
	Window Duration `json:"window,omitempty"`
}

// JourneyStage is one step of a Journey.
type JourneyStage struct {
	// name identifies the stage within the journey, as a DNS label such as
	// "checkout".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// displayName is a human-readable name for the stage.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// touchpoints are the names of Touchpoints, in the same namespace, where
	// this stage happens. At least one.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +listType=set
	Touchpoints []string `json:"touchpoints"`
}

// JourneyStageStatus is the observed state of one stage.
type JourneyStageStatus struct {
	// name of the stage.
	// +required
	Name string `json:"name"`

	// interactions is the number of interactions at the stage's touchpoints
	// in the window.
	// +optional
	Interactions int64 `json:"interactions,omitempty"`

	// customers is the number of distinct customers seen at the stage in the
	// window.
	// +optional
	Customers int64 `json:"customers,omitempty"`

	// waitCompliance is the percentage of compliant waits at the stage's
	// touchpoints in the window, as a decimal string.
	// +optional
	WaitCompliance string `json:"waitCompliance,omitempty"`

	// score is the NPS of the Journey's NPS surveys that a touchpoint of
	// this stage triggers, over all their answers in the window (a survey
	// triggered at several stages counts at each), as a decimal string;
	// empty when they have no answers.
	// +optional
	Score string `json:"score,omitempty"`

	// conversion is this stage's distinct customers as a percentage of the
	// previous stage's, in the window, as a decimal string; empty for the
	// first stage. It is a ratio of two counts, not a funnel that follows
	// each customer from stage to stage, so it can exceed 100.
	// +optional
	Conversion string `json:"conversion,omitempty"`
}

// TargetCounts counts the CXTargets whose subject is a journey, by state.
type TargetCounts struct {
	// met is the number of targets in state Met.
	// +optional
	Met int32 `json:"met,omitempty"`
	// breached is the number of targets in state Breached.
	// +optional
	Breached int32 `json:"breached,omitempty"`
	// atRisk is the number of targets in state AtRisk.
	// +optional
	AtRisk int32 `json:"atRisk,omitempty"`
}

// JourneyStatus is the observed state of a Journey.
type JourneyStatus struct {
	// conditions: Ready summarises the journey; Reconciling and Stalled
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

	// stages are the per-stage figures, in the order of spec.stages.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +listType=atomic
	Stages []JourneyStageStatus `json:"stages,omitempty"`

	// nps is the journey's NPS over the answers of its NPS surveys in the
	// window, as a decimal string.
	// +optional
	NPS string `json:"nps,omitempty"`

	// waitCompliance is the percentage of compliant waits over all the
	// journey's touchpoints in the window, as a decimal string.
	// +optional
	WaitCompliance string `json:"waitCompliance,omitempty"`

	// waitBudgetSpentBy says which touchpoint spent how much of the
	// Journey's wait-time budget: each touchpoint's share of the waits over
	// its threshold in the window, largest first.
	// +optional
	// +listType=atomic
	WaitBudgetSpentBy []BudgetShare `json:"waitBudgetSpentBy,omitempty"`

	// targets counts the CXTargets on this journey by state.
	// +optional
	Targets *TargetCounts `json:"targets,omitempty"`
}

// Journey is an ordered list of stages a customer passes through, each at one
// or more Touchpoints, with the Surveys that measure it. Its status rolls up
// the stages' interactions, conversion, wait-time compliance and NPS.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=jny,categories=cx
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="NPS",type=string,JSONPath=`.status.nps`
// +kubebuilder:printcolumn:name="Compliance",type=string,JSONPath=`.status.waitCompliance`
// +kubebuilder:printcolumn:name="Breached",type=integer,JSONPath=`.status.targets.breached`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=10
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Journey struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the journey.
	// +required
	Spec JourneySpec `json:"spec"`

	// status is the journey's observed state, written by the operator.
	// +optional
	Status JourneyStatus `json:"status,omitempty"`
}

// JourneyList is a list of Journeys.
//
// +kubebuilder:object:root=true
type JourneyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the list's standard metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the Journeys.
	Items []Journey `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Journey{}, &JourneyList{})
}
