// Package slo is the domain of a CXTarget, apart from Kubernetes and the
// collector: what its objective is, what it counts, its value and 95%
// interval, its verdict, error budget and burn rates, and what its alert
// rules are generated from. It takes plain values (the objective from the
// API types, counts from the collector's summary) and returns plain values;
// controllers/ fetches the counts and writes the status.
//
// Each objective kind is described once, in the kinds table; FromSpec is the
// only place that looks at which field of the API's one-of is set.
package slo

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/promrules"
	"github.com/cxop-dev/cxop/internal/score"
)

// Kind is what an objective measures; its value is the objective's JSON
// name under spec.objective.
type Kind string

// The objective kinds.
const (
	NPS                    Kind = "nps"
	CSAT                   Kind = "csat"
	CES                    Kind = "ces"
	WaitTime               Kind = "waitTime"
	ResponseRate           Kind = "responseRate"
	FirstContactResolution Kind = "firstContactResolution"
)

// kind describes one objective kind: everything that differs between kinds
// is here, so nothing else switches on the kind.
type kind struct {
	// ratio kinds count good events of a total (Wilson interval, the SRE
	// workbook's budget); the others score an answer distribution.
	ratio bool
	// best is the best value a window can have, on the value's scale.
	best float64
	// digits is how many decimals the value shows.
	digits int
	// score is the scale of a score kind.
	score score.Kind
	// surveyType is the survey type a score kind is measured on.
	surveyType cxv1.SurveyType
	// onSurveys: counted over surveys (scores, response rate) rather than
	// touchpoints.
	onSurveys bool
	// good and total read a ratio kind's counts of one touchpoint or survey.
	good, total func(TouchpointCounts, SurveyCounts) uint64
	// rules is the kind's name in promrules, "" when the collectors
	// export no metric Prometheus could compute it from.
	rules promrules.Kind
	// dailyCounts: the collector counts part of the kind by UTC day, so
	// windows are extended to whole days and lookbacks under a day are
	// not measured.
	dailyCounts bool
	// touchpointThreshold: judged against the Touchpoint's wait threshold.
	touchpointThreshold bool
	// unit follows the objective's number in its text ("%" for percents).
	unit string
	// absorb is, for a score kind, how many further worst answers r can
	// take before its score falls below m (see BudgetRemaining); always
	// is true when every answer meets m.
	absorb func(r score.Result, m float64) (x float64, always bool)
}

var kinds = map[Kind]kind{
	// x further detractors keep 100 (P - D - x) / (N + x) >= m.
	NPS: {best: 100, digits: 1, score: score.NPS, surveyType: cxv1.SurveyTypeNPS, onSurveys: true, rules: promrules.NPS,
		absorb: func(r score.Result, m float64) (float64, bool) {
			return (100*(float64(r.Promoters)-float64(r.Detractors)) - m*float64(r.N)) / (100 + m), m <= -100
		}},
	// x further unsatisfied answers keep 100 S / (N + x) >= m.
	CSAT: {best: 100, digits: 1, score: score.CSAT, surveyType: cxv1.SurveyTypeCSAT, onSurveys: true, rules: promrules.CSAT, unit: "%",
		absorb: func(r score.Result, m float64) (float64, bool) {
			return 100*float64(r.Satisfied)/m - float64(r.N), m <= 0
		}},
	// x further answers of 1 keep (T + x) / (N + x) >= m.
	CES: {best: 7, digits: 2, score: score.CES, surveyType: cxv1.SurveyTypeCES, onSurveys: true, rules: promrules.CES,
		absorb: func(r score.Result, m float64) (float64, bool) {
			n := float64(r.N)
			return (r.Value*n - m*n) / (m - 1), m <= 1
		}},
	WaitTime: {ratio: true, best: 100, digits: 1, rules: promrules.WaitTime, unit: "%", touchpointThreshold: true,
		good:  func(t TouchpointCounts, _ SurveyCounts) uint64 { return t.CompliantWaits },
		total: func(t TouchpointCounts, _ SurveyCounts) uint64 { return t.AssessedWaits }},
	FirstContactResolution: {ratio: true, best: 100, digits: 1, rules: promrules.FirstContactResolution, unit: "%",
		good:  func(t TouchpointCounts, _ SurveyCounts) uint64 { return t.Resolved },
		total: func(t TouchpointCounts, _ SurveyCounts) uint64 { return t.ResolvedKnown }},
	// An answer without an invitation (posted to /v1/responses by another
	// tool) is not an invitation answered: answers beyond the invitations
	// sent are not counted, so the rate never exceeds 100%.
	ResponseRate: {ratio: true, best: 100, digits: 1, onSurveys: true, dailyCounts: true, unit: "%",
		good:  func(_ TouchpointCounts, s SurveyCounts) uint64 { return min(s.Responses, s.InvitationsSent) },
		total: func(_ TouchpointCounts, s SurveyCounts) uint64 { return s.InvitationsSent }},
}

