package collector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

func (s *Server) summary(w http.ResponseWriter, r *http.Request) {
	if !s.authorizeRead(w, r, "summary") {
		return
	}
	st := s.storage()
	if st == nil {
		writeJSON(w, 503, errorBody{Error: "the collector is not ready"})
		return
	}
	cfg := s.cfg.Load()
	q := r.URL.Query()
	bad := func(field, format string, args ...any) {
		s.rejectField(w, "summary", field, fmt.Sprintf(format, args...))
	}
	// Every parameter is checked before any work: an unknown or repeated
	// one is a client bug that would otherwise answer another question.
	if field, reason := checkParams(q, "touchpoint", "survey", "window", "end"); field != "" {
		bad(field, "%s", reason)
		return
	}
	windowText := q.Get("window")
	if windowText == "" {
		windowText = "28d"
	}
	pd, err := model.ParseDuration(windowText)
	window := time.Duration(pd)
	if err != nil || window < time.Minute {
		bad("window", "%q is not a duration of at least 1m such as 1h, 1d or 28d", windowText)
		return
	}
	if window > cfg.retention {
		bad("window", "%s is longer than the retention of %s", windowText, formatDuration(cfg.retention))
		return
	}
	now := s.now()
	end := now
	if e := q.Get("end"); e != "" {
		if end, err = time.Parse(time.RFC3339Nano, e); err != nil {
			bad("end", "%q is not an RFC 3339 time", e)
			return
		}
		// Checked before any work: the buckets walked grow with the distance
		// from now, and no record lies past the ingest tolerance or before
		// the retention.
		if end.After(now.Add(futureTolerance)) {
			bad("end", "%s is more than %s in the future", e, futureTolerance)
			return
		}
		if end.Before(now.Add(-cfg.retention)) {
			bad("end", "%s is before the retention of %s", e, formatDuration(cfg.retention))
			return
		}
	}
	// The window must lie within the retention: its buckets before it are
	// gone, and an answer over fewer days than asked would pass for the
	// whole window.
	if start := end.Add(-window); start.Before(now.Add(-cfg.retention)) {
		bad("window", "%s before %s starts before the retention of %s; shorten the window or move end", windowText, end.UTC().Format(time.RFC3339), formatDuration(cfg.retention))
		return
	}
	// A touchpoint named twice is counted once: the same buckets are not
	// merged (and walked) again.
	tps, svs := slices.Compact(slices.Sorted(slices.Values(q["touchpoint"]))), q["survey"]
	if len(tps) > 0 && len(svs) > 0 {
		bad("survey", "ask for touchpoints or one survey, not both")
		return
	}
	if len(svs) > 1 {
		bad("survey", "one survey at a time")
		return
	}
	rs := windows{ctx: r.Context(), st: st}
	switch {
	case len(tps) > 0:
		for _, n := range tps {
			if _, ok := cfg.touchpoints[n]; !ok {
				bad("touchpoint", "unknown touchpoint %q", n)
				return
			}
		}
		out, err := touchpointSummary(rs, cfg, tps, windowText, window, end, now)
		if err != nil {
			s.summaryFailed(w, err)
			return
		}
		writeJSON(w, 200, out)
	case len(svs) == 1:
		sv, ok := cfg.surveys[svs[0]]
		if !ok {
			bad("survey", "unknown survey %q", svs[0])
			return
		}
		out, err := s.surveyWithInvitations(rs, sv, windowText, window, end, now)
		if err != nil {
			s.summaryFailed(w, err)
			return
		}
		writeJSON(w, 200, out)
	default:
		all := collectorapi.AllSummary{Touchpoints: map[string]*collectorapi.TouchpointSummary{}, Surveys: map[string]*collectorapi.SurveySummary{}}
		for n := range cfg.touchpoints {
			out, err := touchpointSummary(rs, cfg, []string{n}, windowText, window, end, now)
			if err != nil {
				s.summaryFailed(w, err)
				return
			}
			all.Touchpoints[n] = out
		}
		for n, sv := range cfg.surveys {
			out, err := s.surveyWithInvitations(rs, sv, windowText, window, end, now)
			if err != nil {
				s.summaryFailed(w, err)
				return
			}
			all.Surveys[n] = out
		}
		writeJSON(w, 200, all)
	}
}

