package controllers

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// checkTouchpointSpec reports what the schema cannot: a window that
// overflows, a time zone that does not exist.
func checkTouchpointSpec(spec *cxv1.TouchpointSpec) error {
	errs := []error{checkDuration("spec.window", spec.Window)}
	if spec.WaitTime != nil {
		errs = append(errs, checkDuration("spec.waitTime.threshold", spec.WaitTime.Threshold))
	}
	if spec.BusinessHours != nil {
		errs = append(errs, checkTimeZone("spec.businessHours.timeZone", spec.BusinessHours.GetTimeZone()))
	}
	return firstError(errs...)
}

// setTouchpointStatus writes the whole status obs implies: conditions,
// observedGeneration, where to send events, and the collector's numbers.
// With no summary the numbers are kept when obs.stale says so (the
// collector cannot answer; the Stale condition marks them) and cleared
// otherwise: status never presents an old number as live.
func setTouchpointStatus(tp *cxv1.Touchpoint, obs touchpointObservation) {
	setReadinessConditions(&tp.Status.Conditions, tp.Generation, obs.readiness)
	setStaleCondition(&tp.Status.Conditions, obs.stale)
	tp.Status.ObservedGeneration = tp.Generation
	if url := obs.ingestURL; url != "" && obs.invalid == nil {
		tp.Status.Ingest = &cxv1.IngestStatus{
			URL:            url,
			TokenSecretRef: &cxv1.SecretKeyReference{Name: TouchpointTokenSecretName(tp.Name), Key: TokenKey},
		}
	}
	st := &tp.Status
	summary := obs.summary
	if summary == nil && obs.stale.keep {
		return
	}
	st.Interactions, st.WaitCompliance, st.WaitP50, st.WaitP95, st.FirstContactResolution, st.LastEventTime = 0, "", "", "", "", nil
	if summary == nil {
		return
	}
	st.Interactions = int64(summary.Interactions)
	if v := summary.WaitCompliance; v != nil {
		st.WaitCompliance = percent(*v)
	}
	if v := summary.WaitP50Seconds; v != nil {
		st.WaitP50 = seconds(*v)
	}
	if v := summary.WaitP95Seconds; v != nil {
		st.WaitP95 = seconds(*v)
	}
	if v := summary.FirstContactResolution; v != nil {
		st.FirstContactResolution = percent(*v)
	}
	st.LastEventTime = parseTime(summary.LastEventTime)
}

// parseTime reads a collector timestamp (RFC 3339) for status.
func parseTime(s *string) *metav1.Time {
	if s == nil {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return nil
	}
	return &metav1.Time{Time: t}
}