// Objective is a CXTarget's objective, read from its spec.
type Objective struct {
	Kind Kind
	// Target is the value required, on the value's scale: a percent, the
	// NPS minimum or the CES mean.
	Target float64
	// Threshold is a wait-time objective's threshold, "" when it defers
	// to the Touchpoint's.
	Threshold cxv1.Duration
	// target is Target as written in the spec ("99.5"), for text.
	target string
}

// ErrNoObjective is returned for an objective with no field set, which the
// schema forbids; a manager newer than the CRD in the cluster can see it.
var ErrNoObjective = errors.New("spec.objective: exactly one of nps, csat, ces, waitTime, responseRate or firstContactResolution must be set")

// FromSpec reads the objective of a CXTarget's spec. It is the one place
// that looks at which objective is set.
func FromSpec(obj cxv1.Objective) (Objective, error) {
	percent := func(k Kind, q resource.Quantity) Objective {
		return Objective{Kind: k, Target: q.AsApproximateFloat64(), target: q.AsDec().String()}
	}
	switch {
	case obj.NPS != nil:
		return Objective{Kind: NPS, Target: float64(obj.NPS.Min), target: strconv.Itoa(int(obj.NPS.Min))}, nil
	case obj.CSAT != nil:
		return percent(CSAT, obj.CSAT.Min), nil
	case obj.CES != nil:
		return percent(CES, obj.CES.Min), nil
	case obj.WaitTime != nil:
		o := percent(WaitTime, obj.WaitTime.Percent)
		o.Threshold = obj.WaitTime.Threshold
		return o, nil
	case obj.ResponseRate != nil:
		return percent(ResponseRate, obj.ResponseRate.Min), nil
	case obj.FirstContactResolution != nil:
		return percent(FirstContactResolution, obj.FirstContactResolution.Min), nil
	}
	return Objective{}, ErrNoObjective
}

func (o Objective) kind() kind { return kinds[o.Kind] }

// Name is the objective's JSON name under spec.objective, for messages.
func (o Objective) Name() string { return string(o.Kind) }

// Field is the objective's path in the spec, for messages.
func (o Objective) Field() string { return "spec.objective." + string(o.Kind) }

// Text renders the objective for people, as status.objective and the
// Objective printer column show it: ">= 40", ">= 85%", "95% <= 2m".
func (o Objective) Text() string {
	if o.Kind == WaitTime {
		threshold := string(o.Threshold)
		if threshold == "" {
			threshold = "threshold"
		}
		return fmt.Sprintf("%s%% <= %s", o.target, threshold)
	}
	return ">= " + o.target + o.kind().unit
}

// SurveyType is the survey type a score objective is measured on, "" for
// the other kinds.
func (o Objective) SurveyType() cxv1.SurveyType { return o.kind().surveyType }

// OnSurveys reports whether the objective counts surveys' answers (scores,
// response rate) rather than touchpoints' interactions.
func (o Objective) OnSurveys() bool { return o.kind().onSurveys }

// Ratio reports whether the objective is a ratio of good events to all.
func (o Objective) Ratio() bool { return o.kind().ratio }

// AtBest reports whether the objective requires the best value a window
// can have (csat.min 100, ces.min 7): it leaves no error budget, so it has
// no burn rate.
func (o Objective) AtBest() bool { return o.Target >= o.kind().best }

// Format renders a value of the objective's scale for status: at most its
// digits of decimals, no trailing zeros ("37.5", "5.43", "100").
func (o Objective) Format(v float64) string { return Decimal(v, o.kind().digits) }

// Decimal renders v with at most digits decimals and no trailing zeros.
func Decimal(v float64, digits int) string {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}
