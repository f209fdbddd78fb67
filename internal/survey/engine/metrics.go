package engine

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus metrics, labelled by survey (from
// the config), webhook (delivery or detractor) and limit; never by
// customer or message.
type metrics struct {
	parked      *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	// leaseRenewals counts the background renewals of the engine's lease
	// among replicas, by result.
	leaseRenewals *prometheus.CounterVec
	// feedHeld counts the steps that consumed none of the record feed
	// because another replica loaded a newer config; feedHeldRevision is
	// that revision while it lasts, 0 otherwise.
	feedHeld         prometheus.Counter
	feedHeldRevision prometheus.Gauge
}

func newMetrics(e *Engine, reg prometheus.Registerer) *metrics {
	m := &metrics{
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_webhook_messages_parked_total",
			Help: "Webhook messages whose retries ran out: parked, not dropped, and delivered once the webhook works again.",
		}, []string{"survey", "webhook"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_invitations_rate_limited_total",
			Help: "Invitations suppressed by a rate limit (limit: touchpoint or namespace); they are not sent later.",
		}, []string{"survey", "limit"}),
		leaseRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_survey_engine_lease_renewals_total",
			Help: "Background renewals of the survey engine's lease among replicas (PostgreSQL), by result: renewed, failed (retried), lost (another replica took it; the holder's next commit is refused).",
		}, []string{"result"}),
		feedHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cxop_collector_survey_engine_feed_held_total",
			Help: "Survey engine steps that consumed none of the record feed because another replica loaded a newer collector config (its records wait for an engine with that config).",
		}),
		feedHeldRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cxop_collector_survey_engine_feed_held_revision",
			Help: "The newer config revision this replica's survey engine waits for before it consumes the record feed; 0 while it consumes.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.parked, m.rateLimited, m.leaseRenewals, m.feedHeld, m.feedHeldRevision, failingCollector{e})
	}
	return m
}

var failingDesc = prometheus.NewDesc("cxop_collector_webhook_failing",
	"1 while a survey's webhook, as configured now, has messages parked because their retries ran out; 0 otherwise.",
	[]string{"survey", "webhook"}, nil)

// failingCollector reads the failing records at scrape time: one key per
// configured webhook.
type failingCollector struct{ e *Engine }

func (c failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- failingDesc }

func (c failingCollector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.e.cfg.Load()
	for i := range cfg.Surveys {
		sv := &cfg.Surveys[i]
		for _, detractor := range []bool{false, true} {
			if (&message{Detractor: detractor}).endpoint(sv) == nil {
				continue
			}
			f, applies, err := c.e.failing(sv, detractor)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(failingDesc, err)
				continue
			}
			v := 0.0
			if f != nil && applies {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(failingDesc, prometheus.GaugeValue, v, sv.Name, webhookLabel(detractor))
		}
	}
}
