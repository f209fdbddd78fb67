package collector

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// DefaultContactRetention is how long contact fields are kept after
// delivery when the config is silent.
const DefaultContactRetention = 7 * 24 * time.Hour

// parseContactRetention reads contactRetention into s, whose retention is
// read already: contacts cannot be kept longer than the invitations that
// hold them, so a longer contactRetention is an error, not a silent cap.
func parseContactRetention(s *settings, v string) error {
	s.contactRetention = DefaultContactRetention
	if v != "" {
		d, err := model.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("contactRetention: %q is not a positive duration such as 7d", v)
		}
		s.contactRetention = time.Duration(d)
	}
	if s.contactRetention > s.retention {
		return fmt.Errorf("contactRetention: %s is longer than the retention of %s; the invitations that hold the contacts are deleted after the retention, so set contactRetention to at most %s",
			formatDuration(s.contactRetention), formatDuration(s.retention), formatDuration(s.retention))
	}
	return nil
}

// checkRetention refuses a survey whose throttle or link lifetime is
// longer than the retention: the contact history that enforces the
// throttle, and the invitation a link opens, are deleted after it.
func checkRetention(field string, sv *engine.Survey, retention time.Duration) error {
	if sv.Throttle > retention {
		return fmt.Errorf("%s.throttle: %s is longer than the retention of %s, after which the contact history that enforces it is deleted",
			field, formatDuration(sv.Throttle), formatDuration(retention))
	}
	ttl, what := sv.LinkTTL, ""
	if ttl <= 0 {
		ttl, what = engine.DefaultLinkTTL, " (the default)"
	}
	if ttl > retention {
		return fmt.Errorf("%s.linkTTL: %s%s is longer than the retention of %s, after which the invitation a link opens is deleted; set a shorter linkTTL",
			field, formatDuration(ttl), what, formatDuration(retention))
	}
	return nil
}

// recentWindow is how far back the retention estimate measures the rate
// of records.
const recentWindow = 7 * 24 * time.Hour

// minRecentWindow: a store with less history than this gives no
// estimate; an hour of records says little about a day.
const minRecentWindow = time.Hour

// prune deletes what is past retention: raw records, the contacts stored
// with interactions (past contactRetention), then every class of the
// survey engine's data (contacts past contactRetention), unless the
// store cannot write (it said why when it stopped). Then it estimates
// whether the retention fits the data volume.
func (s *Server) prune(ctx context.Context) {
	st := s.storage()
	if st == nil || st.Err() != nil {
		return
	}
	cfg := s.cfg.Load()
	now := s.now()
	// A failed record prune does not hold up the others: contacts, the
	// survey engine's data and the audit log expire on their own clocks.
	recs, err := st.PruneExpired(ctx, now.Add(-cfg.retention), now.Add(-recentWindow))
	recordsPruned := err == nil
	if err != nil {
		s.log.Error("prune records", "err", err)
	}
	if recs.Deleted > 0 {
		s.log.Info("pruned records past retention", "records", recs.Deleted)
	}
	// Interactions' contacts, stored apart from their records, go
	// contactRetention after they came: the survey engine copied them
	// long before.
	contacts, err := st.PruneContacts(ctx, now.Add(-cfg.contactRetention))
	if err != nil {
		s.log.Error("prune interaction contacts", "err", err)
	}
	if contacts > 0 {
		s.log.Info("pruned interaction contacts past contactRetention", "contacts", contacts)
	}
	if e := s.surveys.Load(); e != nil {
		pruned, err := e.Prune(ctx, engine.Retention{Keep: cfg.retention, Contact: cfg.contactRetention})
		if err != nil {
			s.log.Error("prune survey data", "err", err)
		}
		if len(pruned) > 0 {
			args := make([]any, 0, 2*len(pruned))
			for class, n := range pruned {
				args = append(args, class, n)
			}
			s.log.Info("pruned survey data past retention", args...)
		}
	}
	s.pruneErasures()
	if !recordsPruned {
		return // no counts of the records kept to estimate from
	}
	disk, ok := st.DiskBytes()
	if !ok || s.dataVolume == nil {
		return
	}
	capacity, ok := s.dataVolume()
	if !ok {
		return
	}
	s.retention.update(s.log, estimateRetention(disk, capacity, recs, now, cfg.retention))
}

