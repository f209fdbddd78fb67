package controllers

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
