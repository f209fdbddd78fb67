// Package collector is `cxop collector`: the HTTP service that receives
// interaction events and survey answers, stores them durably in
// internal/store, and answers windowed summaries from its rollups.
// docs/collector.md documents its API and configuration.
package collector

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/survey/link"
)

// Server is the collector's HTTP side. It answers /healthz at once and
// everything else with 503 until its store is open.
type Server struct {
	log *slog.Logger
	cfg atomic.Pointer[settings]
	// store is the embedded store; external the storage when the
	// collector runs on a database instead (storage.go). Handlers read
	// either through storage().
	store    atomic.Pointer[store.Store]
	external atomic.Pointer[Storage]
	// opening is why the storage is not open yet (a database that does
	// not answer), for the readiness probe.
	opening atomic.Pointer[string]
	// storeKind is Options.Store, for the checks of a reloaded config.
	storeKind string
	// surveys invites customers and delivers invitations; nil until the
	// store is open.
	surveys atomic.Pointer[engine.Engine]
	// linkKeys verify survey links on the hosted page; nil without a
	// secrets file.
	linkKeys atomic.Pointer[link.Keys]
	// inflight bounds the request bodies held in memory.
	inflight *inflightBudget
	metrics  *metrics
	reg      *prometheus.Registry
	now      func() time.Time

	// allowHTTPWebhooks lets the survey engine send to plain-http
	// webhooks (--allow-insecure-webhooks); set before the first config.
	allowHTTPWebhooks bool
	// secrets are the last secrets applied, for an engine started later.
	secrets atomic.Pointer[secrets]
	// roomPoll is the first wait of a read-only store for room to write;
	// 0 is 5s. Tests shorten it.
	roomPoll time.Duration
	// retention is the last estimate of whether the retention fits the
	// data volume (retention.go); dataVolume, when set, is how many bytes
	// of the volume the store may fill.
	retention  *retentionFit
	dataVolume func() (uint64, bool)
	// erasing serialises erasures (customers.go).
	erasing sync.Mutex
	// recordRevision, on PostgreSQL, records a config's revision in the
	// database before the config is used (command.go); set before the
	// config is first reloaded.
	recordRevision func(ctx context.Context, revision int64) error
}

// NewServer returns a server with a validated config and no store yet.
func NewServer(log *slog.Logger, cfg *settings, reg *prometheus.Registry, now func() time.Time) *Server {
	s := &Server{log: log, metrics: newMetrics(reg), reg: reg, now: now}
	s.inflight = newInflightBudget(reg, defaultMaxInflightBytes())
	s.retention = newRetentionFit(reg)
	s.cfg.Store(cfg)
	s.metrics.declare(cfg)
	return s
}

// Handler routes the API, the probes and the hosted survey page: the
// collector's one listener when the page is not served apart. /metrics is
// on MetricsHandler.
func (s *Server) Handler() http.Handler { return s.apiHandler(true) }

// APIHandler routes the API and the probes without the survey page, for
// when PageHandler serves the page on a listener of its own.
func (s *Server) APIHandler() http.Handler { return s.apiHandler(false) }

func (s *Server) apiHandler(withPage bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", s.ingest("events"))
	mux.HandleFunc("POST /v1/responses", s.ingest("responses"))
	mux.HandleFunc("GET /v1/summary", s.summary)
	mux.HandleFunc("GET /v1/export", s.export)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if withPage {
		mux.Handle("/s/{token}", s.pageHandler())
	}
	mux.HandleFunc("POST /v1/followups/{id}", s.followUp)
	mux.HandleFunc("POST /v1/waves", s.wave)
	s.customerRoutes(mux)
	return mux
}

// PageHandler serves the hosted survey page alone (and /healthz, for a
// load balancer's health check): the one listener meant to be reachable
// from the internet. Everything else is 404.
func (s *Server) PageHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/s/{token}", s.pageHandler())
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

// MetricsHandler serves /metrics, on a listener apart from the API so that
// the port exposed for ingest or the survey page never shows them.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return mux
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

