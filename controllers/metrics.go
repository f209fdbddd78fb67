package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Target metrics, on the manager's /metrics. They mirror CXTarget status
// so that dashboards and alerts that prefer the operator's verdict to the
// raw collector series can use it.
var (
	targetLabels = []string{"namespace", "name", "subject_kind"}

	targetValue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cxop_target_value",
		Help: "Current value of a CXTarget's objective over its window (NPS, percent, or CES mean). Absent while the target has insufficient data.",
	}, targetLabels)
	targetObjective = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cxop_target_objective",
		Help: "The value a CXTarget's objective requires (NPS minimum, percent, or CES mean).",
	}, targetLabels)
	targetBreached = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cxop_target_breached",
		Help: "1 while a CXTarget is Breached (its whole 95% interval on the wrong side of the objective), else 0.",
	}, targetLabels)
	targetBudget = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cxop_target_error_budget_remaining",
		Help: "Share of a CXTarget's error budget left over its window, as a ratio (1 = untouched; negative when overspent). Absent while the target has insufficient data.",
	}, targetLabels)
)

func init() {
	metrics.Registry.MustRegister(targetValue, targetObjective, targetBreached, targetBudget)
}

// forgetTargetMetrics removes every series of a deleted target.
func forgetTargetMetrics(namespace, name string) {
	match := prometheus.Labels{"namespace": namespace, "name": name}
	for _, v := range []*prometheus.GaugeVec{targetValue, targetObjective, targetBreached, targetBudget} {
		v.DeletePartialMatch(match)
	}
}
