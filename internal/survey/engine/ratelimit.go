package engine

import (
	"encoding/binary"
	"time"
)

// Rate limits cap the invitations that interactions trigger, per
// touchpoint (a touchpoint token names one touchpoint, so a leaked token
// can cause at most its touchpoint's share) and over the whole collector
// (one namespace). An invitation over a cap is suppressed and counted
// (CounterSuppressedRate and a metric), not queued: a flood must not turn
// into a backlog mailed later, and a customer it suppresses is asked on
// their next interaction. Waves are not capped here: they need the
// survey's token, not a touchpoint's, and each call is bounded by
// MaxWaveMembers and taken once.
//
// The count is a sliding hour, estimated from per-hour counters as the
// current hour's plus the previous hour's weighted by how much of it is
// still inside the last 60 minutes, so a burst at an hour's boundary gets
// no double allowance. The counters are written in the batch that makes
// the invitations, so a restart neither forgets nor double counts them.

const (
	limitTouchpoint = "touchpoint"
	limitNamespace  = "namespace"
)

// rateLimits decides one invite batch's invitations against the caps.
type rateLimits struct {
	e    *Engine
	w    *batchWriter
	hour int64
	// prevWeight is the share of the previous hour still inside the
	// sliding hour.
	prevWeight float64
	stored     map[string]uint64
	// suppressed counts the batch's suppressions by survey and limit, for
	// the metric once the batch is committed.
	suppressed map[[2]string]float64
}

func (e *Engine) newRateLimits(w *batchWriter, now time.Time) *rateLimits {
	hour := now.Unix() / 3600
	elapsed := float64(now.Unix()%3600) / 3600
	return &rateLimits{e: e, w: w, hour: hour, prevWeight: 1 - elapsed, stored: map[string]uint64{}, suppressed: map[[2]string]float64{}}
}

func rateKey(hour int64, scope string) string {
	return string(binary.BigEndian.AppendUint64([]byte(prefixRate), uint64(hour))) + scope
}

// used estimates the invitations of scope in the last hour, this batch's
// included.
func (r *rateLimits) used(scope string) (float64, error) {
	cur, prev := rateKey(r.hour, scope), rateKey(r.hour-1, scope)
	for _, k := range []string{cur, prev} {
		if _, ok := r.stored[k]; !ok {
			v, err := r.e.getUint(k)
			if err != nil {
				return 0, err
			}
			r.stored[k] = v
			if k == cur {
				// Counters older than the previous hour are of no use.
				_ = r.w.b.Delete([]byte(rateKey(r.hour-2, scope)))
			}
		}
	}
	return float64(r.stored[cur]+r.w.counts[cur]) + float64(r.stored[prev])*r.prevWeight, nil
}

// take admits one invitation triggered at touchpoint ("" for a wave), or
// names the limit that suppresses it.
func (r *rateLimits) take(touchpoint string) (string, error) {
	o := &r.e.opts
	if touchpoint == "" || (o.TouchpointRate <= 0 && o.NamespaceRate <= 0) {
		return "", nil
	}
	tp, ns := "t\x00"+touchpoint, "n"
	if o.TouchpointRate > 0 {
		if n, err := r.used(tp); err != nil {
			return "", err
		} else if n >= float64(o.TouchpointRate) {
			return limitTouchpoint, nil
		}
	}
	if o.NamespaceRate > 0 {
		if n, err := r.used(ns); err != nil {
			return "", err
		} else if n >= float64(o.NamespaceRate) {
			return limitNamespace, nil
		}
	}
	if o.TouchpointRate > 0 {
		r.w.counts[rateKey(r.hour, tp)]++
	}
	if o.NamespaceRate > 0 {
		r.w.counts[rateKey(r.hour, ns)]++
	}
	return "", nil
}

// countSuppressed adds the committed batch's suppressions to the metric.
func (r *rateLimits) countSuppressed() {
	for k, n := range r.suppressed {
		r.e.metrics.rateLimited.WithLabelValues(k[0], k[1]).Add(n)
	}
}