type errorBody struct {
	Error  string `json:"error"`
	Index  *int   `json:"index,omitempty"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) reject(w http.ResponseWriter, endpoint, reason string, code int, body errorBody) {
	s.metrics.rejects.WithLabelValues(endpoint, reason).Inc()
	writeJSON(w, code, body)
}

// rejectField answers 400 naming the field and the reason.
func (s *Server) rejectField(w http.ResponseWriter, endpoint, field, reason string) {
	s.reject(w, endpoint, "invalid", 400, errorBody{Error: field + ": " + reason, Field: field, Reason: reason})
}

func (s *Server) rejectInput(w http.ResponseWriter, endpoint string, e *inputError) {
	reason := map[int]string{400: "invalid", 403: "forbidden", 413: "too_large", 422: "conflict"}[e.status]
	b := errorBody{Error: e.Error(), Field: e.Field, Reason: e.Reason}
	if e.Index >= 0 {
		b.Index = &e.Index
	}
	s.reject(w, endpoint, reason, e.status, b)
}

// bearer returns the SHA-256 of the request's bearer token, or nil.
func bearer(r *http.Request) []byte {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return sum[:]
}

// SetMaxInflightBytes sets the limit on request body bytes held in
// memory at once (--max-inflight-bytes).
func (s *Server) SetMaxInflightBytes(n int64) { s.inflight.limit.Store(n) }

type ingestResult struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

func (s *Server) ingest(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		code := s.ingestOnce(w, r, endpoint)
		s.metrics.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
	}
}

func (s *Server) ingestOnce(w http.ResponseWriter, r *http.Request, endpoint string) int {
	st := s.storage()
	if st == nil || st.Err() != nil {
		var err error
		if st != nil {
			err = st.Err()
		}
		s.unavailable(w, endpoint, err)
		return 503
	}
	cfg := s.cfg.Load()

	// Authenticate before reading the body: which subjects may this token write?
	sum := bearer(r)
	allowed := map[string]bool{}
	if sum != nil {
		if endpoint == "events" {
			for name, tp := range cfg.touchpoints {
				if matches(sum, tp.tokens) {
					allowed[name] = true
				}
			}
		} else {
			for name, sv := range cfg.surveys {
				if matches(sum, sv.tokens) {
					allowed[name] = true
				}
			}
		}
	}
	if len(allowed) == 0 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cxop-collector"`)
		msg := "missing bearer token"
		if sum != nil {
			msg = "unknown bearer token"
		}
		s.reject(w, endpoint, "unauthorized", 401, errorBody{Error: msg})
		return 401
	}

	held, err := s.inflight.readBody(w, r)
	defer held.Release()
	if err != nil {
		return s.rejectBody(w, endpoint, err, fmt.Sprintf("body larger than %d bytes", MaxBodyBytes))
	}
	body := held.data
	v := &validator{cfg: cfg, now: s.now(), authorized: func(n string) bool { return allowed[n] }, seen: map[string]int{}}
	var records []store.Record
	var ierr *inputError
	if endpoint == "events" {
		records, ierr = validateAll(body, decodeEventsPlain, v.event)
	} else {
		records, ierr = validateAll(body, nil, v.response)
	}
	if ierr != nil {
		s.rejectInput(w, endpoint, ierr)
		return ierr.status
	}

	res, err := st.Submit(r.Context(), records)
	var conflict *store.ConflictError
	switch {
	case errors.As(err, &conflict):
		reason := fmt.Sprintf("id %q is already stored with a different payload; the stored record stands (send a new record with a new id)", conflict.ID)
		s.rejectInput(w, endpoint, &inputError{status: 422, Index: conflict.Index, Field: "id", Reason: reason})
		return 422
	case errors.Is(err, store.ErrOverloaded):
		w.Header().Set("Retry-After", "1")
		s.reject(w, endpoint, "overloaded", 429, errorBody{Error: "too many requests queued; retry after 1s"})
		return 429
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The client went away while its records were queued; they may
		// still be committed, and a retry reports them as duplicates.
		w.Header().Set("Retry-After", "1")
		s.reject(w, endpoint, "unavailable", 503, errorBody{Error: "request ended before the records were confirmed on disk; retry with the same ids"})
		return 503
	case err != nil:
		s.log.Error("store records", "endpoint", endpoint, "err", err)
		s.unavailable(w, endpoint, err)
		return 503
	}
	s.count(cfg, records, res)
	s.wakeSurveys(records, res)
	writeJSON(w, 200, ingestResult{Accepted: res.Accepted, Duplicates: res.Duplicates})
	return 200
}

