package store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	fsync        prometheus.Histogram
	commit       prometheus.Histogram
	groupRecords prometheus.Histogram
	checkpoint   prometheus.Histogram
}

// newMetrics makes the store's metrics unregistered: registerOnce
// registers them once the store can write.
func newMetrics() *metrics {
	m := &metrics{
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cxop_collector_fsync_duration_seconds",
			Help:    "Time to commit and fsync one group of records.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cxop_collector_group_commit_duration_seconds",
			Help:    "Time the committer spent on one group: idempotency checks, write and fsync.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		groupRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cxop_collector_group_commit_records",
			Help:    "Records written by one group commit (requests share a sync).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		checkpoint: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cxop_collector_checkpoint_duration_seconds",
			Help:    "Time to write changed rollups and the sequence they cover; ingest waits meanwhile.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	return m
}

// registerOnce registers the metrics of a store opened for writing after
// a read-only one, which registered none; a metric already registered
// (a second writable store in one process) keeps its first collector.
func (m *metrics) registerOnce(reg prometheus.Registerer, queueDepth func() float64) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.fsync, m.commit, m.groupRecords, m.checkpoint,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: queueDepthName, Help: queueDepthHelp}, queueDepth)} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			panic(err)
		}
	}
}

const (
	queueDepthName = "cxop_collector_queue_depth"
	queueDepthHelp = "Requests waiting for the committer; at the queue length the collector answers 429."
)
