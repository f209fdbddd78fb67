package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/slo"
)

// StatusSource gives reconcilers the numbers their status shows, read from
// the namespace's collector through a shared, short-lived cache.
type StatusSource struct {
	Reader  client.Reader
	Runtime CollectorRuntime
	API     *collectorapi.Client
	// Interval is how often an object's numbers are refreshed; each
	// object waits a jittered interval so that thousands of objects
	// created together do not refresh together.
	Interval time.Duration
	// RetryInterval is how soon an object whose collector could not
	// answer tries again.
	RetryInterval time.Duration
	// readings remembers each object's last good reading, for the Stale
	// condition.
	readings *readings

	// collectorErrs holds, by namespace, why the collector reconciler last
	// failed to write the namespace's collector; see CollectorWritten.
	collectorErrs sync.Map
	// changed are told the namespaces whose collector outcome changed.
	mu      sync.Mutex
	changed []chan event.GenericEvent
}

// collectorChanges returns a channel that receives an event naming the
// namespace (the object's only field) whenever the outcome of its
// collector changes, so that the objects that show it are reconciled at
// once rather than at their next refresh. An event that finds the channel
// full is dropped: the refresh still comes.
func (s *StatusSource) collectorChanges() <-chan event.GenericEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan event.GenericEvent, 256)
	s.changed = append(s.changed, ch)
	return ch
}

// CollectorWritten records the outcome of the collector reconciler for a
// namespace: nil once its token Secrets, config and workload are written.
// The collector reconciler has no object of its own to write status on, so
// the Touchpoints and Surveys of the namespace, whose config it writes,
// show its failure in their Ready condition at their next reconcile.
func (s *StatusSource) CollectorWritten(namespace string, err error) {
	var was error
	if err == nil {
		if v, loaded := s.collectorErrs.LoadAndDelete(namespace); loaded {
			was = v.(error)
		}
	} else if v, loaded := s.collectorErrs.Swap(namespace, err); loaded {
		was = v.(error)
	}
	if (was == nil) == (err == nil) && (err == nil || was.Error() == err.Error()) {
		return
	}
	ev := event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: namespace}}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.changed {
		select {
		case ch <- ev:
		default:
		}
	}
}

// collectorFailure is the failed step that the collector reconciler's last
// failure for namespace means for its Touchpoints and Surveys.
func (s *StatusSource) collectorFailure(namespace string) (failure, bool) {
	v, ok := s.collectorErrs.Load(namespace)
	if !ok {
		return failure{}, false
	}
	err := v.(error)
	if bad := (*invalidDataPolicy)(nil); errors.As(err, &bad) {
		return failure{reason: cxv1.InvalidDataPolicyReason, message: bad.Error(), stalled: true}, true
	}
	if missing := (*postgresSecretMissing)(nil); errors.As(err, &missing) {
		return failure{reason: cxv1.PostgresSecretMissingReason, message: missing.Error(), stalled: true}, true
	}
	if switching := (*storeSwitching)(nil); errors.As(err, &switching) {
		return failure{reason: cxv1.StoreSwitchingReason, message: switching.Error()}, true
	}
	return failure{
		reason:  cxv1.CollectorFailedReason,
		message: "the namespace's collector could not be written: " + err.Error(),
		stalled: refused(err),
	}, true
}

// NewStatusSource returns a StatusSource refreshing every interval.
func NewStatusSource(reader client.Reader, rt CollectorRuntime, interval time.Duration) *StatusSource {
	// Answers are reused for a fraction of the interval: every object of a
	// namespace refreshed in one pass shares one request per window.
	api := collectorapi.New(interval / 3)
	// Only a request the collector answered moves its metrics, never an
	// answer served from the cache.
	api.OnFetch = func(t collectorapi.Target, err error) { collectorAnswered(t.Namespace, err) }
	return &StatusSource{
		Reader: reader, Runtime: rt, API: api,
		Interval: interval, RetryInterval: 5 * time.Second, readings: newReadings(time.Now()),
	}
}

// pendingRetry is how soon an object whose collector has not loaded it yet
// looks again. Loading takes milliseconds once the config file changes,
// and a summary lacking the object is refetched at most once a second
// (collectorapi.Client), so a short retry costs little and saves new objects
// seconds.
const pendingRetry = time.Second

// next returns when an object should be refreshed again: the interval
// with ±10% jitter, or sooner after its collector could not answer.
func (s *StatusSource) next(obs readiness) time.Duration {
	switch {
	case obs.collectorReason == cxv1.CollectorPendingReason:
		return min(pendingRetry, s.RetryInterval)
	case obs.collector != "" || slices.ContainsFunc(obs.failures, func(f failure) bool { return !f.stalled }):
		return s.RetryInterval
	}
	jitter := (rand.Float64()*0.2 - 0.1) * float64(s.Interval)
	return s.Interval + time.Duration(jitter)
}

