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
	"net/http"
	"strconv"
	"strings"
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
	log   *slog.Logger
	cfg   atomic.Pointer[settings]
	store atomic.Pointer[store.Store]
	// surveys invites customers and delivers invitations; nil until the
	// store is open.
	surveys atomic.Pointer[engine.Engine]
	// linkKeys verify survey links on the hosted page; nil without a
	// secrets file.
	linkKeys atomic.Pointer[link.Keys]
	metrics  *metrics
	reg      *prometheus.Registry
	now      func() time.Time

	// secrets are the last secrets applied, for an engine started later.
	secrets atomic.Pointer[secrets]
	// roomPoll is the first wait of a read-only store for room to write;
	// 0 is 5s. Tests shorten it.
	roomPoll time.Duration
}

// NewServer returns a server with a validated config and no store yet.
func NewServer(log *slog.Logger, cfg *settings, reg *prometheus.Registry, now func() time.Time) *Server {
	s := &Server{log: log, metrics: newMetrics(reg), reg: reg, now: now}
	s.cfg.Store(cfg)
	s.metrics.declare(cfg)
	return s
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", s.ingest("events"))
	mux.HandleFunc("POST /v1/responses", s.ingest("responses"))
	mux.HandleFunc("GET /v1/summary", s.summary)
	mux.HandleFunc("GET /v1/export", s.export)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("/s/{token}", s.pageHandler())
	mux.HandleFunc("POST /v1/followups/{id}", s.followUp)
	mux.HandleFunc("POST /v1/waves", s.wave)
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

func (s *Server) rejectInput(w http.ResponseWriter, endpoint string, e *inputError) {
	reason := map[int]string{400: "invalid", 403: "forbidden", 413: "too_large"}[e.status]
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

// readBody reads a request body of at most MaxBodyBytes. A declared
// length sizes the buffer once, instead of growing it by doubling.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if r.ContentLength <= 0 || r.ContentLength > MaxBodyBytes {
		return io.ReadAll(body)
	}
	// net/http ends a body at its declared length, so exactly that many
	// bytes are read.
	buf := make([]byte, r.ContentLength)
	_, err := io.ReadFull(body, buf)
	return buf, err
}

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
	st := s.store.Load()
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

	body, err := readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.reject(w, endpoint, "too_large", 413, errorBody{Error: fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)})
			return 413
		}
		s.reject(w, endpoint, "invalid", 400, errorBody{Error: "reading body: " + err.Error()})
		return 400
	}
	v := &validator{cfg: cfg, now: s.now(), authorized: func(n string) bool { return allowed[n] }, seen: map[string]int{}}
	var records []store.Record
	var ierr *inputError
	if endpoint == "events" {
		records, ierr = validateAll(body, v.event)
	} else {
		records, ierr = validateAll(body, v.response)
	}
	if ierr != nil {
		s.rejectInput(w, endpoint, ierr)
		return ierr.status
	}

	res, err := st.Submit(r.Context(), records)
	switch {
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
	if e := s.surveys.Load(); e != nil && res.Accepted > 0 {
		e.Notify()
	}
	writeJSON(w, 200, ingestResult{Accepted: res.Accepted, Duplicates: res.Duplicates})
	return 200
}

// count updates the metrics for records newly stored.
func (s *Server) count(cfg *settings, records []store.Record, res store.Result) {
	for i := range records {
		if res.Duplicate != nil && res.Duplicate[i] {
			continue
		}
		rec := &records[i]
		switch rec.Kind {
		case rollup.KindTouchpoint:
			e := &rec.Event
			s.metrics.interactions.WithLabelValues(rec.Subject).Inc()
			if e.HasWait {
				s.metrics.waits.WithLabelValues(rec.Subject).Observe(e.WaitSeconds)
			}
			if e.Assessed {
				s.metrics.assessed.WithLabelValues(rec.Subject).Inc()
				if e.Compliant {
					s.metrics.compliant.WithLabelValues(rec.Subject).Inc()
				}
			}
			if e.HasResolved {
				s.metrics.resolutions.WithLabelValues(rec.Subject, strconv.FormatBool(e.Resolved)).Inc()
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

// authorizeRead checks the read token when the config sets one.
func (s *Server) authorizeRead(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	cfg := s.cfg.Load()
	if len(cfg.readTokens) == 0 {
		return true
	}
	sum := bearer(r)
	if sum == nil || !matches(sum, cfg.readTokens) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cxop-collector"`)
		s.reject(w, endpoint, "unauthorized", 401, errorBody{Error: "a read token is required"})
		return false
	}
	return true
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeRead(w, r, "export") {
		return
	}
	st := s.store.Load()
	if st == nil {
		writeJSON(w, 503, errorBody{Error: "the collector is not ready"})
		return
	}
	q := r.URL.Query()
	kind, name := rollup.KindTouchpoint, q.Get("touchpoint")
	if sv := q.Get("survey"); sv != "" {
		kind, name = rollup.KindSurvey, sv
	}
	if name == "" || (q.Get("touchpoint") != "" && q.Get("survey") != "") {
		writeJSON(w, 400, errorBody{Error: "touchpoint or survey: name exactly one subject to export", Field: "touchpoint"})
		return
	}
	// An export may take longer than the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	err := st.Export(kind, name, func(js []byte) error {
		if _, err := w.Write(js); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	})
	if err != nil {
		// The 200 is already sent: abort the connection so the client sees
		// a broken stream, not a clean end of a partial export.
		s.log.Error("export cut short", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// Serve runs the HTTP server until ctx ends, then drains it.
func Serve(ctx context.Context, srv *http.Server, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("listen on %s: %w", srv.Addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("drain HTTP server", "err", err)
	}
	return nil
}
