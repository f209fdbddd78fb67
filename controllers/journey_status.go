package controllers

import (
	"context"
	"fmt"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/slo"
)

// journeyNumbers is what the collector says about a Journey's window.
type journeyNumbers struct {
	// stages[i] combines the touchpoints of stage i: a customer seen at
	// two of them counts once.
	stages []*collectorapi.TouchpointSummary
	// stageNPS[i] is the answer distribution of the Journey's NPS surveys
	// triggered at stage i's touchpoints.
	stageNPS [][]uint64
	// whole combines every touchpoint of the Journey.
	whole *collectorapi.TouchpointSummary
	// nps is the answer distribution of every NPS survey of the Journey.
	nps []uint64
	// badWaits counts, by touchpoint, the waits over the threshold.
	badWaits map[string]uint64
	targets  cxv1.TargetCounts
}

// measureJourney asks the collector for the Journey's numbers, and counts
// the states of the targets set on it, its touchpoints and its surveys. A
// collector that cannot answer, or a read that fails, is recorded in obs
// and yields nil.
func (r *JourneyReconciler) measureJourney(ctx context.Context, jny *cxv1.Journey, obs *readiness) *journeyNumbers {
	m, err := r.measure(ctx, jny)
	if !obs.collectorStep("measure the journey", err) {
		return nil
	}
	return m
}

func (r *JourneyReconciler) measure(ctx context.Context, jny *cxv1.Journey) (*journeyNumbers, error) {
	ns, window := jny.Namespace, jny.Spec.GetWindow()
	all, err := r.Live.all(ctx, ns, window, nil)
	if err != nil {
		return nil, err
	}
	m := &journeyNumbers{nps: make([]uint64, 11), badWaits: map[string]uint64{}}
	for _, tp := range journeyTouchpoints(jny) {
		if s := all.Touchpoints[tp]; s != nil && s.AssessedWaits > s.CompliantWaits {
			m.badWaits[tp] = s.AssessedWaits - s.CompliantWaits
		}
	}
	if m.whole, err = r.Live.touchpoints(ctx, ns, window, journeyTouchpoints(jny)); err != nil {
		return nil, err
	}
	surveys := make([]cxv1.Survey, 0, len(jny.Spec.Surveys))
	for _, name := range jny.Spec.Surveys {
		var s cxv1.Survey
		if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			return nil, fmt.Errorf("get survey %s/%s: %w", ns, name, err)
		}
		if s.Spec.Type != cxv1.SurveyTypeNPS {
			continue
		}
		surveys = append(surveys, s)
		if sum := all.Surveys[name]; sum != nil {
			addCounts(m.nps, sum.Distribution)
		}
	}
	for _, stage := range jny.Spec.Stages {
		sum, err := r.Live.touchpoints(ctx, ns, window, stage.Touchpoints)
		if err != nil {
			return nil, err
		}
		m.stages = append(m.stages, sum)
		counts := make([]uint64, 11)
		for _, s := range surveys {
			if s.Spec.Trigger == nil || !slices.ContainsFunc(s.Spec.Trigger.Touchpoints, func(tp string) bool {
				return slices.Contains(stage.Touchpoints, tp)
			}) {
				continue
			}
			if sum := all.Surveys[s.Name]; sum != nil {
				addCounts(counts, sum.Distribution)
			}
		}
		m.stageNPS = append(m.stageNPS, counts)
	}
	m.targets, err = r.countTargets(ctx, jny)
	return m, err
}

// countTargets counts, by state, the CXTargets whose subject is the
// Journey or one of its touchpoints or surveys.
func (r *JourneyReconciler) countTargets(ctx context.Context, jny *cxv1.Journey) (cxv1.TargetCounts, error) {
	keys := []string{subjectKey("Journey", jny.Name)}
	for _, tp := range journeyTouchpoints(jny) {
		keys = append(keys, subjectKey("Touchpoint", tp))
	}
	for _, s := range jny.Spec.Surveys {
		keys = append(keys, subjectKey("Survey", s))
	}
	var counts cxv1.TargetCounts
	for _, key := range keys {
		var list cxv1.CXTargetList
		if err := r.List(ctx, &list, client.InNamespace(jny.Namespace), client.MatchingFields{targetSubjectIndex: key}); err != nil {
			return counts, fmt.Errorf("list targets of %s: %w", key, err)
		}
		for _, t := range list.Items {
			switch t.Status.State {
			case cxv1.TargetStateMet:
				counts.Met++
			case cxv1.TargetStateAtRisk:
				counts.AtRisk++
			case cxv1.TargetStateBreached:
				counts.Breached++
			}
		}
	}
	return counts, nil
}

func addCounts(into, from []uint64) {
	for i := range min(len(into), len(from)) {
		into[i] += from[i]
	}
}

// setJourneyStatus writes the whole status obs implies: conditions,
// observedGeneration and the collector's numbers; with no numbers they are
// kept when obs.stale says so (the collector cannot answer; the Stale
// condition marks them) and cleared otherwise.
func setJourneyStatus(jny *cxv1.Journey, obs journeyObservation) {
	setReadinessConditions(&jny.Status.Conditions, jny.Generation, obs.readiness)
	setStaleCondition(&jny.Status.Conditions, obs.stale)
	m := obs.numbers
	jny.Status.ObservedGeneration = jny.Generation
	if m == nil && obs.stale.keep {
		return
	}
	jny.Status.Stages, jny.Status.NPS, jny.Status.WaitCompliance, jny.Status.Targets = nil, "", "", nil
	jny.Status.WaitBudgetSpentBy = nil
	if m == nil {
		return
	}
	for i, stage := range jny.Spec.Stages {
		sum := m.stages[i]
		st := cxv1.JourneyStageStatus{Name: stage.Name, Interactions: int64(sum.Interactions), Customers: int64(sum.Customers)}
		if sum.WaitCompliance != nil {
			st.WaitCompliance = percent(*sum.WaitCompliance)
		}
		st.Score = npsText(m.stageNPS[i])
		// Conversion: of the customers seen at the stage before, how many
		// (as a share) were seen here. Distinct counts are estimates
		// (HyperLogLog), so it can exceed 100 by a hair; it is shown as
		// counted.
		if i > 0 {
			if prev := m.stages[i-1].Customers; prev > 0 {
				st.Conversion = percent(100 * float64(sum.Customers) / float64(prev))
			}
		}
		jny.Status.Stages = append(jny.Status.Stages, st)
	}
	if m.whole.WaitCompliance != nil {
		jny.Status.WaitCompliance = percent(*m.whole.WaitCompliance)
	}
	jny.Status.NPS = npsText(m.nps)
	jny.Status.WaitBudgetSpentBy = slo.BudgetShares(m.badWaits)
	targets := m.targets
	jny.Status.Targets = &targets
}

// npsText is the NPS of a distribution, or "" when it has no answers.
func npsText(counts []uint64) string {
	r, err := score.Compute(score.NPS, counts)
	if err != nil || r.N == 0 {
		return ""
	}
	return slo.Decimal(r.Value, 1)
}
