package slo

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/promrules"
)

func objective(t *testing.T, obj cxv1.Objective) Objective {
	t.Helper()
	o, err := FromSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

var q = resource.MustParse

var (
	wait95  = cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: q("95")}}
	fcr100  = cxv1.Objective{FirstContactResolution: &cxv1.PercentObjective{Min: q("100")}}
	rate20  = cxv1.Objective{ResponseRate: &cxv1.PercentObjective{Min: q("20")}}
	nps40   = cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}}
	csat80  = cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: q("80")}}
	csat100 = cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: q("100")}}
	ces5    = cxv1.Objective{CES: &cxv1.CESObjective{Min: q("5")}}
	ces7    = cxv1.Objective{CES: &cxv1.CESObjective{Min: q("7")}}
)

// npsCounts is a distribution with p promoters (10), a passives (8) and d
// detractors (0).
func npsCounts(p, a, d uint64) Counts {
	c := Counts{Distribution: make([]uint64, 11)}
	c.Distribution[10], c.Distribution[8], c.Distribution[0] = p, a, d
	return c
}

func TestFromSpec(t *testing.T) {
	for _, tc := range []struct {
		obj        cxv1.Objective
		kind       Kind
		target     float64
		text       string
		surveyType cxv1.SurveyType
		onSurveys  bool
	}{
		{nps40, NPS, 40, ">= 40", cxv1.SurveyTypeNPS, true},
		{cxv1.Objective{NPS: &cxv1.NPSObjective{Min: -10}}, NPS, -10, ">= -10", cxv1.SurveyTypeNPS, true},
		{cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: q("85")}}, CSAT, 85, ">= 85%", cxv1.SurveyTypeCSAT, true},
		{cxv1.Objective{CES: &cxv1.CESObjective{Min: q("5.5")}}, CES, 5.5, ">= 5.5", cxv1.SurveyTypeCES, true},
		{cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Threshold: "2m", Percent: q("95")}}, WaitTime, 95, "95% <= 2m", "", false},
		{cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: q("99.5")}}, WaitTime, 99.5, "99.5% <= threshold", "", false},
		{rate20, ResponseRate, 20, ">= 20%", "", true},
		{cxv1.Objective{FirstContactResolution: &cxv1.PercentObjective{Min: q("70")}}, FirstContactResolution, 70, ">= 70%", "", false},
	} {
		o := objective(t, tc.obj)
		if o.Kind != tc.kind || o.Target != tc.target || o.Text() != tc.text || o.SurveyType() != tc.surveyType || o.OnSurveys() != tc.onSurveys {
			t.Errorf("%s: kind %s, target %v, text %q, survey type %q, on surveys %v; want %s, %v, %q, %q, %v",
				tc.kind, o.Kind, o.Target, o.Text(), o.SurveyType(), o.OnSurveys(), tc.kind, tc.target, tc.text, tc.surveyType, tc.onSurveys)
		}
	}
	if _, err := FromSpec(cxv1.Objective{}); err != ErrNoObjective {
		t.Errorf("no objective: %v", err)
	}
}

