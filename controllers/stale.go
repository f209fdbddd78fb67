package controllers

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// A collector restart or rollout says nothing new about a Touchpoint, a
// Survey, a Journey or a CXTarget, and neither does an API read that fails
// in passing (the objects they refer to, a read token). Clearing their
// numbers meanwhile would read as a recovery on every dashboard that reads
// status, so status keeps the numbers of the last good reading of the
// object's current generation and says so with Stale=True and the
// reading's time; Ready says what failed.

// readings remembers when each object's numbers were last read, for the
// Stale condition's message. It lives in memory: a manager started during
// an outage says the reading was before it started.
type readings struct {
	started time.Time
	mu      sync.Mutex
	at      map[readingKey]reading
}

// reading is when an object's numbers were last read, and for which
// generation of its spec: a reading of an earlier spec says nothing about
// the numbers status shows now.
type reading struct {
	at         time.Time
	generation int64
}

type readingKey struct{ kind, namespace, name string }

func newReadings(started time.Time) *readings {
	return &readings{started: started, at: map[readingKey]reading{}}
}

func keyOf(kind string, obj client.Object) readingKey {
	return readingKey{kind, obj.GetNamespace(), obj.GetName()}
}

// read records a good reading of the numbers of a generation.
func (r *readings) read(k readingKey, generation int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at[k] = reading{at: at, generation: generation}
}

// forget drops a deleted object.
func (r *readings) forget(k readingKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.at, k)
}

// forgetting returns what drops the reading of the kind's object req
// names, for fetchLive to call when the object is gone.
func (r *readings) forgetting(kind string, req ctrl.Request) func() {
	return func() { r.forget(readingKey{kind, req.Namespace, req.Name}) }
}

// last is the time of the last good reading of the generation's numbers.
func (r *readings) last(k readingKey, generation int64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[k]
	if !ok || t.generation != generation {
		return time.Time{}, false
	}
	return t.at, true
}

// staleness is what one loop concluded about an object's numbers.
type staleness struct {
	// keep: status keeps the numbers it shows.
	keep bool
	// stale is the Stale condition to show, nil when the numbers are live
	// or cleared.
	stale *metav1.Condition
}

// staleness decides whether obj keeps the numbers its status shows: read
// says this loop read them; otherwise they are kept while they could not
// be read (obs.unread), if they were read for the object's current
// generation (observedGeneration, with conditions, is the status this loop
// started from) and a good reading is known to have happened.
func (r *readings) staleness(kind string, obj client.Object, observedGeneration int64, conditions []metav1.Condition, obs readiness, read bool, now time.Time) staleness {
	k := keyOf(kind, obj)
	if read {
		r.read(k, obj.GetGeneration(), now)
		return staleness{}
	}
	reason, why := obs.unread()
	if reason == "" || observedGeneration != obj.GetGeneration() {
		return staleness{}
	}
	was := meta.FindStatusCondition(conditions, cxv1.StaleCondition)
	ready := meta.FindStatusCondition(conditions, cxv1.ReadyCondition)
	at, known := r.last(k, obj.GetGeneration())
	hadReading := known || was != nil || (ready != nil && ready.Status == metav1.ConditionTrue)
	if !hadReading {
		return staleness{}
	}
	c := &metav1.Condition{Type: cxv1.StaleCondition, Status: metav1.ConditionTrue, ObservedGeneration: obj.GetGeneration(), Reason: reason}
	switch {
	case known:
		c.Message = fmt.Sprintf("The numbers are those of the last good reading, at %s: %s", at.UTC().Format(time.RFC3339), why)
	case was != nil && was.Status == metav1.ConditionTrue && was.Reason == reason:
		// Started during the outage: the earlier loop knew the time.
		c.Message = was.Message
	default:
		c.Message = fmt.Sprintf("The numbers are those of the last good reading, before the manager started at %s: %s", r.started.UTC().Format(time.RFC3339), why)
	}
	return staleness{keep: true, stale: c}
}

// unread says why this loop could not read the numbers an object's status
// shows, when nothing says they changed: the collector cannot answer (its
// reason), or an API read failed (ReadFailed, with the first such step's
// message). It returns "" when the numbers were not read for another
// reason (an unusable spec, a missing reference, an objective that does
// not fit), which makes them meaningless rather than old.
func (r readiness) unread() (reason, message string) {
	if r.invalid != nil || len(r.missing) > 0 || r.mismatch != "" {
		return "", ""
	}
	if r.collectorReason != "" {
		return r.collectorReason, r.collector
	}
	for _, f := range r.failures {
		if f.reason == cxv1.ReadFailedReason {
			return f.reason, f.message
		}
	}
	return "", ""
}

// setStaleCondition shows s on conditions: Stale=True while numbers are
// kept, absent otherwise.
func setStaleCondition(conditions *[]metav1.Condition, s staleness) {
	if s.stale != nil {
		meta.SetStatusCondition(conditions, *s.stale)
		return
	}
	meta.RemoveStatusCondition(conditions, cxv1.StaleCondition)
}

// keptDelivery is the Delivering condition to show while numbers are kept.
// Whether the webhook answered 410 Gone or its messages are parked comes
// with the collector's answer; without one, deliveryCondition says Unknown.
// A failure the last answer reported stands instead, marked by Stale like
// the numbers: a collector restart is no news that the webhook recovered,
// and Delivering=False going Unknown would read as one (Argo CD shows the
// Survey Healthy again). What the manager checks itself (the survey page,
// the signing key, an http webhook) is decided anew and never replaced.
func (s staleness) keptDelivery(now *metav1.Condition, before []metav1.Condition) *metav1.Condition {
	if !s.keep || now == nil || now.Reason != cxv1.CollectorUnavailableReason {
		return now
	}
	was := meta.FindStatusCondition(before, cxv1.DeliveringCondition)
	if was == nil || was.Status != metav1.ConditionFalse || (was.Reason != cxv1.WebhookGoneReason && was.Reason != cxv1.WebhookFailingReason) {
		return now
	}
	return was
}
