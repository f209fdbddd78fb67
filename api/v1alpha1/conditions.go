package v1alpha1

// Condition types. Every condition carries observedGeneration and is
// recomputed from observation on every reconcile.
const (
	// ReadyCondition (normal polarity: True is good) summarises the object:
	// its references resolve, its spec is usable and, once the collector is
	// running, its figures are live.
	ReadyCondition = "Ready"

	// ReconcilingCondition (abnormal polarity: present only while True) says
	// the controller is still working towards Ready, for example waiting for
	// a referenced object to appear. kstatus reports such an object as
	// InProgress.
	ReconcilingCondition = "Reconciling"

	// StalledCondition (abnormal polarity: present only while True) says the
	// spec cannot be acted on until it is changed. kstatus reports such an
	// object as Failed.
	StalledCondition = "Stalled"

	// TargetMetCondition (normal polarity) on a CXTarget is True while the
	// objective is met, False while it is breached or at risk, and Unknown
	// while there are too few samples to say.
	TargetMetCondition = "TargetMet"

	// DeliveringCondition (normal polarity) on a Survey with a delivery
	// webhook is True while invitations can be delivered, and False while
	// they wait in the collector's outbox: the receiver answered 410 Gone
	// (reason WebhookGone), the signing key is missing (reason
	// WebhookKeyMissing), or messages ran out of retries and are parked
	// (reason WebhookFailing). It is Unknown (reason CollectorUnavailable)
	// while the collector cannot be asked, except that a WebhookGone or
	// WebhookFailing its last answer reported stands, marked by Stale.
	DeliveringCondition = "Delivering"
)

// Condition reasons, shared by all kinds.
const (
	// ReconciledReason: the object's references resolve and its spec is usable.
	ReconciledReason = "Reconciled"

	// InvalidSpecReason: the spec passed schema validation but cannot be used
	// (an unknown time zone, a cron expression that never fires, ...).
	InvalidSpecReason = "InvalidSpec"

	// TouchpointNotFoundReason: a referenced Touchpoint does not exist.
	TouchpointNotFoundReason = "TouchpointNotFound"

	// SurveyNotFoundReason: a referenced Survey does not exist.
	SurveyNotFoundReason = "SurveyNotFound"

	// JourneyNotFoundReason: a referenced Journey does not exist.
	JourneyNotFoundReason = "JourneyNotFound"

	// ObjectiveMismatchReason: a CXTarget's objective cannot be measured on
	// its subject (for example an NPS objective on a CSAT Survey).
	ObjectiveMismatchReason = "ObjectiveMismatch"

	// CollectorUnavailableReason: the namespace's collector could not be
	// asked for the numbers status shows. Status keeps the numbers of the
	// last good reading of this generation, marked by the Stale condition,
	// rather than clearing them to what would read as a recovery.
	CollectorUnavailableReason = "CollectorUnavailable"

	// CollectorPendingReason: the collector runs but has not yet loaded a
	// config that knows this object (a new Touchpoint or Survey).
	CollectorPendingReason = "CollectorPending"

	// WebhookGoneReason: the survey's webhook answered 410 Gone; delivery
	// resumes when its URL changes, with nothing lost.
	WebhookGoneReason = "WebhookGone"

	// WebhookFailingReason: the webhook refused or failed every attempt at
	// some invitations for the collector's retry window (24h by default);
	// they are parked, not dropped, and delivered once the webhook answers
	// 2xx again (the collector probes it with one of them) or its URL or
	// key changes.
	WebhookFailingReason = "WebhookFailing"

	// WebhookKeyMissingReason: the Secret key a webhook's secretRef names
	// does not exist, so nothing is signed or sent.
	WebhookKeyMissingReason = "WebhookKeyMissing"

	// NoSurveyPageReason: the manager has no survey page URL for the
	// namespace, so no invitation (which carries a link) is made.
	NoSurveyPageReason = "NoSurveyPage"

	// InsecureWebhookReason: a webhook URL is plain http and the manager
	// does not allow that (--allow-insecure-webhooks), so its messages wait
	// in the collector's outbox.
	InsecureWebhookReason = "InsecureWebhook"

	// DeliveringReason: invitations are being delivered.
	DeliveringReason = "Delivering"

	// AudienceNotFoundReason: the ConfigMap or key a Survey's
	// spec.schedule.audience names does not exist, so no wave can run.
	AudienceNotFoundReason = "AudienceNotFound"

	// InvalidAudienceReason: the audience a Survey's schedule names cannot
	// be read as a list of customers; the message gives the line.
	InvalidAudienceReason = "InvalidAudience"

	// ApplyFailedReason: an object the manager writes for this one (a wave
	// CronJob, an alert rule) could not be created, updated or deleted;
	// the message names it and gives the API server's answer.
	ApplyFailedReason = "ApplyFailed"

	// ReadFailedReason: an object the reconcile needs could not be read
	// (for another reason than not existing); the message names it.
	ReadFailedReason = "ReadFailed"

	// WaveFailedReason: a due survey wave that the manager sends itself
	// (under `cxop dev`) could not be sent.
	WaveFailedReason = "WaveFailed"

	// CollectorFailedReason: the manager could not write the namespace's
	// collector (its token Secrets, config, secrets file or workload), so
	// the collector may run without this object's latest spec; the message
	// names what failed.
	CollectorFailedReason = "CollectorFailed"

	// InvalidDataPolicyReason: an annotation of the namespace that sets
	// its collector's data policy (cx.cxop.dev/retention,
	// cx.cxop.dev/contact-retention, cx.cxop.dev/pseudonymize-customers,
	// cx.cxop.dev/store, cx.cxop.dev/postgres-secret)
	// holds a value the manager cannot use, so the collector keeps its last
	// config; the message names the annotation and why.
	InvalidDataPolicyReason = "InvalidDataPolicy"

	// PostgresSecretMissingReason: the namespace's collector keeps its
	// records in PostgreSQL, and the Secret holding the connection string
	// (or its key) is missing, so the collector keeps its last workload and
	// config; the message names the Secret and the key.
	PostgresSecretMissingReason = "PostgresSecretMissing"

	// StoreSwitchingReason: the namespace's collector is moving to the
	// other store (cx.cxop.dev/store): the old store's workload is being
	// deleted, and the new one starts once its pods are gone, so that
	// records never reach both stores. It clears by itself (Reconciling).
	StoreSwitchingReason = "StoreSwitching"
)