// retentionEstimate is whether the records of one retention fit the data
// volume at the recent rate.
type retentionEstimate struct {
	known bool
	// BytesPerRecord is the store's bytes on disk over the records kept;
	// RecordsPerDay the rate of the last week (or of the store's history,
	// if shorter).
	bytesPerRecord, recordsPerDay float64
	projected, capacity           float64
	retention                     time.Duration
}

func (r retentionEstimate) fits() bool { return r.projected <= r.capacity }

// estimateRetention projects the bytes a retention's records take from
// what the store measures: its bytes on disk per record kept, and the
// records of the last week per day.
func estimateRetention(diskBytes, capacity uint64, recs store.RecordsPruned, now time.Time, retention time.Duration) retentionEstimate {
	window := min(recentWindow, now.Sub(recs.Oldest))
	if recs.Kept == 0 || window < minRecentWindow {
		return retentionEstimate{}
	}
	e := retentionEstimate{known: true, retention: retention, capacity: float64(capacity)}
	e.bytesPerRecord = float64(diskBytes) / float64(recs.Kept)
	e.recordsPerDay = float64(recs.Recent) / (window.Hours() / 24)
	e.projected = e.bytesPerRecord * e.recordsPerDay * retention.Hours() / 24
	return e
}

var (
	retentionFitsDesc = prometheus.NewDesc("cxop_collector_retention_fits",
		"1 while the records of one retention, at the rate of the last 7 days and the bytes per record measured on disk, fit the data volume; 0 when they do not. Absent until the first estimate (hourly, with the prune).", nil, nil)
	retentionProjectedDesc = prometheus.NewDesc("cxop_collector_retention_projected_bytes",
		"Bytes the store is projected to take with one retention of records at the rate of the last 7 days.", nil, nil)
	retentionCapacityDesc = prometheus.NewDesc("cxop_collector_retention_capacity_bytes",
		"Bytes of the data volume the store may fill: its size less what the store keeps free.", nil, nil)
)

// retentionFit holds the last estimate for the metrics, and logs each
// change of verdict once.
type retentionFit struct {
	mu   sync.Mutex
	last retentionEstimate
}

func newRetentionFit(reg prometheus.Registerer) *retentionFit {
	f := &retentionFit{}
	if reg != nil {
		reg.MustRegister(f)
	}
	return f
}

func (f *retentionFit) update(log *slog.Logger, e retentionEstimate) {
	if !e.known {
		return
	}
	f.mu.Lock()
	prev := f.last
	f.last = e
	f.mu.Unlock()
	if prev.known && prev.fits() == e.fits() {
		return
	}
	args := []any{"retention", formatDuration(e.retention), "projected_bytes", int64(e.projected), "capacity_bytes", int64(e.capacity),
		"bytes_per_record", fmt.Sprintf("%.0f", e.bytesPerRecord), "records_per_day", fmt.Sprintf("%.0f", e.recordsPerDay)}
	if e.fits() {
		if prev.known {
			log.Info("the retention fits the data volume again", args...)
		}
		return
	}
	log.Error("the retention does not fit the data volume: at the rate of the last 7 days its records need more than the volume holds; grow the volume or shorten the retention", args...)
}

func (f *retentionFit) Describe(ch chan<- *prometheus.Desc) {
	ch <- retentionFitsDesc
	ch <- retentionProjectedDesc
	ch <- retentionCapacityDesc
}

func (f *retentionFit) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	e := f.last
	f.mu.Unlock()
	if !e.known {
		return
	}
	fits := 0.0
	if e.fits() {
		fits = 1
	}
	ch <- prometheus.MustNewConstMetric(retentionFitsDesc, prometheus.GaugeValue, fits)
	ch <- prometheus.MustNewConstMetric(retentionProjectedDesc, prometheus.GaugeValue, e.projected)
	ch <- prometheus.MustNewConstMetric(retentionCapacityDesc, prometheus.GaugeValue, e.capacity)
}
