package controllers

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// Target metrics, on the manager's /metrics. They mirror CXTarget status
// so that dashboards and alerts that prefer the operator's verdict to the
// raw collector series can use it.
//
// The series are built at scrape time from one small record per target,
// as kube-state-metrics does, rather than kept as four GaugeVec children
// per target: at 10,000 targets the children and their label pairs held
// about 15 MB of the manager's heap, the records hold about 1 MB.
var (
	targetLabels = []string{"namespace", "name", "subject_kind"}

	targetValueDesc = prometheus.NewDesc("cxop_target_value",
		"Current value of a CXTarget's objective over its window (NPS, percent, or CES mean). Absent while the target has insufficient data.",
		targetLabels, nil)
	targetObjectiveDesc = prometheus.NewDesc("cxop_target_objective",
		"The value a CXTarget's objective requires (NPS minimum, percent, or CES mean).",
		targetLabels, nil)
	targetBreachedDesc = prometheus.NewDesc("cxop_target_breached",
		"1 while a CXTarget is Breached (its whole 95% interval on the wrong side of the objective), else 0.",
		targetLabels, nil)
	targetBudgetDesc = prometheus.NewDesc("cxop_target_error_budget_remaining",
		"Share of a CXTarget's error budget left over its window, as a ratio (1 = untouched; negative when overspent). Absent while the target has insufficient data.",
		targetLabels, nil)

	targets = &targetMetrics{byTarget: map[targetKey]targetSample{}}
)

func init() {
	metrics.Registry.MustRegister(targets)
}

type targetKey struct{ namespace, name string }

// targetSample is what the metrics show of one target. NaN marks a value
// that has no series.
type targetSample struct {
	subjectKind                        string
	value, objective, breached, budget float64
}

// targetMetrics is a prometheus.Collector of every target's sample.
type targetMetrics struct {
	mu       sync.RWMutex
	byTarget map[targetKey]targetSample
}

func (m *targetMetrics) set(namespace, name string, s targetSample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byTarget[targetKey{namespace, name}] = s
}

// forget removes every series of a deleted target.
func (m *targetMetrics) forget(namespace, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byTarget, targetKey{namespace, name})
}

func (m *targetMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{targetValueDesc, targetObjectiveDesc, targetBreachedDesc, targetBudgetDesc} {
		ch <- d
	}
}

func (m *targetMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k, s := range m.byTarget {
		for _, g := range []struct {
			desc *prometheus.Desc
			v    float64
		}{
			{targetValueDesc, s.value},
			{targetObjectiveDesc, s.objective},
			{targetBreachedDesc, s.breached},
			{targetBudgetDesc, s.budget},
		} {
			if !math.IsNaN(g.v) {
				ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.v, k.namespace, k.name, s.subjectKind)
			}
		}
	}
}

// forgetTargetMetrics removes every series of a deleted target.
func forgetTargetMetrics(namespace, name string) { targets.forget(namespace, name) }

// Collector metrics, on the manager's /metrics: whether each namespace's
// collector answers the manager, in the form of Prometheus' own `up`. While
// it does not, status keeps its last numbers (marked Stale) and the
// cxop_target_* series keep the last verdict, so a restart reads as
// "unknown since T" rather than as a recovery; these two series say which
// numbers are live.
var (
	collectorUpDesc = prometheus.NewDesc("cxop_collector_up",
		"1 when the namespace's collector answered the manager's last summary request, 0 when it could not (status then keeps the last numbers, marked Stale, and cxop_target_* the last verdict).",
		[]string{"namespace"}, nil)
	collectorLastAnswerDesc = prometheus.NewDesc("cxop_collector_last_answer_timestamp_seconds",
		"When the namespace's collector last answered a summary request, in Unix seconds: the age of the numbers status keeps while cxop_collector_up is 0.",
		[]string{"namespace"}, nil)

	collectorStates = &collectorMetrics{byNamespace: map[string]collectorSample{}, now: time.Now}
)

func init() {
	metrics.Registry.MustRegister(collectorStates)
}

type collectorSample struct {
	up         bool
	lastAnswer time.Time
}

// collectorMetrics is a prometheus.Collector of every namespace's
// collector state.
type collectorMetrics struct {
	mu          sync.RWMutex
	byNamespace map[string]collectorSample
	now         func() time.Time
}

// answered records the outcome of a summary request to namespace's
// collector: err nil is an answer, an Unavailable error none; other errors
// (a bad request of the manager's own) say nothing about the collector.
func (m *collectorMetrics) answered(namespace string, err error) {
	if err != nil && !collectorapi.IsUnavailable(err) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.byNamespace[namespace]
	s.up = err == nil
	if s.up {
		s.lastAnswer = m.now()
	}
	m.byNamespace[namespace] = s
}

func (m *collectorMetrics) forget(namespace string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byNamespace, namespace)
}

func (m *collectorMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- collectorUpDesc
	ch <- collectorLastAnswerDesc
}

func (m *collectorMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for ns, s := range m.byNamespace {
		up := 0.0
		if s.up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(collectorUpDesc, prometheus.GaugeValue, up, ns)
		if !s.lastAnswer.IsZero() {
			ch <- prometheus.MustNewConstMetric(collectorLastAnswerDesc, prometheus.GaugeValue, float64(s.lastAnswer.UnixNano())/1e9, ns)
		}
	}
}

// collectorAnswered records the outcome of a summary request sent to the
// collector (collectorapi.Client's OnFetch) in the metrics.
func collectorAnswered(namespace string, err error) { collectorStates.answered(namespace, err) }

// forgetCollectorMetrics removes the series of a namespace whose collector
// was removed.
func forgetCollectorMetrics(namespace string) { collectorStates.forget(namespace) }
