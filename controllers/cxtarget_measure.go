package controllers

import (
	"context"
	"errors"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorclient"
)

// burnRateWindows are the lookbacks whose burn rates status shows.
var burnRateWindows = []cxv1.Duration{"1h", "6h", "1d", "3d"}

// targetCounts are the counts behind a target's objective over one window.
type targetCounts struct {
	// Good and Total count events for ratio objectives (wait time, first
	// contact resolution).
	Good, Total uint64
	// Distribution counts answers by score (index = score) for score
	// objectives (NPS, CSAT, CES).
	Distribution []uint64
	// BadByTouchpoint splits the bad events of a ratio objective on a
	// Journey by touchpoint, for budget attribution.
	BadByTouchpoint map[string]uint64
}

// errNotMeasurable marks an objective the collector cannot count yet.
var errNotMeasurable = errors.New("not measurable")

// targetScope is what a target's objective is counted over.
type targetScope struct {
	touchpoints []string
	surveys     []string
}

// knownTo reports whether a summary knows every subject of the scope.
func (s targetScope) knownTo(all *collectorclient.Counts) bool {
	for _, tp := range s.touchpoints {
		if all.Touchpoints[tp] == nil {
			return false
		}
	}
	for _, sv := range s.surveys {
		if all.Surveys[sv] == nil {
			return false
		}
	}
	return true
}

// scopeOf resolves the touchpoints and surveys a target's objective is
// counted over. For a Journey, score objectives count every survey of the
// Journey of the objective's type, and wait-time objectives every touchpoint
// of its stages; a touchpoint whose threshold differs from the objective's
// is reported as a mismatch.
func (r *CXTargetReconciler) scopeOf(ctx context.Context, cxt *cxv1.CXTarget, subject client.Object) (targetScope, string, error) {
	obj := cxt.Spec.Objective
	switch s := subject.(type) {
	case *cxv1.Touchpoint:
		return targetScope{touchpoints: []string{s.Name}}, "", nil
	case *cxv1.Survey:
		return targetScope{surveys: []string{s.Name}}, "", nil
	case *cxv1.Journey:
		scope := targetScope{}
		if want := objectiveSurveyType(obj); want != "" {
			for _, name := range s.Spec.Surveys {
				var svy cxv1.Survey
				if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &svy); err != nil {
					return scope, "", client.IgnoreNotFound(err)
				}
				if svy.Spec.Type == want {
					scope.surveys = append(scope.surveys, name)
				}
			}
			if len(scope.surveys) == 0 {
				return scope, fmt.Sprintf("spec.objective.%s needs a %s survey, but Journey %q lists none", objectiveName(obj), want, s.Name), nil
			}
			return scope, "", nil
		}
		for _, name := range journeyTouchpoints(s) {
			var tp cxv1.Touchpoint
			if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &tp); err != nil {
				return scope, "", client.IgnoreNotFound(err)
			}
			if obj.WaitTime != nil && tp.Spec.WaitTime != nil {
				if msg := waitThresholdMismatch(obj.WaitTime.Threshold, &tp); msg != "" {
					return scope, msg, nil
				}
			}
			scope.touchpoints = append(scope.touchpoints, name)
		}
		return scope, "", nil
	}
	return targetScope{}, "", fmt.Errorf("unexpected subject %T", subject)
}

// countsOf extracts a target's counts from a namespace summary.
func countsOf(obj cxv1.Objective, scope targetScope, all *collectorclient.Counts) (targetCounts, error) {
	c := targetCounts{Distribution: make([]uint64, 11)}
	switch {
	case obj.WaitTime != nil, obj.FirstContactResolution != nil:
		c.BadByTouchpoint = map[string]uint64{}
		for _, name := range scope.touchpoints {
			s := all.Touchpoints[name]
			if s == nil {
				continue
			}
			good, total := s.CompliantWaits, s.AssessedWaits
			if obj.FirstContactResolution != nil {
				good, total = s.Resolved, s.ResolvedKnown
			}
			c.Good += good
			c.Total += total
			if total > good {
				c.BadByTouchpoint[name] = total - good
			}
		}
	case obj.NPS != nil, obj.CSAT != nil, obj.CES != nil:
		for _, name := range scope.surveys {
			if s := all.Surveys[name]; s != nil {
				addCounts(c.Distribution, s.Distribution)
			}
		}
	default:
		// Response rate divides answers by invitations, which the
		// collector does not record until surveys are delivered by cxop.
		return c, errNotMeasurable
	}
	return c, nil
}

// measureTarget returns the counts over the target's window and over each
// burn-rate lookback. Every window is one cached namespace answer shared
// by all targets of the namespace.
func (r *CXTargetReconciler) measureTarget(ctx context.Context, cxt *cxv1.CXTarget, scope targetScope) (targetCounts, map[cxv1.Duration]targetCounts, error) {
	t, err := r.Live.target(ctx, cxt.Namespace)
	if err != nil {
		return targetCounts{}, nil, err
	}
	measure := func(w cxv1.Duration) (targetCounts, error) {
		all, err := r.Live.API.Counts(ctx, t, string(w), scope.knownTo)
		if err != nil {
			return targetCounts{}, err
		}
		return countsOf(cxt.Spec.Objective, scope, all)
	}
	window, err := measure(cxt.Spec.GetWindow())
	if err != nil {
		return window, nil, err
	}
	lookbacks := make(map[cxv1.Duration]targetCounts, len(burnRateWindows))
	for _, w := range burnRateWindows {
		if lookbacks[w], err = measure(w); err != nil {
			return window, nil, err
		}
	}
	return window, lookbacks, nil
}
