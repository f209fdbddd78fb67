// Package v1alpha1 contains the cx.cxop.dev/v1alpha1 API: Journeys,
// Touchpoints, Surveys and CXTargets.
//
// The package holds types, constants and defaulting getters only; it imports
// no controller code, so that other programs (GitOps tooling, validators,
// clients) can depend on it cheaply.
//
// +kubebuilder:object:generate=true
// +groupName=cx.cxop.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every cxop kind.
	GroupVersion = schema.GroupVersion{Group: "cx.cxop.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the cxop kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the cxop kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