// summaryFailed answers a summary the storage could not compute: 503 with
// Retry-After while the database is unavailable (the next try may work),
// else 500 with the error.
func (s *Server) summaryFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, pgstore.ErrUnavailable) {
		s.log.Error("summary", "err", err)
		w.Header().Set("Retry-After", "5")
		s.reject(w, "summary", "unavailable", 503, errorBody{Error: "the database is unavailable; retry"})
		return
	}
	writeJSON(w, 500, errorBody{Error: err.Error()})
}

// windows is what a summary reads of the rollups: the storage, with the
// request's context.
type windows struct {
	ctx context.Context
	st  Storage
}

func ptr[T any](v T) *T { return &v }

func timeText(ns int64) *string {
	if ns == 0 {
		return nil
	}
	return ptr(time.Unix(0, ns).UTC().Format(time.RFC3339Nano))
}

func touchpointSummary(rs windows, cfg *settings, names []string, windowText string, window time.Duration, end, now time.Time) (*collectorapi.TouchpointSummary, error) {
	a, win, err := rs.st.TouchpointWindow(rs.ctx, names, window, end, now)
	if err != nil {
		return nil, err
	}
	names = slices.Clone(names)
	slices.Sort(names)
	out := &collectorapi.TouchpointSummary{
		Window: windowText, Start: time.Unix(0, win.Start).UTC(), End: time.Unix(0, win.End).UTC(), Touchpoints: names,
		Interactions: a.Interactions, Customers: a.Customers.Estimate(), Waits: a.Waits,
		AssessedWaits: a.Assessed, CompliantWaits: a.Compliant, ResolvedKnown: a.ResolvedKnown, Resolved: a.Resolved,
		LastEventTime: timeText(a.Last),
	}
	if len(names) == 1 {
		if th := cfg.touchpoints[names[0]].threshold; th > 0 {
			out.WaitThresholdSeconds = ptr(th.Seconds())
		}
	}
	if v, ok := score.Ratio(a.Compliant, a.Assessed); ok {
		out.WaitCompliance = ptr(100 * v)
	}
	if v, ok := score.Ratio(a.Resolved, a.ResolvedKnown); ok {
		out.FirstContactResolution = ptr(100 * v)
	}
	for q, dst := range map[float64]**float64{0.5: &out.WaitP50Seconds, 0.95: &out.WaitP95Seconds, 0.99: &out.WaitP99Seconds} {
		if v, ok := a.WaitQuantile(q); ok {
			*dst = ptr(v)
		}
	}
	return out, nil
}

func surveySummary(rs windows, sv *surveySettings, windowText string, window time.Duration, end, now time.Time) (*collectorapi.SurveySummary, error) {
	a, win, err := rs.st.SurveyWindow(rs.ctx, sv.name, window, end, now)
	if err != nil {
		return nil, err
	}
	_, hi := sv.kind.Range()
	res, err := score.Compute(sv.kind, a.Counts[:])
	if err != nil {
		return nil, fmt.Errorf("survey %s: %w", sv.name, err)
	}
	out := &collectorapi.SurveySummary{
		Window: windowText, Start: time.Unix(0, win.Start).UTC(), End: time.Unix(0, win.End).UTC(),
		Survey: sv.name, Type: sv.kind, Responses: res.N, Customers: a.Customers.Estimate(),
		Unhappy: res.Unhappy, Distribution: slices.Clone(a.Counts[:hi+1]), LastResponseTime: timeText(a.Last),
	}
	if res.N > 0 {
		out.Score, out.ScoreLower, out.ScoreUpper = ptr(res.Value), ptr(res.Lower), ptr(res.Upper)
	}
	switch sv.kind {
	case score.NPS:
		out.Promoters, out.Passives, out.Detractors = ptr(res.Promoters), ptr(res.Passives), ptr(res.Detractors)
	case score.CSAT:
		out.Satisfied = ptr(res.Satisfied)
	}
	return out, nil
}

// surveyWithInvitations is a survey's summary with the survey engine's
// counts since the window's start. The engine's state and the rollups are
// read at once: on PostgreSQL each is a few round trips to the database,
// and a summary waits for the longer of the two instead of their sum.
func (s *Server) surveyWithInvitations(rs windows, sv *surveySettings, windowText string, window time.Duration, end, now time.Time) (*collectorapi.SurveySummary, error) {
	var inv *collectorapi.InvitationSummary
	var invErr error
	read := make(chan struct{})
	go func() {
		defer close(read)
		inv, invErr = s.invitations(sv.name, end.Add(-window))
	}()
	out, err := surveySummary(rs, sv, windowText, window, end, now)
	<-read
	if err != nil {
		return nil, err
	}
	if invErr != nil {
		return nil, invErr
	}
	if inv != nil {
		if inv.Sent > 0 {
			inv.ResponseRate = ptr(100 * float64(out.Responses) / float64(inv.Sent))
		}
		out.Invitations = inv
	}
	return out, nil
}

