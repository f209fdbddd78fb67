package controllers

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/slo"
)

// scopeOf resolves the touchpoints and surveys a target's objective is
// counted over. For a Journey, score objectives count every survey of the
// Journey of the objective's type, and touchpoint objectives every
// touchpoint of its stages; a touchpoint the objective cannot be measured
// at is reported as a mismatch.
func (r *CXTargetReconciler) scopeOf(ctx context.Context, o slo.Objective, subject client.Object) (slo.Scope, string, error) {
	switch s := subject.(type) {
	case *cxv1.Touchpoint:
		return slo.Scope{Touchpoints: []string{s.Name}}, "", nil
	case *cxv1.Survey:
		return slo.Scope{Surveys: []string{s.Name}}, "", nil
	case *cxv1.Journey:
		scope := slo.Scope{}
		if o.OnSurveys() {
			want := o.SurveyType()
			for _, name := range s.Spec.Surveys {
				var svy cxv1.Survey
				if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &svy); err != nil {
					return scope, "", client.IgnoreNotFound(err)
				}
				if want == "" || svy.Spec.Type == want {
					scope.Surveys = append(scope.Surveys, name)
				}
			}
			if len(scope.Surveys) == 0 {
				return scope, fmt.Sprintf("%s needs a %s survey, but Journey %q lists none", o.Field(), want, s.Name), nil
			}
			return scope, "", nil
		}
		for _, name := range journeyTouchpoints(s) {
			var tp cxv1.Touchpoint
			if err := r.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, &tp); err != nil {
				return scope, "", client.IgnoreNotFound(err)
			}
			// A touchpoint of a Journey without a wait threshold simply
			// has no waits to judge; one with another threshold would be
			// judged against the wrong one.
			if tp.Spec.WaitTime != nil {
				if msg := o.MismatchOnTouchpoint(&tp); msg != "" {
					return scope, msg, nil
				}
			}
			scope.Touchpoints = append(scope.Touchpoints, name)
		}
		return scope, "", nil
	}
	return slo.Scope{}, "", fmt.Errorf("unexpected subject %T", subject)
}

// talliesOf reads a namespace's counts for the domain package.
func talliesOf(all *collectorapi.Counts) slo.Tallies {
	return slo.Tallies{
		Touchpoint: func(name string) (slo.TouchpointCounts, bool) {
			c := all.Touchpoints[name]
			if c == nil {
				return slo.TouchpointCounts{}, false
			}
			return slo.TouchpointCounts(*c), true
		},
		Survey: func(name string) (slo.SurveyCounts, bool) {
			c := all.Surveys[name]
			if c == nil {
				return slo.SurveyCounts{}, false
			}
			out := slo.SurveyCounts{Distribution: c.Distribution, Responses: c.Responses}
			if c.Invitations != nil {
				out.InvitationsSent = c.Invitations.Sent
			}
			return out, true
		},
	}
}

// measureTarget returns the counts over the target's window and over each
// burn-rate lookback of its objective. Every window is one cached
// namespace answer shared by all targets of the namespace.
func (r *CXTargetReconciler) measureTarget(ctx context.Context, cxt *cxv1.CXTarget, o slo.Objective, scope slo.Scope, now time.Time) (slo.Counts, map[cxv1.Duration]slo.Counts, error) {
	t, err := r.Live.target(ctx, cxt.Namespace)
	if err != nil {
		return slo.Counts{}, nil, err
	}
	known := func(all *collectorapi.Counts) bool { return scope.KnownTo(talliesOf(all)) }
	measure := func(w cxv1.Duration) (slo.Counts, error) {
		qw, err := o.QueryWindow(w, now)
		if err != nil {
			return slo.Counts{}, err
		}
		all, err := r.Live.API.Counts(ctx, t, string(qw), known)
		if err != nil {
			return slo.Counts{}, err
		}
		return o.Count(scope, talliesOf(all)), nil
	}
	window, err := measure(cxt.Spec.GetWindow())
	if err != nil {
		return window, nil, err
	}
	lookbacks := map[cxv1.Duration]slo.Counts{}
	for _, w := range o.BurnRateWindows() {
		if lookbacks[w], err = measure(w); err != nil {
			return window, nil, err
		}
	}
	return window, lookbacks, nil
}