func TestEvaluate(t *testing.T) {
	hour := func(c Counts) map[cxv1.Duration]Counts { return map[cxv1.Duration]Counts{"1h": c} }
	days := func(day, three Counts) map[cxv1.Duration]Counts {
		return map[cxv1.Duration]Counts{"1d": day, "3d": three}
	}

	for _, tc := range []struct {
		name      string
		obj       cxv1.Objective
		window    Counts
		lookbacks map[cxv1.Duration]Counts
		state     cxv1.TargetState
		current   string // "" when there is none
		budget    string // "" when there is none
		burns     string // "window=rate ..." as status shows them
	}{
		// 10 bad of 1,000 against a budget of 5% x 1,000 = 50: 80% left;
		// the last hour's 1 bad in 100 burns 0.01 / 0.05 = 0.2.
		{"ratio met", wait95, Ratio(990, 1000), hour(Ratio(99, 100)), cxv1.TargetStateMet, "99", "80", "1h=0.2 6h=0 1d=0 3d=0"},
		// 38 bad of a budget of 50: 24% left, under 25%.
		{"ratio at risk by budget", wait95, Ratio(962, 1000), nil, cxv1.TargetStateAtRisk, "96.2", "24", "1h=0 6h=0 1d=0 3d=0"},
		// The last hour's 10% bad burns 0.1 / 0.05 = 2 times too fast.
		{"ratio at risk by the 1h burn rate", wait95, Ratio(990, 1000), hour(Ratio(90, 100)), cxv1.TargetStateAtRisk, "99", "80", "1h=2 6h=0 1d=0 3d=0"},
		// 80% with a Wilson upper bound of ~82.3% lies wholly below 95%;
		// 200 bad spend the budget of 50 four times: -300%.
		{"ratio breached", wait95, Ratio(800, 1000), nil, cxv1.TargetStateBreached, "80", "-300", "1h=0 6h=0 1d=0 3d=0"},
		// 10 samples of the default 30: no verdict, no budget.
		{"ratio with too few samples", wait95, Ratio(0, 10), nil, cxv1.TargetStateInsufficientData, "0", "", "1h=0 6h=0 1d=0 3d=0"},
		{"no samples at all", wait95, Ratio(0, 0), nil, cxv1.TargetStateInsufficientData, "", "", "1h=0 6h=0 1d=0 3d=0"},
		// 100% first-contact resolution: no budget, so no burn rate; 100
		// of 100 resolved has an interval reaching 100 (Met) with 0% of
		// no budget left, under 25%.
		{"ratio at 100% with no miss", fcr100, Ratio(100, 100), nil, cxv1.TargetStateAtRisk, "100", "0", ""},
		// One miss in 100: Wilson's upper bound 99.8% < 100: Breached,
		// one bad event per 100 spent of no budget: -1%.
		{"ratio at 100% with one miss", fcr100, Ratio(99, 100), nil, cxv1.TargetStateBreached, "99", "-1", ""},
		// Response rate 25 of 100 invitations against 20%: 75 bad of a
		// budget of 80: 6.25% left (shown "6.2", half to even); burn rates over 1d and 3d only:
		// 1d 30 answered of 50, 0.4 / 0.8 = 0.5; 3d 25 of 100, 0.75 / 0.8.
		{"response rate", rate20, Ratio(25, 100), days(Ratio(30, 50), Ratio(25, 100)), cxv1.TargetStateAtRisk, "25", "6.2", "1d=0.5 3d=0.94"},
		// NPS 85 from 90/5/5: x = (100 x 85 - 40 x 100) / 140 = 32.14
		// further detractors, 32.1% of the answers; the hour burns
		// (100 - 85) / (100 - 40) = 0.25.
		{"nps met", nps40, npsCounts(90, 5, 5), hour(npsCounts(90, 5, 5)), cxv1.TargetStateMet, "85", "32.1", "1h=0.25 6h=0 1d=0 3d=0"},
		// NPS 70 from 80/10/10: x = (7000 - 4000) / 140 = 21.4%.
		{"nps at risk", nps40, npsCounts(80, 10, 10), nil, cxv1.TargetStateAtRisk, "70", "21.4", "1h=0 6h=0 1d=0 3d=0"},
		// NPS -40 from 10/40/50, upper bound ~-27: x = (-4000 - 4000) / 140.
		{"nps breached", nps40, npsCounts(10, 40, 50), nil, cxv1.TargetStateBreached, "-40", "-57.1", "1h=0 6h=0 1d=0 3d=0"},
		// A score's burn rate does not gate AtRisk: the hour's NPS of -40
		// burns 140 / 60 = 2.33 while the window is Met.
		{"nps with a bad hour", nps40, npsCounts(90, 5, 5), hour(npsCounts(10, 40, 50)), cxv1.TargetStateMet, "85", "32.1", "1h=2.33 6h=0 1d=0 3d=0"},
		// CSAT 90% with minimum 80: x = 100 x 90 / 80 - 100 = 12.5.
		{"csat at risk", csat80, Counts{Distribution: []uint64{0, 5, 0, 5, 45, 45}}, nil, cxv1.TargetStateAtRisk, "90", "12.5", "1h=0 6h=0 1d=0 3d=0"},
		// CSAT 100 of 100 against 100: x = 100 - 100 = 0 further
		// unsatisfied answers; no burn rate.
		{"csat at 100", csat100, Counts{Distribution: []uint64{0, 0, 0, 0, 50, 50}}, nil, cxv1.TargetStateAtRisk, "100", "0", ""},
		// CES mean 6 from 50 sevens and 50 fives, minimum 5:
		// x = (600 - 500) / 4 = 25 answers of 1, 25%: not under 25.
		{"ces met", ces5, Counts{Distribution: []uint64{0, 0, 0, 0, 0, 50, 0, 50}}, nil, cxv1.TargetStateMet, "6", "25", "1h=0 6h=0 1d=0 3d=0"},
		// CES 7 of all 40 sevens: the interval of a constant sample is the
		// point 7 (Met); x = (280 - 280) / 6 = 0.
		{"ces at 7", ces7, Counts{Distribution: []uint64{0, 0, 0, 0, 0, 0, 0, 40}}, nil, cxv1.TargetStateAtRisk, "7", "0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := objective(t, tc.obj)
			v := o.Evaluate(30, 25, tc.window, tc.lookbacks)
			if v.State != tc.state {
				t.Errorf("state = %s (%s), want %s", v.State, v.Reason, tc.state)
			}
			if got := o.Format(v.Current); v.HasValue && got != tc.current || !v.HasValue && tc.current != "" {
				t.Errorf("current = %s (has %v), want %q", got, v.HasValue, tc.current)
			}
			if got := Decimal(v.BudgetRemaining, 1); v.HasBudget != (tc.budget != "") || v.HasBudget && got != tc.budget {
				t.Errorf("budget = %s (has %v), want %q", got, v.HasBudget, tc.budget)
			}
			var burns []string
			for _, b := range v.BurnRates {
				burns = append(burns, string(b.Window)+"="+Decimal(b.Rate, 2))
			}
			if got := strings.Join(burns, " "); got != tc.burns {
				t.Errorf("burn rates %q, want %q", got, tc.burns)
			}
		})
	}
}