// The AlertRules condition of a CXTarget.
const (
	// AlertRulesCondition (normal polarity) on a CXTarget that wants
	// burn-rate alerts (spec.alerting.burnRateAlerts, default true) is True
	// while its PrometheusRule holds them, and False with a reason when
	// they cannot be generated or written. It never stops the target from
	// being measured and judged. It is absent when alerts are turned off.
	AlertRulesCondition = "AlertRules"

	// AlertRulesAppliedReason: the target's PrometheusRule holds its alerts.
	AlertRulesAppliedReason = "Applied"

	// NoPrometheusRuleKindReason: the cluster served no
	// monitoring.coreos.com/v1 PrometheusRule when the manager started.
	NoPrometheusRuleKindReason = "NoPrometheusRuleKind"

	// WindowTooShortReason: spec.window is shorter than the longest lookback
	// of the page alerts (6h), whose thresholds then mean nothing.
	WindowTooShortReason = "WindowTooShort"

	// NoErrorBudgetReason: the objective requires the best value (csat.min
	// 100, ces.min 7, ...), which leaves no error budget to burn.
	NoErrorBudgetReason = "NoErrorBudget"

	// NoMetricReason: the collectors export no metric Prometheus could
	// compute the objective from (response rate: invitations are not
	// exported).
	NoMetricReason = "NoMetric"

	// NotExpressibleReason: the rule generator refused the target for
	// another reason, named in the message.
	NotExpressibleReason = "NotExpressible"

	// PrometheusRuleFailedReason: the API server refused to write or delete
	// the target's PrometheusRule; the message carries its answer.
	PrometheusRuleFailedReason = "PrometheusRuleFailed"
)

// StaleCondition (abnormal polarity: present only while True) says the
// numbers in status are not live: the collector cannot answer, and status
// keeps those of the last good reading of the object's current generation,
// whose time the message gives. Its reason is the collector's
// (CollectorUnavailable, CollectorPending). A spec change while stale
// clears the numbers, which described the old spec.
const StaleCondition = "Stale"
