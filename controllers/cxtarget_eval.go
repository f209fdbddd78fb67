package controllers

import (
	"fmt"
	"math"
	"slices"
	"strings"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/score"
)

// verdict is the evaluation of a CXTarget over its window.
type verdict struct {
	State   cxv1.TargetState
	Samples uint64
	// Current, Lower and Upper are the objective's value and its 95%
	// interval; unset (HasValue false) with no samples.
	HasValue              bool
	Current, Lower, Upper float64
	// Objective is the value the objective requires, on Current's scale.
	Objective float64
	// BudgetRemaining is in percent; unset below minSamples.
	HasBudget       bool
	BudgetRemaining float64
	// BurnRates follow burnRateWindows.
	BurnRates []float64
	// Reason says, for people, why the state is what it is.
	Reason string
}

// objectiveScale describes an objective for evaluation: its target value,
// the best value a sample can have, and whether it is a ratio objective.
type objectiveScale struct {
	target, best float64
	ratio        bool
	kind         score.Kind // score objectives only
	digits       int
}

func scaleOf(obj cxv1.Objective) (objectiveScale, error) {
	q := func(v float64) float64 { return v }
	switch {
	case obj.WaitTime != nil:
		return objectiveScale{target: q(obj.WaitTime.Percent.AsApproximateFloat64()), best: 100, ratio: true, digits: 1}, nil
	case obj.FirstContactResolution != nil:
		return objectiveScale{target: obj.FirstContactResolution.Min.AsApproximateFloat64(), best: 100, ratio: true, digits: 1}, nil
	case obj.NPS != nil:
		return objectiveScale{target: float64(obj.NPS.Min), best: 100, kind: score.NPS, digits: 1}, nil
	case obj.CSAT != nil:
		return objectiveScale{target: obj.CSAT.Min.AsApproximateFloat64(), best: 100, kind: score.CSAT, digits: 1}, nil
	case obj.CES != nil:
		return objectiveScale{target: obj.CES.Min.AsApproximateFloat64(), best: 7, kind: score.CES, digits: 2}, nil
	}
	return objectiveScale{}, errNotMeasurable
}

// value is the objective's value over counts with its 95% interval.
func (s objectiveScale) value(c targetCounts) (n uint64, v, lo, hi float64) {
	if s.ratio {
		if c.Total == 0 {
			return 0, 0, 0, 0
		}
		l, u := score.Wilson(c.Good, c.Total, score.Z95)
		return c.Total, 100 * float64(c.Good) / float64(c.Total), 100 * l, 100 * u
	}
	r, err := score.Compute(s.kind, c.Distribution)
	if err != nil || r.N == 0 {
		return 0, 0, 0, 0
	}
	return r.N, r.Value, r.Lower, r.Upper
}

// burnRate is how fast a lookback spends the budget: its shortfall from the
// best value over the shortfall the objective allows. For a ratio it is the
// bad fraction over (1 - p), the SRE workbook's definition; for a score it
// is the same quantity on the score's scale, (best - value) / (best -
// target), so 1 means the lookback scored exactly the objective and 14.4
// means it fell short 14.4 times as fast as the window allows. A lookback
// with no samples burns nothing.
func (s objectiveScale) burnRate(c targetCounts) float64 {
	n, v, _, _ := s.value(c)
	if n == 0 {
		return 0
	}
	return (s.best - v) / (s.best - s.target)
}