func TestCount(t *testing.T) {
	tallies := Tallies{
		Touchpoint: func(name string) (TouchpointCounts, bool) {
			switch name {
			case "chat":
				return TouchpointCounts{AssessedWaits: 100, CompliantWaits: 90, ResolvedKnown: 50, Resolved: 40}, true
			case "phone":
				return TouchpointCounts{AssessedWaits: 10, CompliantWaits: 10, ResolvedKnown: 20, Resolved: 5}, true
			}
			return TouchpointCounts{}, false
		},
		Survey: func(name string) (SurveyCounts, bool) {
			switch name {
			case "nps":
				return SurveyCounts{Distribution: []uint64{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 3}, Responses: 6, InvitationsSent: 20}, true
			case "nps-web":
				// More answers than invitations: answers posted without
				// one count up to the invitations only.
				return SurveyCounts{Distribution: []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9}, Responses: 9, InvitationsSent: 4}, true
			}
			return SurveyCounts{}, false
		},
	}
	both := Scope{Touchpoints: []string{"chat", "phone", "new"}, Surveys: []string{"nps", "nps-web"}}
	if both.KnownTo(tallies) {
		t.Error(`a scope with "new" is known to tallies without it`)
	}
	for _, tc := range []struct {
		obj         cxv1.Objective
		good, total uint64
		bad         map[string]uint64
		dist        []uint64
	}{
		{wait95, 100, 110, map[string]uint64{"chat": 10}, nil},
		{fcr100, 45, 70, map[string]uint64{"chat": 10, "phone": 15}, nil},
		{rate20, 6 + 4, 20 + 4, nil, nil},
		{nps40, 0, 0, nil, []uint64{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 12}},
	} {
		o := objective(t, tc.obj)
		c := o.Count(both, tallies)
		if c.Good != tc.good || c.Total != tc.total {
			t.Errorf("%s: %d of %d, want %d of %d", o.Kind, c.Good, c.Total, tc.good, tc.total)
		}
		if len(c.BadByTouchpoint) != len(tc.bad) {
			t.Errorf("%s: bad by touchpoint %v, want %v", o.Kind, c.BadByTouchpoint, tc.bad)
		}
		for k, v := range tc.bad {
			if c.BadByTouchpoint[k] != v {
				t.Errorf("%s: bad by touchpoint %v, want %v", o.Kind, c.BadByTouchpoint, tc.bad)
			}
		}
		for i, v := range tc.dist {
			if c.Distribution[i] != v {
				t.Errorf("%s: distribution %v, want %v", o.Kind, c.Distribution, tc.dist)
				break
			}
		}
	}
}

