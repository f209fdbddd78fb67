// Package promrules generates the Prometheus rules of a CXTarget: recording
// rules for its burn rate over the lookbacks of the multi-window,
// multi-burn-rate alerts of the Google SRE workbook, and the alerts
// themselves, scaled to the target's window. The rules read the collectors'
// metrics, which the scrape labels with the collector's namespace.
package promrules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Kind is what an objective measures.
type Kind string

const (
	WaitTime               Kind = "waitTime"
	FirstContactResolution Kind = "firstContactResolution"
	NPS                    Kind = "nps"
	CSAT                   Kind = "csat"
	CES                    Kind = "ces"
)

// Target is one CXTarget, resolved to what its rules count.
type Target struct {
	Namespace, Name string
	// SubjectKind is Journey, Touchpoint or Survey, for labels.
	SubjectKind string
	Kind        Kind
	// Objective is the value required: a percent for waitTime, csat and
	// firstContactResolution, the NPS minimum, or the CES mean.
	Objective float64
	// Touchpoints (ratio objectives) or Surveys (score objectives) that
	// are counted.
	Touchpoints, Surveys []string
	Window               time.Duration
	Labels               map[string]string
	RunbookURL           string
}

// Groups is a Prometheus rule file, and the spec of a PrometheusRule.
type Groups struct {
	Groups []Group `json:"groups"`
}