// wakeSurveys wakes the survey engine when records newly stored one it
// reads: one with a feed entry (store.Record.SkipFeed unset), an
// interaction some survey's trigger names or an answer to a survey with a
// closed loop. Records no survey acts on and duplicates give it nothing
// to do; waking it for them would step it once per request, each step a
// claim and a release of the replicas' shared lease on PostgreSQL. Work
// that falls due later is the engine's Interval's.
func (s *Server) wakeSurveys(records []store.Record, res store.Result) {
	e := s.surveys.Load()
	if e == nil {
		return
	}
	for i := range records {
		if !records[i].SkipFeed && (res.Duplicate == nil || !res.Duplicate[i]) {
			e.Notify()
			return
		}
	}
}

// count updates the metrics for records newly stored.
func (s *Server) count(cfg *settings, records []store.Record, res store.Result) {
	// A request's events are mostly of one touchpoint: its series are
	// looked up once per run of them, not per event.
	var tp touchpointSeries
	for i := range records {
		if res.Duplicate != nil && res.Duplicate[i] {
			continue
		}
		rec := &records[i]
		switch rec.Kind {
		case rollup.KindTouchpoint:
			if tp.interactions == nil || tp.name != rec.Subject {
				tp = s.metrics.touchpointSeries(rec.Subject)
			}
			e := &rec.Event
			tp.interactions.Inc()
			if e.HasWait {
				tp.waits.Observe(e.WaitSeconds)
			}
			if e.Assessed {
				tp.assessed().Inc()
				if e.Compliant {
					tp.compliant().Inc()
				}
			}
			if e.HasResolved {
				if e.Resolved {
					tp.resolved.Inc()
				} else {
					tp.unresolved.Inc()
				}
			}
		case rollup.KindSurvey:
			if sv, ok := cfg.surveys[rec.Subject]; ok {
				s.metrics.responses.WithLabelValues(rec.Subject, category(sv.kind, rec.Response.Score)).Inc()
				s.metrics.scoreSum.WithLabelValues(rec.Subject).Add(float64(rec.Response.Score))
			}
		}
	}
	if res.Duplicates > 0 {
		endpoint := "events"
		if records[0].Kind == rollup.KindSurvey {
			endpoint = "responses"
		}
		s.metrics.duplicates.WithLabelValues(endpoint).Add(float64(res.Duplicates))
	}
}

// authorizeRead checks the read token. Summaries and exports (comments,
// contacts) always need it: a config without one admits nobody (Run refuses
// such a config, so this only guards a Server built another way).
func (s *Server) authorizeRead(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	cfg := s.cfg.Load()
	sum := bearer(r)
	if sum != nil && len(cfg.readTokens) > 0 && matches(sum, cfg.readTokens) {
		return true
	}
	msg := "a read token is required"
	switch {
	case len(cfg.readTokens) == 0:
		msg = "a read token is required, and the collector's config names none (readTokenSHA256), so none is accepted"
	case sum != nil:
		msg = "a read token is required; the bearer token given is not one"
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="cxop-collector"`)
	s.reject(w, endpoint, "unauthorized", 401, errorBody{Error: msg})
	return false
}

// Serve runs the HTTP server on l until ctx ends, then drains it.
func Serve(ctx context.Context, srv *http.Server, l net.Listener, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("drain HTTP server", "err", err)
	}
	return nil
}