// target returns the namespace's collector and its read token. A
// collector not yet provisioned is reported as unavailable.
func (s *StatusSource) target(ctx context.Context, namespace string) (collectorapi.Target, error) {
	url := s.Runtime.URL(namespace)
	var sec corev1.Secret
	err := s.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: ReadTokenSecretName}, &sec)
	if apierrors.IsNotFound(err) || url == "" {
		return collectorapi.Target{}, &collectorapi.Unavailable{Reason: "the namespace's collector is not provisioned yet (one runs in each namespace that has Touchpoints)"}
	}
	if err != nil {
		return collectorapi.Target{}, fmt.Errorf("get secret %s/%s: %w", namespace, ReadTokenSecretName, err)
	}
	return collectorapi.Target{BaseURL: url, Token: string(sec.Data[TokenKey]), Namespace: namespace}, nil
}

// all returns the summary of every touchpoint and survey of namespace over
// window. has, when set, says whether an answer knows the caller's subject;
// see collectorapi.Client.All.
func (s *StatusSource) all(ctx context.Context, namespace string, window cxv1.Duration, has func(*collectorapi.AllSummary) bool) (*collectorapi.AllSummary, error) {
	t, err := s.target(ctx, namespace)
	if err != nil {
		return nil, err
	}
	return s.API.All(ctx, t, string(window), has)
}

// summaryOf returns one object's summary over window, picked from its
// namespace's answer, or nil. A collector that cannot answer, has not
// loaded the object's config yet, or could not be written by the collector
// reconciler is recorded in obs; what names the object for the condition
// message ("touchpoint", "survey").
func summaryOf[S any](ctx context.Context, s *StatusSource, obs *readiness, namespace string, window cxv1.Duration, what string, pick func(*collectorapi.AllSummary) *S) *S {
	if f, failed := s.collectorFailure(namespace); failed {
		obs.fail(f)
	}
	has := func(a *collectorapi.AllSummary) bool { return pick(a) != nil }
	all, err := s.all(ctx, namespace, window, has)
	if !obs.collectorStep("read the collector's numbers", err) {
		return nil
	}
	summary := pick(all)
	if summary == nil {
		obs.collectorReason, obs.collector = cxv1.CollectorPendingReason, fmt.Sprintf("the collector has not loaded this %s's config yet", what)
	}
	return summary
}

// touchpoints returns the combined summary of a set of touchpoints.
func (s *StatusSource) touchpoints(ctx context.Context, namespace string, window cxv1.Duration, names []string) (*collectorapi.TouchpointSummary, error) {
	t, err := s.target(ctx, namespace)
	if err != nil {
		return nil, err
	}
	return s.API.Touchpoints(ctx, t, string(window), names)
}

// collectorStep records a failed read of the collector's numbers (what
// names it): an unreachable collector as the collector's problem
// (Reconciling: it is expected to come back), any other error (its read
// token could not be read) as a failed step. It reports whether the read
// succeeded.
func (r *readiness) collectorStep(what string, err error) bool {
	if err == nil {
		return true
	}
	if !r.collectorUnavailable(err) {
		r.apiStep(cxv1.ReadFailedReason, what, err)
	}
	return false
}

// collectorUnavailable records err, if it says the collector cannot
// answer, as the collector's reason on Ready.
func (r *readiness) collectorUnavailable(err error) bool {
	if !collectorapi.IsUnavailable(err) {
		return false
	}
	r.collectorReason, r.collector = cxv1.CollectorUnavailableReason, err.Error()
	return true
}

// percent renders a percentage for status: one decimal, no trailing ".0"
// ("97.2", "100").
func percent(v float64) string { return slo.Decimal(v, 1) }

// seconds renders a wait as a duration such as "42s" or "1m50s", to a
// tenth of a second under a minute and to the second above.
func seconds(v float64) string {
	d := time.Duration(v * float64(time.Second))
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// collectorChangeSource wakes every object of list's kind in a namespace
// whose collector outcome changed (see CollectorWritten).
func (s *StatusSource) collectorChangeSource(c client.Client, list client.ObjectList) source.Source {
	return source.Channel(s.collectorChanges(), handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		l := list.DeepCopyObject().(client.ObjectList)
		if err := c.List(ctx, l, client.InNamespace(obj.GetNamespace())); err != nil {
			// Their next refresh shows the change instead.
			ctrl.LoggerFrom(ctx).Error(err, "list objects to wake after a collector change", "namespace", obj.GetNamespace())
			return nil
		}
		var reqs []reconcile.Request
		_ = meta.EachListItem(l, func(o runtime.Object) error {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o.(client.Object))})
			return nil
		})
		return reqs
	}))
}