// Group is one rule group.
type Group struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is a recording or alerting rule.
type Rule struct {
	Record      string            `json:"record,omitempty"`
	Alert       string            `json:"alert,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AlertName is the name of both burn-rate alerts; severity tells them apart.
const AlertName = "CXTargetErrorBudgetBurn"

// alertPair is one row of the SRE workbook's table: an alert fires when
// both lookbacks burn faster than the rate that would spend budgetShare of
// the window's budget within the long lookback.
type alertPair struct {
	severity    string
	long, short time.Duration
	budgetShare float64
}

// The workbook's table for a 30-day window: 14.4 over 1h spends 2% of the
// budget, 6 over 6h 5%, 3 over 1d and 1 over 3d 10% each.
var pairs = []alertPair{
	{"page", time.Hour, 5 * time.Minute, 0.02},
	{"page", 6 * time.Hour, 30 * time.Minute, 0.05},
	{"ticket", 24 * time.Hour, 2 * time.Hour, 0.10},
	{"ticket", 72 * time.Hour, 6 * time.Hour, 0.10},
}

// BurnRateThreshold is the burn rate of an alert pair for a window: the
// rate that spends budgetShare of the window's budget within the long
// lookback, budgetShare × window / long. For 30 days it gives the
// workbook's 14.4, 6, 3 and 1; for 28 days 13.44, 5.6, 2.8 and 0.93.
func BurnRateThreshold(window, long time.Duration, budgetShare float64) float64 {
	return budgetShare * float64(window) / float64(long)
}

// MinWindow is the shortest target window the rules can express: the
// slower page alert reads a 6h lookback, and its threshold, a share of the
// window's budget spent within 6h, means nothing for a window shorter than
// its own lookback.
const MinWindow = 6 * time.Hour

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (t Target) check() error {
	switch {
	case !nameRE.MatchString(t.Namespace):
		return fmt.Errorf("namespace: %q is not a DNS label", t.Namespace)
	case t.Name == "" || strings.ContainsAny(t.Name, "\"\\\n"):
		return fmt.Errorf("name: %q is not a Kubernetes name", t.Name)
	case t.Window < MinWindow:
		return fmt.Errorf("window: %s is shorter than the %s the slowest alert needs", model.Duration(t.Window), model.Duration(MinWindow))
	}
	switch t.Kind {
	case WaitTime, FirstContactResolution, CSAT:
		if t.Objective <= 0 || t.Objective >= 100 {
			return fmt.Errorf("objective: %v%% must be between 0 and 100, exclusive", t.Objective)
		}
	case NPS:
		if t.Objective < -100 || t.Objective >= 100 {
			return fmt.Errorf("objective: NPS %v must be at least -100 and below 100", t.Objective)
		}
	case CES:
		if t.Objective < 1 || t.Objective >= 7 {
			return fmt.Errorf("objective: CES %v must be at least 1 and below 7", t.Objective)
		}
	default:
		return fmt.Errorf("kind: %q has no Prometheus rules", t.Kind)
	}
	names := t.Touchpoints
	if t.Kind == NPS || t.Kind == CSAT || t.Kind == CES {
		names = t.Surveys
	}
	if len(names) == 0 {
		return errors.New("the target counts no touchpoint or survey")
	}
	for _, n := range names {
		if !nameRE.MatchString(n) {
			return fmt.Errorf("%q is not a touchpoint or survey name", n)
		}
	}
	return nil
}

// lookbacks are every window the alerts read.
func lookbacks() []time.Duration {
	var out []time.Duration
	for _, p := range pairs {
		out = append(out, p.long, p.short)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// RecordName is the recorded burn rate of every CXTarget over lookback w.
func RecordName(w time.Duration) string {
	return "cxop:target_burn_rate:" + model.Duration(w).String()
}

// Generate returns the rule groups of one target.
func Generate(t Target) (Groups, error) {
	if err := t.check(); err != nil {
		return Groups{}, err
	}
	id := map[string]string{"namespace": t.Namespace, "cxtarget": t.Name, "subject_kind": t.SubjectKind}
	sel := fmt.Sprintf(`namespace="%s",cxtarget="%s"`, t.Namespace, t.Name)

	rec := Group{Name: fmt.Sprintf("cxop-%s-%s-burn-rates", t.Namespace, t.Name)}
	for _, w := range lookbacks() {
		rec.Rules = append(rec.Rules, Rule{Record: RecordName(w), Expr: t.burnRate(model.Duration(w).String()), Labels: id})
	}

	alerts := Group{Name: fmt.Sprintf("cxop-%s-%s-alerts", t.Namespace, t.Name)}
	for _, severity := range []string{"page", "ticket"} {
		var conds []string
		for _, p := range pairs {
			if p.severity != severity {
				continue
			}
			th := strconv.FormatFloat(BurnRateThreshold(t.Window, p.long, p.budgetShare), 'g', 6, 64)
			conds = append(conds, fmt.Sprintf("(%s{%s} > %s and %s{%s} > %s)",
				RecordName(p.long), sel, th, RecordName(p.short), sel, th))
		}
		labels := map[string]string{"severity": severity}
		for k, v := range t.Labels {
			labels[k] = v
		}
		for k, v := range id {
			labels[k] = v
		}
		ann := map[string]string{
			"summary": fmt.Sprintf("CXTarget %s/%s is spending its %s error budget too fast", t.Namespace, t.Name, model.Duration(t.Window)),
			"description": fmt.Sprintf("The %s objective of CXTarget %s/%s burns its error budget faster than its %s window allows (severity %s). kubectl -n %s get cxtarget %s -o yaml shows the current value, budget and burn rates.",
				t.Kind, t.Namespace, t.Name, model.Duration(t.Window), severity, t.Namespace, t.Name),
		}
		if t.RunbookURL != "" {
			ann["runbook_url"] = t.RunbookURL
		}
		alerts.Rules = append(alerts.Rules, Rule{
			Alert: AlertName, Expr: strings.Join(conds, " or "), Labels: labels, Annotations: ann,
			// The short lookback already debounces; a pending period would
			// only delay the page.
		})
	}
	return Groups{Groups: []Group{rec, alerts}}, nil
}

// burnRate is the PromQL burn rate of the target over lookback w: the
// shortfall of the lookback's value from the best value over the shortfall
// the objective allows, (best - value) / (best - objective), which for a
// ratio is the bad fraction over (1 - p). With no traffic it is 0 (or, for
// CES, no sample), never NaN: every denominator is clamped to at least 1.
func (t Target) burnRate(w string) string {
	inc := func(metric, matchers string) string {
		return fmt.Sprintf(`(sum(increase(%s{namespace="%s",%s}[%s])) or vector(0))`, metric, t.Namespace, matchers, w)
	}
	oneOf := func(label string, names []string) string {
		return fmt.Sprintf(`%s=~"%s"`, label, strings.Join(names, "|"))
	}
	allowed := func(best float64) string { return strconv.FormatFloat(best-t.Objective, 'g', 10, 64) }
	switch t.Kind {
	case WaitTime:
		tps := oneOf("touchpoint", t.Touchpoints)
		assessed, compliant := inc("cxop_collector_waits_assessed_total", tps), inc("cxop_collector_waits_compliant_total", tps)
		return fmt.Sprintf("100 * (%s - %s) / clamp_min(%s, 1) / %s", assessed, compliant, assessed, allowed(100))
	case FirstContactResolution:
		tps := oneOf("touchpoint", t.Touchpoints)
		return fmt.Sprintf("100 * %s / clamp_min(%s, 1) / %s",
			inc("cxop_collector_resolutions_total", tps+`,resolved="false"`), inc("cxop_collector_resolutions_total", tps), allowed(100))
	case NPS:
		svs := oneOf("survey", t.Surveys)
		all := inc("cxop_collector_responses_total", svs)
		// 100 - NPS = 100 (N - P + D) / N.
		return fmt.Sprintf("100 * (%s - %s + %s) / clamp_min(%s, 1) / %s", all,
			inc("cxop_collector_responses_total", svs+`,category="promoter"`),
			inc("cxop_collector_responses_total", svs+`,category="detractor"`), all, allowed(100))
	case CSAT:
		svs := oneOf("survey", t.Surveys)
		all := inc("cxop_collector_responses_total", svs)
		return fmt.Sprintf("100 * (%s - %s) / clamp_min(%s, 1) / %s", all,
			inc("cxop_collector_responses_total", svs+`,category="satisfied"`), all, allowed(100))
	case CES:
		svs := oneOf("survey", t.Surveys)
		all := inc("cxop_collector_responses_total", svs)
		// The mean of no answers is not 0: without answers the lookback
		// has no burn rate at all.
		return fmt.Sprintf("(7 - %s / clamp_min(%s, 1)) / %s and on() (%s > 0)",
			inc("cxop_collector_response_score_sum", svs), all, allowed(7), all)
	}
	return "vector(0)"
}
