package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/slo"
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

// setSurveyStatus writes the whole status obs implies: conditions,
// observedGeneration, where answers go, the collector's numbers, the
// waves' schedule and whether invitations are delivered. With no summary
// the numbers are kept when obs.stale says so (see setTouchpointStatus)
// and cleared otherwise.
func setSurveyStatus(svy *cxv1.Survey, obs surveyObservation) {
	// keptDelivery reads Delivering as read, before anything below changes
	// the conditions, and may return it: a copy is what is set.
	var delivering *metav1.Condition
	if c := obs.stale.keptDelivery(deliveryCondition(svy, obs), svy.Status.Conditions); c != nil {
		copied := *c
		delivering = &copied
	}
	setReadinessConditions(&svy.Status.Conditions, svy.Generation, obs.readiness)
	setStaleCondition(&svy.Status.Conditions, obs.stale)
	svy.Status.ObservedGeneration = svy.Generation
	svy.Status.LastScheduleTime, svy.Status.NextScheduleTime = obs.lastSchedule, scheduleStatus(svy, obs.now)
	if c := delivering; c != nil {
		meta.SetStatusCondition(&svy.Status.Conditions, *c)
	} else {
		meta.RemoveStatusCondition(&svy.Status.Conditions, cxv1.DeliveringCondition)
	}
	if url := obs.ingestURL; url != "" && obs.invalid == nil {
		svy.Status.Ingest = &cxv1.IngestStatus{
			URL:            url,
			TokenSecretRef: &cxv1.SecretKeyReference{Name: SurveyTokenSecretName(svy.Name), Key: TokenKey},
		}
	}
	st := &svy.Status
	summary := obs.summary
	if summary == nil && obs.stale.keep {
		return
	}
	st.Responses, st.Score, st.ScoreLower, st.ScoreUpper = 0, "", "", ""
	st.Promoters, st.Passives, st.Detractors = 0, 0, 0
	if summary == nil {
		setInvitationStatus(svy, nil)
		return
	}
	st.Responses = int64(summary.Responses)
	digits := scoreDigits(svy.Spec.Type)
	if summary.Score != nil {
		st.Score = slo.Decimal(*summary.Score, digits)
	}
	if summary.ScoreLower != nil && summary.ScoreUpper != nil {
		st.ScoreLower = slo.Decimal(*summary.ScoreLower, digits)
		st.ScoreUpper = slo.Decimal(*summary.ScoreUpper, digits)
	}
	deref := func(p *uint64) int64 {
		if p == nil {
			return 0
		}
		return int64(*p)
	}
	st.Promoters, st.Passives, st.Detractors = deref(summary.Promoters), deref(summary.Passives), deref(summary.Detractors)
	setInvitationStatus(svy, summary.Invitations)
}

// setInvitationStatus shows what the collector's survey engine did.
func setInvitationStatus(svy *cxv1.Survey, inv *collectorapi.InvitationSummary) {
	st := &svy.Status
	st.InvitationsSent, st.ResponseRate, st.Suppressed, st.OpenDetractors, st.FollowUpP50 = 0, "", nil, 0, ""
	if inv == nil {
		return
	}
	st.InvitationsSent = int64(inv.Sent)
	if inv.ResponseRate != nil {
		st.ResponseRate = percent(*inv.ResponseRate)
	}
	sup := cxv1.SuppressedInvitations{
		Sample: int64(inv.Suppressed["sample"]), Throttle: int64(inv.Suppressed["throttle"]), Suspended: int64(inv.Suppressed["suspended"]),
		RateLimited: int64(inv.Suppressed["rateLimit"]),
	}
	if sup != (cxv1.SuppressedInvitations{}) {
		st.Suppressed = &sup
	}
	st.OpenDetractors = int64(inv.OpenDetractors)
	if inv.FollowUpP50Seconds != nil {
		st.FollowUpP50 = seconds(*inv.FollowUpP50Seconds)
	}
}

// deliveryCondition says whether a survey's invitations can be delivered,
// from what obs found. A survey without a delivery webhook has no such
// condition. What the manager knows by itself (no survey page, a signing
// key missing, a webhook collectors will not send to over http) comes
// before what only the collector's answer tells, so it shows whether or not
// the collector answers.
func deliveryCondition(svy *cxv1.Survey, obs surveyObservation) *metav1.Condition {
	if deliveryWebhook(svy) == nil {
		return nil
	}
	summary := obs.summary
	c := &metav1.Condition{Type: cxv1.DeliveringCondition, Status: metav1.ConditionTrue, ObservedGeneration: svy.Generation,
		Reason: cxv1.DeliveringReason, Message: "Invitations are delivered to spec.delivery.webhook.url"}
	insecure := insecureWebhooks(svy, obs.allowsHTTPWebhooks)
	switch {
	case !obs.servesPages:
		c.Status, c.Reason = metav1.ConditionFalse, cxv1.NoSurveyPageReason
		c.Message = "The manager runs without --survey-page-url, so invitations have no link and none are made"
	case obs.keyMissing != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, cxv1.WebhookKeyMissingReason, obs.keyMissing+"; invitations wait in the collector's outbox"
	case insecure != "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, cxv1.InsecureWebhookReason, insecure
	case summary == nil:
		// Not asked, or no answer: True would claim more than is known.
		c.Status, c.Reason = metav1.ConditionUnknown, cxv1.CollectorUnavailableReason
		c.Message = "The collector could not be asked whether invitations are delivered"
	case summary != nil && summary.Invitations != nil && summary.Invitations.WebhookGoneSince != nil:
		c.Status, c.Reason = metav1.ConditionFalse, cxv1.WebhookGoneReason
		c.Message = "The webhook answered 410 Gone at " + *summary.Invitations.WebhookGoneSince +
			"; invitations wait in the collector's outbox until spec.delivery.webhook.url changes"
	case summary != nil && summary.Invitations != nil && summary.Invitations.WebhookFailingSince != nil:
		inv := summary.Invitations
		c.Status, c.Reason = metav1.ConditionFalse, cxv1.WebhookFailingReason
		c.Message = "Invitations ran out of retries and are parked since " + *inv.WebhookFailingSince
		if inv.WebhookError != "" {
			c.Message += " (last error: " + inv.WebhookError + ")"
		}
		c.Message += "; they are delivered once the webhook answers 2xx again (one of them is tried every 10 minutes by default) or its URL or signing key changes"
	}
	return c
}

// scoreDigits is how many decimals a score shows: NPS and CSAT are
// percentages ("37.5"), a CES mean lives on a 1-7 scale ("5.43").
func scoreDigits(t cxv1.SurveyType) int {
	if t == cxv1.SurveyTypeCES {
		return 2
	}
	return 1
}
