package controllers

import (
	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collector"
)

// checkSurveySpec reports what the schema cannot: durations that overflow,
// unknown time zones, cron expressions that do not parse.
func checkSurveySpec(spec *cxv1.SurveySpec) error {
	errs := []error{
		checkDuration("spec.window", spec.Window),
		checkDuration("spec.linkTTL", spec.LinkTTL),
	}
	if spec.Trigger != nil {
		errs = append(errs, checkDuration("spec.trigger.delay", spec.Trigger.Delay))
	}
	if spec.Schedule != nil {
		errs = append(errs,
			checkCron("spec.schedule.cron", spec.Schedule.Cron),
			checkTimeZone("spec.schedule.timeZone", spec.Schedule.GetTimeZone()))
	}
	if spec.Throttle != nil {
		errs = append(errs, checkDuration("spec.throttle.perCustomer", spec.Throttle.PerCustomer))
	}
	return firstError(errs...)
}

// setSurveyStatus writes the conditions and observedGeneration that obs
// implies.
func setSurveyStatus(svy *cxv1.Survey, obs readiness, url string, summary *collector.SurveySummary) {
	setReadinessConditions(&svy.Status.Conditions, svy.Generation, obs)
	svy.Status.ObservedGeneration = svy.Generation
	if url != "" && obs.invalid == nil {
		svy.Status.Ingest = &cxv1.IngestStatus{
			URL:            url,
			TokenSecretRef: &cxv1.SecretKeyReference{Name: SurveyTokenSecretName(svy.Name), Key: TokenKey},
		}
	}
	st := &svy.Status
	st.Responses, st.Score, st.ScoreLower, st.ScoreUpper = 0, "", "", ""
	st.Promoters, st.Passives, st.Detractors = 0, 0, 0
	if summary == nil {
		return
	}
	st.Responses = int64(summary.Responses)
	digits := scoreDigits(svy.Spec.Type)
	if summary.Score != nil {
		st.Score = decimalString(*summary.Score, digits)
	}
	if summary.ScoreLower != nil && summary.ScoreUpper != nil {
		st.ScoreLower = decimalString(*summary.ScoreLower, digits)
		st.ScoreUpper = decimalString(*summary.ScoreUpper, digits)
	}
	deref := func(p *uint64) int64 {
		if p == nil {
			return 0
		}
		return int64(*p)
	}
	st.Promoters, st.Passives, st.Detractors = deref(summary.Promoters), deref(summary.Passives), deref(summary.Detractors)
}

// scoreDigits is how many decimals a score shows: NPS and CSAT are
// percentages ("37.5"), a CES mean lives on a 1-7 scale ("5.43").
func scoreDigits(t cxv1.SurveyType) int {
	if t == cxv1.SurveyTypeCES {
		return 2
	}
	return 1
}
