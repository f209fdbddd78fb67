package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cxop-dev/cxop/internal/score"
)

// metrics are labelled by touchpoint, survey, endpoint and reason, all
// from a fixed set or from the config; never by customer, token or id.
type metrics struct {
	interactions  *prometheus.CounterVec
	waits         *prometheus.HistogramVec
	assessed      *prometheus.CounterVec
	compliant     *prometheus.CounterVec
	resolutions   *prometheus.CounterVec
	responses     *prometheus.CounterVec
	scoreSum      *prometheus.CounterVec
	duplicates    *prometheus.CounterVec
	requests      *prometheus.HistogramVec
	rejects       *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	configSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		interactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_interactions_total", Help: "Interaction events stored, by touchpoint.",
		}, []string{"touchpoint"}),
		waits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cxop_collector_wait_seconds", Help: "Customer wait times carried by events, by touchpoint.",
			Buckets: []float64{5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600},
		}, []string{"touchpoint"}),
		assessed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_waits_assessed_total",
			Help: "Waits judged against the touchpoint's threshold (a threshold is set and the event fell within business hours).",
		}, []string{"touchpoint"}),
		compliant: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_waits_compliant_total", Help: "Assessed waits at or under the threshold.",
		}, []string{"touchpoint"}),
		resolutions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_resolutions_total", Help: "Events that said whether the contact was resolved at first contact.",
		}, []string{"touchpoint", "resolved"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_responses_total",
			Help: "Survey answers stored, by survey and category (NPS: promoter, passive, detractor; CSAT: satisfied, neutral, dissatisfied; CES: easy, neutral, difficult).",
		}, []string{"survey", "category"}),
		scoreSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_response_score_sum", Help: "Sum of answer scores, by survey (with responses_total, the mean).",
		}, []string{"survey"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_duplicates_total", Help: "Records whose id was already stored; counted once, acknowledged again.",
		}, []string{"endpoint"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cxop_collector_request_duration_seconds", Help: "Time from request to answer, by endpoint and status code; for ingest, until the data is on disk.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"endpoint", "code"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_rejected_requests_total",
			Help: "Requests refused, by endpoint and reason (invalid, unauthorized, forbidden, too_large, conflict, overloaded, in_flight_bytes, unavailable).",
		}, []string{"endpoint", "reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cxop_collector_config_reloads_total", Help: "collectorapi.Config reloads, by result (success, failure).",
		}, []string{"result"}),
		configSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cxop_collector_config_last_reload_successful", Help: "1 if the last config load succeeded.",
		}),
	}
	reg.MustRegister(m.interactions, m.waits, m.assessed, m.compliant, m.resolutions, m.responses, m.scoreSum,
		m.duplicates, m.requests, m.rejects, m.reloads, m.configSuccess,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// declare creates every series of the config's touchpoints and surveys at
// zero. Prometheus sees an increase only between two samples: a counter
// that first appears already at 100 (the first batch after a start or a new
// Touchpoint) shows no increase, and a burn-rate alert on it never fires.
func (m *metrics) declare(cfg *settings) {
	for name, tp := range cfg.touchpoints {
		m.interactions.WithLabelValues(name)
		m.waits.WithLabelValues(name)
		if tp.threshold > 0 {
			m.assessed.WithLabelValues(name)
			m.compliant.WithLabelValues(name)
		}
		m.resolutions.WithLabelValues(name, "true")
		m.resolutions.WithLabelValues(name, "false")
	}
	for name, sv := range cfg.surveys {
		for _, c := range categories(sv.kind) {
			m.responses.WithLabelValues(name, c)
		}
		m.scoreSum.WithLabelValues(name)
	}
}

// categories lists the responses metric's categories of a survey type,
// best first.
func categories(k score.Kind) [3]string {
	switch k {
	case score.NPS:
		return [3]string{"promoter", "passive", "detractor"}
	case score.CSAT:
		return [3]string{"satisfied", "neutral", "dissatisfied"}
	default:
		return [3]string{"easy", "neutral", "difficult"}
	}
}

// category names an answer's bucket for the responses metric.
func category(k score.Kind, s int) string {
	names := categories(k)
	switch k {
	case score.NPS:
		switch {
		case s >= 9:
			return names[0]
		case s >= 7:
			return names[1]
		}
	case score.CSAT:
		switch {
		case s >= 4:
			return names[0]
		case s == 3:
			return names[1]
		}
	default: // CES: 1 very difficult … 7 very easy
		switch {
		case s >= 5:
			return names[0]
		case s >= 3:
			return names[1]
		}
	}
	return names[2]
}

// touchpointSeries are one touchpoint's series of the metrics an
// interaction event updates. The wait-compliance series exist only for a
// touchpoint with a threshold (declare), so they are taken on first use.
type touchpointSeries struct {
	m                                  *metrics
	name                               string
	interactions, resolved, unresolved prometheus.Counter
	waits                              prometheus.Observer
	assessedSeries, compliantSeries    prometheus.Counter
}

func (m *metrics) touchpointSeries(name string) touchpointSeries {
	return touchpointSeries{m: m, name: name,
		interactions: m.interactions.WithLabelValues(name),
		resolved:     m.resolutions.WithLabelValues(name, "true"),
		unresolved:   m.resolutions.WithLabelValues(name, "false"),
		waits:        m.waits.WithLabelValues(name),
	}
}

func (t *touchpointSeries) assessed() prometheus.Counter {
	if t.assessedSeries == nil {
		t.assessedSeries = t.m.assessed.WithLabelValues(t.name)
	}
	return t.assessedSeries
}

func (t *touchpointSeries) compliant() prometheus.Counter {
	if t.compliantSeries == nil {
		t.compliantSeries = t.m.compliant.WithLabelValues(t.name)
	}
	return t.compliantSeries
}