// budgetRemaining is the error budget left, in percent.
//
// For a ratio objective with target p over n events of which b are bad,
// the budget is (1 - p) n bad events and the remaining share is
// 1 - b / ((1 - p) n).
//
// For a score objective the contract defines the budget as the further
// worst answers the window can absorb before the score falls below the
// objective, as a percent of the answers so far. For NPS minimum m with P
// promoters and D detractors of N, x further detractors keep
// 100 (P - D - x) / (N + x) >= m while x <= (100 (P - D) - m N) / (100 + m).
// For CSAT minimum m with S satisfied, x further unsatisfied answers keep
// 100 S / (N + x) >= m while x <= 100 S / m - N. For a CES minimum m with
// answers summing to T, x further answers of 1 keep (T + x) / (N + x) >= m
// while x <= (T - m N) / (m - 1). Negative values say how far the score is
// below the objective in the same unit.
func (s objectiveScale) budgetRemaining(c targetCounts) float64 {
	if s.ratio {
		bad := float64(c.Total - c.Good)
		budget := (1 - s.target/100) * float64(c.Total)
		return 100 * (1 - bad/budget)
	}
	r, _ := score.Compute(s.kind, c.Distribution)
	n := float64(r.N)
	var x float64
	switch s.kind {
	case score.NPS:
		x = (100*(float64(r.Promoters)-float64(r.Detractors)) - s.target*n) / (100 + s.target)
	case score.CSAT:
		x = 100*float64(r.Satisfied)/s.target - n
	case score.CES:
		x = (r.Value*n - s.target*n) / (s.target - 1)
	}
	return 100 * x / n
}

// evaluate judges a target: InsufficientData below minSamples (never
// Breached on too little data); Breached when the whole 95% interval lies
// below the objective; AtRisk when not breached but the budget remaining is
// below atRiskBelow, or the 1h burn rate of a ratio objective is above 1;
// Met otherwise.
func evaluate(obj cxv1.Objective, minSamples int32, atRiskBelow float64, window targetCounts, lookbacks map[cxv1.Duration]targetCounts) (verdict, error) {
	s, err := scaleOf(obj)
	if err != nil {
		return verdict{}, err
	}
	v := verdict{Objective: s.target}
	for _, w := range burnRateWindows {
		v.BurnRates = append(v.BurnRates, s.burnRate(lookbacks[w]))
	}
	n, cur, lo, hi := s.value(window)
	v.Samples = n
	if n > 0 {
		v.HasValue, v.Current, v.Lower, v.Upper = true, cur, lo, hi
	}
	if n == 0 || n < uint64(max(minSamples, 1)) {
		v.State = cxv1.TargetStateInsufficientData
		v.Reason = fmt.Sprintf("%d of the %d samples needed in the window", n, max(minSamples, 1))
		return v, nil
	}
	v.HasBudget, v.BudgetRemaining = true, s.budgetRemaining(window)
	target := decimalString(s.target, s.digits)
	switch {
	case hi < s.target:
		v.State = cxv1.TargetStateBreached
		v.Reason = fmt.Sprintf("%s, and its 95%% interval %s..%s lies wholly below %s", decimalString(cur, s.digits),
			decimalString(lo, s.digits), decimalString(hi, s.digits), target)
	case v.BudgetRemaining < atRiskBelow:
		v.State = cxv1.TargetStateAtRisk
		v.Reason = fmt.Sprintf("%s%% of the error budget remains, below %s%%", decimalString(v.BudgetRemaining, 1), decimalString(atRiskBelow, 1))
	case s.ratio && v.BurnRates[0] > 1:
		v.State = cxv1.TargetStateAtRisk
		v.Reason = fmt.Sprintf("the last hour burns the budget %s times as fast as the window allows", decimalString(v.BurnRates[0], 2))
	default:
		v.State = cxv1.TargetStateMet
		v.Reason = fmt.Sprintf("%s against an objective of %s, with %s%% of the error budget left", decimalString(cur, s.digits), target, decimalString(v.BudgetRemaining, 1))
	}
	return v, nil
}

// budgetShares splits the spent budget of a Journey target among its
// touchpoints, largest first: each touchpoint's bad events as a percent of
// all bad events.
func budgetShares(bad map[string]uint64) []cxv1.BudgetShare {
	var total uint64
	for _, b := range bad {
		total += b
	}
	if total == 0 {
		return nil
	}
	shares := make([]cxv1.BudgetShare, 0, len(bad))
	for tp, b := range bad {
		shares = append(shares, cxv1.BudgetShare{Touchpoint: tp, Percent: percent(100 * float64(b) / float64(total))})
	}
	slices.SortFunc(shares, func(a, b cxv1.BudgetShare) int {
		if d := int64(bad[b.Touchpoint]) - int64(bad[a.Touchpoint]); d != 0 {
			return int(math.Copysign(1, float64(d)))
		}
		return strings.Compare(a.Touchpoint, b.Touchpoint)
	})
	return shares
}
