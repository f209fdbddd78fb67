package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// npsCounts is a distribution with p promoters (10), a passives (8) and d
// detractors (0).
func npsCounts(p, a, d uint64) targetCounts {
	c := targetCounts{Distribution: make([]uint64, 11)}
	c.Distribution[10], c.Distribution[8], c.Distribution[0] = p, a, d
	return c
}

func TestEvaluate(t *testing.T) {
	q := resource.MustParse
	wait95 := cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: q("95")}}
	nps40 := cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}}
	csat80 := cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: q("80")}}
	ces5 := cxv1.Objective{CES: &cxv1.CESObjective{Min: q("5")}}
	ratio := func(good, total uint64) targetCounts { return targetCounts{Good: good, Total: total} }
	hour := func(c targetCounts) map[cxv1.Duration]targetCounts { return map[cxv1.Duration]targetCounts{"1h": c} }

	for _, tc := range []struct {
		name      string
		obj       cxv1.Objective
		window    targetCounts
		lookbacks map[cxv1.Duration]targetCounts
		state     cxv1.TargetState
		current   string
		budget    string // "" when there is none
		burn1h    string
	}{
		// 10 bad of 1,000 against a budget of 5% x 1,000 = 50: 80% left;
		// the last hour's 1 bad in 100 burns 0.01 / 0.05 = 0.2.
		{"ratio met", wait95, ratio(990, 1000), hour(ratio(99, 100)), cxv1.TargetStateMet, "99", "80", "0.2"},
		// 38 bad of a budget of 50: 24% left, under 25%.
		{"ratio at risk by budget", wait95, ratio(962, 1000), nil, cxv1.TargetStateAtRisk, "96.2", "24", "0"},
		// The last hour's 10% bad burns 0.1 / 0.05 = 2 times too fast.
		{"ratio at risk by the 1h burn rate", wait95, ratio(990, 1000), hour(ratio(90, 100)), cxv1.TargetStateAtRisk, "99", "80", "2"},
		// 80% with a Wilson upper bound of ~82.3% lies wholly below 95%;
		// 200 bad spend the budget of 50 four times: -300%.
		{"ratio breached", wait95, ratio(800, 1000), nil, cxv1.TargetStateBreached, "80", "-300", "0"},
		// 10 samples of the default 30: no verdict, no budget.
		{"ratio with too few samples", wait95, ratio(0, 10), nil, cxv1.TargetStateInsufficientData, "0", "", "0"},
		{"no samples at all", wait95, ratio(0, 0), nil, cxv1.TargetStateInsufficientData, "", "", "0"},
		// NPS 85 from 90/5/5: x = (100 x 85 - 40 x 100) / 140 = 32.14
		// further detractors, 32.1% of the answers; the hour burns
		// (100 - 85) / (100 - 40) = 0.25.
		{"nps met", nps40, npsCounts(90, 5, 5), hour(npsCounts(90, 5, 5)), cxv1.TargetStateMet, "85", "32.1", "0.25"},
		// NPS 70 from 80/10/10: x = (7000 - 4000) / 140 = 21.4%.
		{"nps at risk", nps40, npsCounts(80, 10, 10), nil, cxv1.TargetStateAtRisk, "70", "21.4", "0"},
		// NPS -40 from 10/40/50, upper bound ~-27: x = (-4000 - 4000) / 140.
		{"nps breached", nps40, npsCounts(10, 40, 50), nil, cxv1.TargetStateBreached, "-40", "-57.1", "0"},
		// CSAT 90% with minimum 80: x = 100 x 90 / 80 - 100 = 12.5.
		{"csat at risk", csat80, targetCounts{Distribution: []uint64{0, 5, 0, 5, 45, 45}}, nil, cxv1.TargetStateAtRisk, "90", "12.5", "0"},
		// CES mean 6 from 50 sevens and 50 fives, minimum 5:
		// x = (600 - 500) / 4 = 25 answers of 1, 25%: not under 25.
		{"ces met", ces5, targetCounts{Distribution: []uint64{0, 0, 0, 0, 0, 50, 0, 50}}, nil, cxv1.TargetStateMet, "6", "25", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := evaluate(tc.obj, 30, 25, tc.window, tc.lookbacks)
			if err != nil {
				t.Fatal(err)
			}
			if v.State != tc.state {
				t.Errorf("state = %s (%s), want %s", v.State, v.Reason, tc.state)
			}
			s, _ := scaleOf(tc.obj)
			if got := decimalString(v.Current, s.digits); v.HasValue && got != tc.current || !v.HasValue && tc.current != "" {
				t.Errorf("current = %s (has %v), want %s", got, v.HasValue, tc.current)
			}
			if got := decimalString(v.BudgetRemaining, 1); v.HasBudget != (tc.budget != "") || v.HasBudget && got != tc.budget {
				t.Errorf("budget = %s (has %v), want %q", got, v.HasBudget, tc.budget)
			}
			if got := decimalString(v.BurnRates[0], 2); got != tc.burn1h {
				t.Errorf("1h burn rate = %s, want %s", got, tc.burn1h)
			}
			if len(v.BurnRates) != 4 {
				t.Errorf("%d burn rates, want 4 (1h, 6h, 1d, 3d)", len(v.BurnRates))
			}
		})
	}
}

func TestBudgetShares(t *testing.T) {
	got := budgetShares(map[string]uint64{"chat": 30, "phone": 10, "web": 0})
	want := []cxv1.BudgetShare{{Touchpoint: "chat", Percent: "75"}, {Touchpoint: "phone", Percent: "25"}, {Touchpoint: "web", Percent: "0"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("share %d = %v, want %v", i, got[i], want[i])
		}
	}
	if budgetShares(map[string]uint64{"chat": 0}) != nil {
		t.Error("no bad events should attribute nothing")
	}
}