// invitations reads the survey engine's counts since start for a survey's
// summary (all but the response rate, which needs the responses); nil
// without a survey engine.
func (s *Server) invitations(survey string, start time.Time) (*collectorapi.InvitationSummary, error) {
	e := s.surveys.Load()
	if e == nil {
		return nil, nil
	}
	st, err := e.Stats(survey, start)
	if err != nil {
		return nil, fmt.Errorf("survey %s invitations: %w", survey, err)
	}
	inv := &collectorapi.InvitationSummary{
		Invited: st[engine.CounterInvited], Sent: st[engine.CounterDelivered],
		Retries: st[engine.CounterRetries], Failed: st[engine.CounterDeliveryFailed],
		Suppressed: map[string]uint64{
			"sample":    st[engine.CounterSuppressedSample],
			"throttle":  st[engine.CounterSuppressedThrottle],
			"suspended": st[engine.CounterSuppressedSuspend],
			"rateLimit": st[engine.CounterSuppressedRate],
		},
	}
	inv.Detractors = st[engine.CounterDetractors]
	loop, err := e.ClosedLoopStats(survey, start)
	if err != nil {
		return nil, fmt.Errorf("survey %s closed loop: %w", survey, err)
	}
	inv.OpenDetractors = loop.Open
	if loop.HasFollowUpTimes {
		inv.FollowUpP50Seconds = ptr(loop.FollowUpP50.Seconds())
	}
	if at, gone, err := e.WebhookGone(survey); err != nil {
		return nil, err
	} else if gone {
		inv.WebhookGoneSince = ptr(at.UTC().Format(time.RFC3339))
	}
	if f, failing, err := e.WebhookFailing(survey); err != nil {
		return nil, err
	} else if failing {
		inv.WebhookFailingSince, inv.WebhookError = ptr(f.Since.UTC().Format(time.RFC3339)), f.LastError
	}
	return inv, nil
}

// checkParams refuses a query parameter not in known, and one of them
// given twice (except touchpoint, a set). It returns the field and why,
// or "".
func checkParams(q url.Values, known ...string) (field, reason string) {
	for _, name := range slices.Sorted(maps.Keys(q)) {
		switch {
		case !slices.Contains(known, name):
			return name, fmt.Sprintf("unknown parameter; this endpoint takes %s", strings.Join(known, ", "))
		case name != "touchpoint" && len(q[name]) > 1:
			return name, "given more than once"
		}
	}
	return "", ""
}

// exportable checks an export's parameters before it reads the whole
// record log: one subject, named once, that the config or the rollups
// know (a subject deleted from the config keeps its records until they
// pass the retention, and may still be exported).
func (s *Server) exportable(w http.ResponseWriter, r *http.Request, st Storage, q url.Values, kind rollup.Kind, name string) bool {
	bad := func(field, format string, args ...any) bool {
		s.rejectField(w, "export", field, fmt.Sprintf(format, args...))
		return false
	}
	if field, reason := checkParams(q, "touchpoint", "survey", "format", "customer"); field != "" {
		return bad(field, "%s", reason)
	}
	field := "touchpoint"
	if kind == rollup.KindSurvey {
		field = "survey"
	}
	if len(q[field]) > 1 {
		return bad(field, "one %s at a time", field)
	}
	cfg := s.cfg.Load()
	if _, ok := cfg.touchpoints[name]; ok && kind == rollup.KindTouchpoint {
		return true
	}
	if _, ok := cfg.surveys[name]; ok && kind == rollup.KindSurvey {
		return true
	}
	tps, svs, err := st.Names(r.Context())
	if err != nil {
		s.log.Error("export: list stored subjects", "err", err)
		s.unavailable(w, "export", err)
		return false
	}
	if kind == rollup.KindTouchpoint && slices.Contains(tps, name) || kind == rollup.KindSurvey && slices.Contains(svs, name) {
		return true
	}
	return bad(field, "unknown %s %q: no such %s in the config and no records of it", field, name, field)
}
