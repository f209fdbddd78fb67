package slo

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/promrules"
)

// RuleLabels is what a target's alerts carry beside its objective.
type RuleLabels struct {
	Namespace, Name string
	// SubjectKind is Journey, Touchpoint or Survey.
	SubjectKind string
	Labels      map[string]string
	RunbookURL  string
}

// Inexpressible says why the generated alert rules cannot express a
// target: Reason is an AlertRules condition reason, Message names the
// field and what the rules lack.
type Inexpressible struct {
	Reason, Message string
}

// AlertRules is the input of the target's alert rules, or why there can be
// none. Rules that cannot be generated never keep a target from being
// measured and judged: status says so on its AlertRules condition.
func (o Objective) AlertRules(window time.Duration, scope Scope, l RuleLabels) (promrules.Target, *Inexpressible) {
	k := o.kind()
	switch {
	case k.rules == "":
		return promrules.Target{}, &Inexpressible{Reason: cxv1.NoMetricReason, Message: fmt.Sprintf(
			"%s has no burn-rate alerts: the collectors export no invitation counter for Prometheus to compute it from; status, events and cxop_target_* metrics still show its verdict", o.Field())}
	case o.AtBest():
		return promrules.Target{}, &Inexpressible{Reason: cxv1.NoErrorBudgetReason, Message: fmt.Sprintf(
			"%s requires %s, the best value there is: that leaves no error budget to burn, so there is no burn rate to alert on; cxop_target_breached still says when it is breached", o.Field(), o.target)}
	case window < promrules.MinWindow:
		return promrules.Target{}, &Inexpressible{Reason: cxv1.WindowTooShortReason, Message: fmt.Sprintf(
			"spec.window %s is shorter than the %s lookback of the slower page alert, so burn-rate alerts cannot be scaled to it; cxop_target_breached still says when it is breached",
			model.Duration(window), model.Duration(promrules.MinWindow))}
	}
	return promrules.Target{
		Namespace: l.Namespace, Name: l.Name, SubjectKind: l.SubjectKind,
		Kind: k.rules, Objective: o.Target,
		Touchpoints: scope.Touchpoints, Surveys: scope.Surveys, Window: window,
		Labels: l.Labels, RunbookURL: l.RunbookURL,
	}, nil
}
