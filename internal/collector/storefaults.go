package collector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/store"
)

// healthz is the liveness probe. It fails only when a restart is what
// repairs the collector: after a write or fsync of the store failed, the
// engine's log is in an unknown state and only reopening the store clears
// it. A store opened read-only because its volume is full stays live: a
// restart cannot free space, and it goes back to writing by itself.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if st := s.storage(); st != nil {
		if err := st.Failed(); err != nil {
			writeText(w, 503, "store cannot write: "+err.Error()+"; a restart reopens it")
			return
		}
	}
	writeText(w, 200, "ok")
}

// readyz is the readiness probe: not ready while the store opens or after
// it failed (until the restart); ready, and saying so, while read-only,
// because reads (summaries, exports, the survey page) are served and
// writes are answered 503 with Retry-After.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	st := s.storage()
	switch {
	case st == nil:
		msg := "store is opening"
		if why := s.opening.Load(); why != nil {
			msg += ": " + *why
		}
		writeText(w, 503, msg)
	case st.Failed() != nil:
		writeText(w, 503, "store failed: "+st.Failed().Error())
	case st.ReadOnly() != nil:
		writeText(w, 200, "ok, "+st.ReadOnly().Error()+"; records are refused with 503 until the volume has room")
	default:
		// A database replica is ready only while its database answers,
		// so that a load balancer sends records to a replica that can
		// store them.
		ctx, cancel := context.WithTimeout(r.Context(), readyPingTimeout)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			writeText(w, 503, "store unavailable: "+err.Error())
			return
		}
		writeText(w, 200, "ok")
	}
}

// readyPingTimeout bounds the readiness probe's ping of the database,
// below the kubelet's default probe timeout of one second.
const readyPingTimeout = 900 * time.Millisecond

// unavailable answers an ingest request the store cannot take with 503,
// Retry-After, and why.
func (s *Server) unavailable(w http.ResponseWriter, endpoint string, err error) {
	switch {
	case errors.Is(err, pgstore.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "records not stored: the database is unavailable; retry with the same ids"})
	case errors.Is(err, store.ErrReadOnly):
		w.Header().Set("Retry-After", "30")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "records not stored: the data volume is full; retry with the same ids"})
	case err != nil:
		w.Header().Set("Retry-After", "5")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "records not stored: the store cannot write; retry with the same ids"})
	default:
		w.Header().Set("Retry-After", "5")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "the collector is not ready"})
	}
}

// volumeCollector reports the data volume's size and free space (statfs)
// and the store's state on every scrape.
type volumeCollector struct {
	dir   string
	fs    vfs.FS
	store func() *store.Store

	size, free, used, storeBytes, writable *prometheus.Desc
}

func newVolumeCollector(dir string, fs vfs.FS, st func() *store.Store) *volumeCollector {
	return &volumeCollector{dir: dir, fs: fs, store: st,
		size:       prometheus.NewDesc("cxop_collector_data_volume_size_bytes", "Size of the volume holding the collector's data directory (statfs).", nil, nil),
		free:       prometheus.NewDesc("cxop_collector_data_volume_free_bytes", "Bytes of the data volume the collector may still write (statfs, available to unprivileged users).", nil, nil),
		used:       prometheus.NewDesc("cxop_collector_data_volume_used_bytes", "Bytes of the data volume in use, by the store and anything else on it (statfs).", nil, nil),
		storeBytes: prometheus.NewDesc("cxop_collector_store_disk_bytes", "Bytes the store's files take on the data volume.", nil, nil),
		writable:   prometheus.NewDesc("cxop_collector_store_writable", "1 while the store accepts records; 0 while it is opening, read-only (a full volume) or failed.", nil, nil),
	}
}

func (c *volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.free, c.used, c.storeBytes, c.writable} {
		ch <- d
	}
}

func (c *volumeCollector) Collect(ch chan<- prometheus.Metric) {
	if u, ok := store.DiskUsage(c.fs, c.dir); ok {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(u.TotalBytes))
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(u.AvailBytes))
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(u.UsedBytes))
	}
	writable := 0.0
	if st := c.store(); st != nil {
		if st.Err() == nil {
			writable = 1
		}
		if n, ok := st.DiskBytes(); ok {
			ch <- prometheus.MustNewConstMetric(c.storeBytes, prometheus.GaugeValue, float64(n))
		}
	}
	ch <- prometheus.MustNewConstMetric(c.writable, prometheus.GaugeValue, writable)
}

// Backoff of the wait for room on a read-only store: statfs is cheap, but
// the wait is logged only when it starts and ends.
const (
	minRoomPoll = 5 * time.Second
	maxRoomPoll = time.Minute
)

// resumeWhenRoom waits, with a backoff, until the volume of a store opened
// read-only has room to write again, then reopens the store for writing.
// It calls started with every store it opens, read-only ones included
// (their survey engine must be rebuilt on the new database), and returns
// when ctx ends or the store is writable.
func (s *Server) resumeWhenRoom(ctx context.Context, opts store.Options, started func(*store.Store)) {
	poll := minRoomPoll
	if s.roomPoll > 0 {
		poll = s.roomPoll
	}
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if store.RoomToWrite(opts) != "" {
			poll = min(2*poll, maxRoomPoll)
			timer.Reset(poll)
			continue
		}
		st, err := s.reopenWritable(opts)
		if err != nil {
			s.log.Error("reopen the store for writing; retrying", "err", err, "retry_in", maxRoomPoll.String())
			if back := s.store.Load(); back != nil {
				started(back) // reads go on from the store reopened read-only
			}
			poll = max(poll, maxRoomPoll)
			timer.Reset(poll)
			continue
		}
		if st.ReadOnly() != nil {
			// Space went again between the check and the open.
			started(st)
			poll = max(poll, maxRoomPoll)
			timer.Reset(poll)
			continue
		}
		u, _ := store.DiskUsage(opts.FS, opts.Dir)
		s.log.Info("the data volume has room again; the store accepts records", "free_bytes", u.AvailBytes)
		started(st)
		return
	}
}

// reopenWritable closes the read-only store (waiting for the reads in
// flight) and opens it again for writing; meanwhile the collector answers
// 503 as while opening. If the writable open fails, it reopens read-only
// so that reads go on.
func (s *Server) reopenWritable(opts store.Options) (*store.Store, error) {
	ro := s.store.Load()
	s.store.Store(nil)
	// The survey engine reads the store's database: it goes with the
	// store, and the handlers answer 503 until started attaches a new one.
	s.surveys.Store(nil)
	if ro != nil {
		if err := ro.Close(); err != nil {
			s.log.Warn("close the read-only store", "err", err)
		}
	}
	st, err := store.Open(opts)
	if err != nil {
		ro := opts
		ro.ReadOnly, ro.Registerer = true, nil
		back, rerr := store.Open(ro)
		if rerr != nil {
			return nil, fmt.Errorf("%w; and reopening read-only: %w", err, rerr)
		}
		s.store.Store(back)
		return nil, err
	}
	s.store.Store(st)
	return st, nil
}
