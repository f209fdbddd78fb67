package store

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	fsync        prometheus.Histogram
	commit       prometheus.Histogram
	groupRecords prometheus.Histogram
	checkpoint   prometheus.Histogram
	reg          prometheus.Registerer
}

func newMetrics(reg prometheus.Registerer) *metrics {
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
		reg: reg,
	}
	if reg != nil {
		reg.MustRegister(m.fsync, m.commit, m.groupRecords, m.checkpoint)
	}
	return m
}

func (m *metrics) queueDepth(f func() float64) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cxop_collector_queue_depth",
		Help: "Requests waiting for the committer; at the queue length the collector answers 429.",
	}, f))
}
