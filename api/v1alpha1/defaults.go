package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
)

// Defaults of optional fields. They live in Go rather than in the schema so
// that they can change between releases without rewriting stored objects.
const (
	// DefaultWindow is the rolling window of every kind when spec.window is
	// not set.
	DefaultWindow Duration = "28d"

	// DefaultLinkTTL is how long a survey link stays valid.
	DefaultLinkTTL Duration = "7d"

	// DefaultMinSamples is the fewest samples a CXTarget is judged on.
	DefaultMinSamples int32 = 30

	// DefaultTimeZone is the time zone of schedules and business hours.
	DefaultTimeZone = "UTC"
)

var (
	// DefaultSamplePercent is the share of eligible customers asked.
	DefaultSamplePercent = resource.MustParse("100")

	// DefaultAtRiskBelow is the error budget remaining, in percent, under
	// which a target is AtRisk.
	DefaultAtRiskBelow = resource.MustParse("25")
)

func windowOrDefault(w Duration) Duration {
	if w == "" {
		return DefaultWindow
	}
	return w
}

func timeZoneOrDefault(tz string) string {
	if tz == "" {
		return DefaultTimeZone
	}
	return tz
}

// GetWindow returns spec.window or its default.
func (s *TouchpointSpec) GetWindow() Duration { return windowOrDefault(s.Window) }

// GetWindow returns spec.window or its default.
func (s *SurveySpec) GetWindow() Duration { return windowOrDefault(s.Window) }

// GetWindow returns spec.window or its default.
func (s *JourneySpec) GetWindow() Duration { return windowOrDefault(s.Window) }

// GetWindow returns spec.window or its default.
func (s *CXTargetSpec) GetWindow() Duration { return windowOrDefault(s.Window) }

// GetDisplayName returns spec.displayName, or name when it is empty.
func (t *Touchpoint) GetDisplayName() string {
	if t.Spec.DisplayName != "" {
		return t.Spec.DisplayName
	}
	return t.Name
}

// GetDisplayName returns spec.displayName, or name when it is empty.
func (j *Journey) GetDisplayName() string {
	if j.Spec.DisplayName != "" {
		return j.Spec.DisplayName
	}
	return j.Name
}

// GetTimeZone returns the business hours' time zone or its default.
func (b *BusinessHours) GetTimeZone() string { return timeZoneOrDefault(b.TimeZone) }

// GetTimeZone returns the schedule's time zone or its default.
func (s *SurveySchedule) GetTimeZone() string { return timeZoneOrDefault(s.TimeZone) }

// GetLinkTTL returns spec.linkTTL or its default.
func (s *SurveySpec) GetLinkTTL() Duration {
	if s.LinkTTL == "" {
		return DefaultLinkTTL
	}
	return s.LinkTTL
}

// GetSamplePercent returns spec.trigger.samplePercent or its default.
func (t *SurveyTrigger) GetSamplePercent() resource.Quantity {
	if t.SamplePercent == nil {
		return DefaultSamplePercent.DeepCopy()
	}
	return t.SamplePercent.DeepCopy()
}

// GetMinSamples returns spec.minSamples or its default.
func (s *CXTargetSpec) GetMinSamples() int32 {
	if s.MinSamples == nil {
		return DefaultMinSamples
	}
	return *s.MinSamples
}

// GetBurnRateAlerts reports whether burn-rate alerts are wanted (default true).
func (a *Alerting) GetBurnRateAlerts() bool {
	return a == nil || a.BurnRateAlerts == nil || *a.BurnRateAlerts
}

// GetAtRiskBelow returns spec.alerting.atRiskBelow or its default.
func (a *Alerting) GetAtRiskBelow() resource.Quantity {
	if a == nil || a.AtRiskBelow == nil {
		return DefaultAtRiskBelow.DeepCopy()
	}
	return a.AtRiskBelow.DeepCopy()
}

// Subject returns the kind of the target's subject ("Journey",
// "Touchpoint" or "Survey") and its name, or empty strings when none is set.
func (s *CXTargetSpec) Subject() (kind, name string) {
	switch {
	case s.JourneyRef != nil:
		return "Journey", s.JourneyRef.Name
	case s.TouchpointRef != nil:
		return "Touchpoint", s.TouchpointRef.Name
	case s.SurveyRef != nil:
		return "Survey", s.SurveyRef.Name
	}
	return "", ""
}
