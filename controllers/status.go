package controllers

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// reconcileAction is the action recorded on events this package emits.
const reconcileAction = "Reconcile"

// missingRef is a referenced object that does not exist.
type missingRef struct {
	Kind string
	Name string
}

// readiness is what one reconcile concluded about an object, before it is
// turned into conditions. The zero value means "ready".
type readiness struct {
	// invalid is set when the spec cannot be used until it is changed.
	invalid error
	// missing lists references that do not resolve, in spec order.
	missing []missingRef
	// mismatch is set when references resolve but do not fit together
	// (CXTarget only); the object waits for either side to change.
	mismatch string
	// failures are the steps of the reconcile that failed, in the order
	// they ran (see failure).
	failures []failure
	// retry holds errors of steps that lost a race with another writer:
	// retried at once, with no mark on status.
	retry []error
	// collectorReason and collector are set when the numbers status shows
	// could not be read from the namespace's collector.
	collectorReason, collector string
}

// problem is one reason for Ready=False, in the order Ready names them.
type problem struct {
	reason, message string
	// stalled: nothing changes until someone acts (Stalled=True);
	// otherwise the manager waits for it to clear (Reconciling=True).
	stalled bool
	// step: it comes from a failed step, whose message Ready carries even
	// when another problem comes first.
	step bool
}

// problems lists what keeps the object from Ready, most important first:
// an unusable spec, then the steps that cannot succeed until someone acts,
// then the waits (references not there yet, an objective that does not fit
// its subject, steps that failed in passing), and last the collector's
// numbers, which only status displays.
func (r readiness) problems() []problem {
	var ps []problem
	if r.invalid != nil {
		ps = append(ps, problem{reason: cxv1.InvalidSpecReason, message: r.invalid.Error(), stalled: true})
	}
	for _, f := range r.failures {
		if f.stalled {
			ps = append(ps, problem{reason: f.reason, message: f.message, stalled: true, step: true})
		}
	}
	if len(r.missing) > 0 {
		ps = append(ps, problem{reason: notFoundReason(r.missing[0].Kind), message: missingMessage(r.missing)})
	}
	if r.mismatch != "" {
		ps = append(ps, problem{reason: cxv1.ObjectiveMismatchReason, message: r.mismatch})
	}
	for _, f := range r.failures {
		if !f.stalled {
			ps = append(ps, problem{reason: f.reason, message: f.message, step: true})
		}
	}
	if r.collector != "" {
		ps = append(ps, problem{reason: r.collectorReason, message: r.collector})
	}
	return ps
}

// readyCondition returns the Ready condition for r: the first problem's
// reason, and a message naming it and every other failed step.
func (r readiness) readyCondition(generation int64) metav1.Condition {
	c := metav1.Condition{
		Type:               cxv1.ReadyCondition,
		Status:             metav1.ConditionTrue,
		ObservedGeneration: generation,
		Reason:             cxv1.ReconciledReason,
		Message:            "Spec is valid and every reference resolves",
	}
	ps := r.problems()
	if len(ps) == 0 {
		return c
	}
	msgs := []string{ps[0].message}
	for _, p := range ps[1:] {
		if p.step {
			msgs = append(msgs, p.message)
		}
	}
	c.Status, c.Reason, c.Message = metav1.ConditionFalse, ps[0].reason, strings.Join(msgs, "; ")
	return c
}

// stalled reports whether the first problem needs someone to act.
func (r readiness) stalled() bool {
	ps := r.problems()
	return len(ps) > 0 && ps[0].stalled
}

// setReadinessConditions recomputes Ready, Reconciling and Stalled from r.
// Reconciling (waiting for something the manager expects to clear) and
// Stalled (nothing changes until someone acts) are present only while
// true, as kstatus expects, and never together: the Argo CD health check
// reads Stalled as Degraded and Reconciling as Progressing.
// lastTransitionTime is kept when a condition's status does not change.
func setReadinessConditions(conditions *[]metav1.Condition, generation int64, r readiness) {
	ready := r.readyCondition(generation)
	meta.SetStatusCondition(conditions, ready)
	stalled := r.stalled()

	if ready.Status == metav1.ConditionFalse && !stalled {
		meta.SetStatusCondition(conditions, metav1.Condition{
			Type: cxv1.ReconcilingCondition, Status: metav1.ConditionTrue,
			ObservedGeneration: generation, Reason: ready.Reason, Message: ready.Message,
		})
	} else {
		meta.RemoveStatusCondition(conditions, cxv1.ReconcilingCondition)
	}

	if stalled {
		meta.SetStatusCondition(conditions, metav1.Condition{
			Type: cxv1.StalledCondition, Status: metav1.ConditionTrue,
			ObservedGeneration: generation, Reason: ready.Reason, Message: ready.Message,
		})
	} else {
		meta.RemoveStatusCondition(conditions, cxv1.StalledCondition)
	}
}

