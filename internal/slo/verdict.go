package slo

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/score"
)

// Value is the objective's value over counts, with its 95% interval and the
// number of samples it rests on; ok is false with no samples.
func (o Objective) Value(c Counts) (n uint64, v, lo, hi float64, ok bool) {
	if o.kind().ratio {
		if c.Total == 0 {
			return 0, 0, 0, 0, false
		}
		l, u := score.Wilson(c.Good, c.Total, score.Z95)
		return c.Total, 100 * float64(c.Good) / float64(c.Total), 100 * l, 100 * u, true
	}
	r, err := score.Compute(o.kind().score, c.Distribution)
	if err != nil || r.N == 0 {
		return 0, 0, 0, 0, false
	}
	return r.N, r.Value, r.Lower, r.Upper, true
}

// BurnRate is how fast a lookback spends the budget: its shortfall from the
// best value over the shortfall the objective allows. For a ratio it is the
// bad fraction over (1 - p), the SRE workbook's definition; for a score it
// is the same quantity on the score's scale, (best - value) / (best -
// target), so 1 means the lookback scored exactly the objective and 14.4
// means it fell short 14.4 times as fast as the window allows. A lookback
// with no samples burns nothing. ok is false for an objective at the best
// value (AtBest), which allows no shortfall: its burn rate is undefined.
func (o Objective) BurnRate(c Counts) (rate float64, ok bool) {
	if o.AtBest() {
		return 0, false
	}
	_, v, _, _, has := o.Value(c)
	if !has {
		return 0, true
	}
	best := o.kind().best
	return (best - v) / (best - o.Target), true
}

// BudgetRemaining is the error budget left over counts, in percent; ok is
// false with no samples.
//
// For a ratio objective with target p over n events of which b are bad,
// the budget is (1 - p) n bad events and the remaining share is
// 1 - b / ((1 - p) n). A ratio objective of 100% has no budget: as for
// scores, what remains is then the further bad events the window absorbs,
// none, less those already spent, -100 b / n.
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
func (o Objective) BudgetRemaining(c Counts) (float64, bool) {
	k := o.kind()
	if k.ratio {
		if c.Total == 0 {
			return 0, false
		}
		bad, n := float64(c.Total-c.Good), float64(c.Total)
		if o.AtBest() {
			return -100 * bad / n, true
		}
		return 100 * (1 - bad/((1-o.Target/100)*n)), true
	}
	r, err := score.Compute(k.score, c.Distribution)
	if err != nil || r.N == 0 {
		return 0, false
	}
	x, always := k.absorb(r, o.Target)
	if always {
		// Every answer meets the objective (NPS -100, CSAT 0, CES 1):
		// the budget is never touched.
		return 100, true
	}
	return 100 * x / float64(r.N), true
}

// BurnRate is the burn rate over one lookback.
type BurnRate struct {
	Window cxv1.Duration
	Rate   float64
}

// Verdict is the evaluation of a target over its window.
type Verdict struct {
	State   cxv1.TargetState
	Samples uint64
	// Current, Lower and Upper are the objective's value and its 95%
	// interval; unset (HasValue false) with no samples.
	HasValue              bool
	Current, Lower, Upper float64
	// BudgetRemaining is in percent; unset below minSamples.
	HasBudget       bool
	BudgetRemaining float64
	// BurnRates follow BurnRateWindows; none for an objective at its best
	// value.
	BurnRates []BurnRate
	// Reason says, for people, why the state is what it is.
	Reason string
}

// Evaluate judges a target: InsufficientData below minSamples (never
// Breached on too little data); Breached when the whole 95% interval lies
// below the objective; AtRisk when not breached but the budget remaining is
// below atRiskBelow (percent), or the 1h burn rate of a ratio objective is
// above 1; Met otherwise. lookbacks holds the counts of each of the
// objective's BurnRateWindows.
func (o Objective) Evaluate(minSamples int32, atRiskBelow float64, window Counts, lookbacks map[cxv1.Duration]Counts) Verdict {
	var v Verdict
	if !o.AtBest() {
		for _, w := range o.BurnRateWindows() {
			rate, _ := o.BurnRate(lookbacks[w])
			v.BurnRates = append(v.BurnRates, BurnRate{Window: w, Rate: rate})
		}
	}
	n, cur, lo, hi, ok := o.Value(window)
	v.Samples = n
	if ok {
		v.HasValue, v.Current, v.Lower, v.Upper = true, cur, lo, hi
	}
	need := uint64(max(minSamples, 1))
	if n < need {
		v.State = cxv1.TargetStateInsufficientData
		v.Reason = fmt.Sprintf("%d of the %d samples needed in the window", n, need)
		return v
	}
	v.BudgetRemaining, v.HasBudget = o.BudgetRemaining(window)
	target, f := o.Format(o.Target), o.Format
	switch {
	case hi < o.Target:
		v.State = cxv1.TargetStateBreached
		v.Reason = fmt.Sprintf("%s, and its 95%% interval %s..%s lies wholly below %s", f(cur), f(lo), f(hi), target)
	case v.BudgetRemaining < atRiskBelow:
		v.State = cxv1.TargetStateAtRisk
		v.Reason = fmt.Sprintf("%s%% of the error budget remains, below %s%%", Decimal(v.BudgetRemaining, 1), Decimal(atRiskBelow, 1))
	case o.Ratio() && len(v.BurnRates) > 0 && v.BurnRates[0].Window == "1h" && v.BurnRates[0].Rate > 1:
		v.State = cxv1.TargetStateAtRisk
		v.Reason = fmt.Sprintf("the last hour burns the budget %s times as fast as the window allows", Decimal(v.BurnRates[0].Rate, 2))
	default:
		v.State = cxv1.TargetStateMet
		v.Reason = fmt.Sprintf("%s against an objective of %s, with %s%% of the error budget left", f(cur), target, Decimal(v.BudgetRemaining, 1))
	}
	return v
}

// BudgetShares splits the spent budget of a Journey among its touchpoints,
// largest first (then by name): each touchpoint's bad events as a percent
// of all bad events. Nothing is spent, nothing is attributed.
func BudgetShares(bad map[string]uint64) []cxv1.BudgetShare {
	var total uint64
	for _, b := range bad {
		total += b
	}
	if total == 0 {
		return nil
	}
	names := make([]string, 0, len(bad))
	for tp := range bad {
		names = append(names, tp)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(bad[b], bad[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	shares := make([]cxv1.BudgetShare, 0, len(names))
	for _, tp := range names {
		shares = append(shares, cxv1.BudgetShare{Touchpoint: tp, Percent: Decimal(100*float64(bad[tp])/float64(total), 1)})
	}
	return shares
}