func TestQueryWindow(t *testing.T) {
	now := time.Date(2026, 11, 28, 14, 36, 30, 0, time.UTC)
	for _, tc := range []struct {
		obj  cxv1.Objective
		w    cxv1.Duration
		want cxv1.Duration
	}{
		{wait95, "28d", "28d"},
		{nps40, "1h", "1h"},
		// From midnight of Oct 31 to the collector's end, 14:37 today.
		{rate20, "28d", "28d14h37m"},
		// 1d reaches back to yesterday's midnight.
		{rate20, "1d", "1d14h37m"},
		{rate20, "3d", "3d14h37m"},
		// Under a day, still today's midnight.
		{rate20, "6h", "14h37m"},
	} {
		o := objective(t, tc.obj)
		got, err := o.QueryWindow(tc.w, now)
		if err != nil || got != tc.want {
			t.Errorf("%s over %s: %q, %v; want %q", o.Kind, tc.w, got, err, tc.want)
		}
	}
	if got := objective(t, rate20).BurnRateWindows(); len(got) != 2 || got[0] != "1d" || got[1] != "3d" {
		t.Errorf("response rate burn-rate windows %v, want 1d and 3d", got)
	}
}

func TestAlertRules(t *testing.T) {
	labels := RuleLabels{Namespace: "shop", Name: "t", SubjectKind: "Survey"}
	surveys := Scope{Surveys: []string{"s"}}
	for _, tc := range []struct {
		obj    cxv1.Objective
		window time.Duration
		reason string
		msg    string
	}{
		{nps40, 28 * 24 * time.Hour, "", ""},
		{nps40, 6 * time.Hour, "", ""},
		{nps40, time.Hour, cxv1.WindowTooShortReason, "spec.window 1h is shorter than the 6h lookback"},
		{csat100, 28 * 24 * time.Hour, cxv1.NoErrorBudgetReason, "spec.objective.csat requires 100, the best value there is"},
		{ces7, 28 * 24 * time.Hour, cxv1.NoErrorBudgetReason, "spec.objective.ces requires 7, the best value there is"},
		{cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 100}}, 28 * 24 * time.Hour, cxv1.NoErrorBudgetReason, "spec.objective.nps requires 100"},
		{rate20, 28 * 24 * time.Hour, cxv1.NoMetricReason, "spec.objective.responseRate has no burn-rate alerts"},
	} {
		o := objective(t, tc.obj)
		target, why := o.AlertRules(tc.window, surveys, labels)
		switch {
		case tc.reason == "" && why != nil:
			t.Errorf("%s over %s: %+v, want rules", o.Kind, tc.window, why)
		case tc.reason == "":
			if _, err := promrules.Generate(target); err != nil {
				t.Errorf("%s over %s: the rule input is refused: %v", o.Kind, tc.window, err)
			}
		case why == nil || why.Reason != tc.reason || !strings.Contains(why.Message, tc.msg):
			t.Errorf("%s over %s: %+v, want %s saying %q", o.Kind, tc.window, why, tc.reason, tc.msg)
		}
	}
}

func TestBudgetShares(t *testing.T) {
	got := BudgetShares(map[string]uint64{"chat": 30, "phone": 10, "web": 0})
	want := []cxv1.BudgetShare{{Touchpoint: "chat", Percent: "75"}, {Touchpoint: "phone", Percent: "25"}, {Touchpoint: "web", Percent: "0"}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("share %d = %v, want %v", i, got[i], want[i])
		}
	}
	if BudgetShares(map[string]uint64{"chat": 0}) != nil {
		t.Error("no bad events should attribute nothing")
	}
}