func notFoundReason(kind string) string {
	switch kind {
	case "Touchpoint":
		return cxv1.TouchpointNotFoundReason
	case "Survey":
		return cxv1.SurveyNotFoundReason
	case "Journey":
		return cxv1.JourneyNotFoundReason
	}
	return kind + "NotFound"
}

// missingMessage names every missing reference, grouped by kind in the order
// the kinds first appear: `Touchpoints "a", "b" not found; Survey "c" not found`.
func missingMessage(missing []missingRef) string {
	var kinds []string
	names := map[string][]string{}
	for _, m := range missing {
		if _, seen := names[m.Kind]; !seen {
			kinds = append(kinds, m.Kind)
		}
		names[m.Kind] = append(names[m.Kind], fmt.Sprintf("%q", m.Name))
	}
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		n := names[k]
		sort.Strings(n)
		noun := k
		if len(n) > 1 {
			noun += "s"
		}
		parts = append(parts, fmt.Sprintf("%s %s not found", noun, strings.Join(n, ", ")))
	}
	return strings.Join(parts, "; ")
}

// firstStatusGrace is how long a new object may wait for its collector
// before a status saying so is written.
const firstStatusGrace = 10 * time.Second

// holdFirstStatus reports whether obj's status should not be written yet: it
// has never had one, and the only thing to say is that its collector is
// being started or has not loaded its config, as happens for every new
// object in the seconds after it is created. Holding that status for a
// moment makes the first status write carry the numbers, one write instead
// of two; an object still waiting after the grace gets the condition that
// says why.
func holdFirstStatus(obj client.Object, before []metav1.Condition, obs readiness, now time.Time) bool {
	onlyCollector := obs.collector != "" && len(obs.problems()) == 1
	return onlyCollector && meta.FindStatusCondition(before, cxv1.ReadyCondition) == nil &&
		now.Sub(obj.GetCreationTimestamp().Time) < firstStatusGrace
}

// readyEvent decides whether a change of the Ready condition between before
// and after deserves an event, and returns the condition to report. Events
// mark what an operator should notice: an object that stopped working (or
// failed in a new way), and one that works again. An object that simply
// starts working, or waits the seconds its collector takes to load its
// config, gets none: at 10,000 objects those events would cost as many API
// writes as the statuses and bury the ones that matter.
func readyEvent(before, after []metav1.Condition) (metav1.Condition, bool) {
	now := meta.FindStatusCondition(after, cxv1.ReadyCondition)
	if now == nil || now.Reason == cxv1.CollectorPendingReason {
		return metav1.Condition{}, false
	}
	was := meta.FindStatusCondition(before, cxv1.ReadyCondition)
	if was != nil && was.Status == now.Status && was.Reason == now.Reason {
		return metav1.Condition{}, false
	}
	neverFailed := was == nil || was.Reason == cxv1.CollectorPendingReason
	if now.Status == metav1.ConditionTrue && neverFailed {
		return metav1.Condition{}, false
	}
	return *now, true
}

// recordReadyTransition emits the event readyEvent asks for: Normal when
// the object recovered, Warning otherwise, with the condition's reason.
func recordReadyTransition(rec events.EventRecorder, obj client.Object, before, after []metav1.Condition) {
	c, ok := readyEvent(before, after)
	if !ok || rec == nil {
		return
	}
	eventType := corev1.EventTypeWarning
	if c.Status == metav1.ConditionTrue {
		eventType = corev1.EventTypeNormal
	}
	rec.Eventf(obj, nil, eventType, c.Reason, reconcileAction, "%s", c.Message)
}
