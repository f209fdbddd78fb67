package slo

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// TouchpointCounts are what the collector counted at one touchpoint over a
// window, as far as objectives use them.
type TouchpointCounts struct {
	// AssessedWaits are waits judged against the touchpoint's threshold,
	// CompliantWaits those at or under it.
	AssessedWaits, CompliantWaits uint64
	// ResolvedKnown are interactions that said whether they were resolved
	// at first contact, Resolved those that were.
	ResolvedKnown, Resolved uint64
}

// SurveyCounts are what the collector counted for one survey over a window.
type SurveyCounts struct {
	// Distribution counts answers by score (index = score).
	Distribution []uint64
	// Responses are the answers received; InvitationsSent the invitations
	// the receiver acknowledged, counted by UTC day.
	Responses, InvitationsSent uint64
}

// Tallies looks up one window's counts of a namespace by name; ok is false
// for a touchpoint or survey the collector does not know (yet).
type Tallies struct {
	Touchpoint func(name string) (TouchpointCounts, bool)
	Survey     func(name string) (SurveyCounts, bool)
}

// Scope is what a target's objective is counted over.
type Scope struct {
	Touchpoints []string
	Surveys     []string
}

// KnownTo reports whether t knows every touchpoint and survey of the scope:
// a collector that has not loaded a new one answers without it.
func (s Scope) KnownTo(t Tallies) bool {
	for _, tp := range s.Touchpoints {
		if _, ok := t.Touchpoint(tp); !ok {
			return false
		}
	}
	for _, sv := range s.Surveys {
		if _, ok := t.Survey(sv); !ok {
			return false
		}
	}
	return true
}

// Counts are the counts behind an objective over one window.
type Counts struct {
	// Good and Total count events for ratio objectives.
	Good, Total uint64
	// Distribution counts answers by score (index = score) for score
	// objectives.
	Distribution []uint64
	// BadByTouchpoint splits the bad events of a touchpoint ratio by
	// touchpoint, for a Journey's budget attribution.
	BadByTouchpoint map[string]uint64
}

// Ratio returns counts of good events out of total, for tests and tools.
func Ratio(good, total uint64) Counts { return Counts{Good: good, Total: total} }

// Count adds up the objective's counts over the scope.
func (o Objective) Count(s Scope, t Tallies) Counts {
	k := o.kind()
	if !k.ratio {
		c := Counts{Distribution: make([]uint64, 11)}
		for _, name := range s.Surveys {
			if sc, ok := t.Survey(name); ok {
				for i := range min(len(c.Distribution), len(sc.Distribution)) {
					c.Distribution[i] += sc.Distribution[i]
				}
			}
		}
		return c
	}
	var c Counts
	if k.onSurveys {
		for _, name := range s.Surveys {
			if sc, ok := t.Survey(name); ok {
				c.Good += k.good(TouchpointCounts{}, sc)
				c.Total += k.total(TouchpointCounts{}, sc)
			}
		}
		return c
	}
	c.BadByTouchpoint = map[string]uint64{}
	for _, name := range s.Touchpoints {
		tc, ok := t.Touchpoint(name)
		if !ok {
			continue
		}
		good, total := k.good(tc, SurveyCounts{}), k.total(tc, SurveyCounts{})
		c.Good += good
		c.Total += total
		if total > good {
			c.BadByTouchpoint[name] = total - good
		}
	}
	return c
}

// burnRateWindows are the lookbacks whose burn rates status shows.
var burnRateWindows = []cxv1.Duration{"1h", "6h", "1d", "3d"}

// BurnRateWindows are the lookbacks the objective has burn rates for: 1h,
// 6h, 1d and 3d, or 1d and 3d for an objective the collector counts by UTC
// day (response rate: invitations), where a lookback under a day would
// divide an hour's answers by a day's invitations.
func (o Objective) BurnRateWindows() []cxv1.Duration {
	if o.kind().dailyCounts {
		return burnRateWindows[2:]
	}
	return burnRateWindows
}

// QueryWindow is the window to ask the collector for so that it counts the
// objective over w ending now. It is w itself, except for an objective the
// collector counts partly by UTC day (response rate): the collector counts
// invitations from the start of the UTC day the window starts in, so the
// answers are counted from there too, and the window reaches back to that
// midnight. The collector ends a window at the next whole minute.
func (o Objective) QueryWindow(w cxv1.Duration, now time.Time) (cxv1.Duration, error) {
	if !o.kind().dailyCounts {
		return w, nil
	}
	d, err := w.Parse()
	if err != nil {
		return "", fmt.Errorf("window %q: %w", w, err)
	}
	end := now.UTC().Truncate(time.Minute)
	if end.Before(now) {
		end = end.Add(time.Minute)
	}
	start := now.UTC().Add(-d).Truncate(24 * time.Hour)
	return cxv1.Duration(model.Duration(end.Sub(start)).String()), nil
}
