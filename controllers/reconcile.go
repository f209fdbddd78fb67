package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Every kind's Reconcile has one shape (Flux's summarize-and-patch, Cluster
// API's *_status.go files):
//
//	func (r *XReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
//		x := &cxv1.X{}
//		if live, err := fetchLive(ctx, r.Client, req, x, r.Live.readings.forgetting("X", req)); !live {
//			return ctrl.Result{}, err
//		}
//		st := newStatusPatch(r.Client, r.Recorder, x, &x.Status.Conditions)
//		defer st.patch(ctx, &retErr)
//
//		obs := r.observe(ctx, x)   // every read and write; a failed step is recorded, not returned
//		obs.stale = r.Live.readings.staleness("X", x, x.Status.ObservedGeneration, st.before,
//			obs.readiness, obs.summary != nil, time.Now())   // from the status as read
//		setXStatus(x, obs)         // pure: the whole status from the spec and obs
//		return obs.outcome(next)   // a terminal error, the steps' errors, or a requeue
//	}
//
// observe leaves status alone, so x.Status after it is still the status as
// read; staleness (stale.go) decides from it whether the numbers it shows
// are kept, marked Stale, while the collector cannot answer.
//
// observe never returns early on an error: whatever failed is a failure in
// its readiness, so the status written in the defer always says what the
// last reconcile found, and no failure leaves an earlier Ready=True showing.

// failure is a step of a reconcile that did not succeed. It shows in Ready
// with its reason and a message naming what failed.
type failure struct {
	reason, message string
	// stalled: the step cannot succeed until someone acts (the API server
	// refused an object, a ConfigMap or Secret the spec names is missing).
	// Such a failure is marked Stalled, which GitOps tools show as failed;
	// any other is marked Reconciling, which they show as progressing.
	stalled bool
	// err is returned to controller-runtime, which retries with backoff;
	// nil when the next refresh is soon enough.
	err error
}

// fail records a failed step.
func (r *readiness) fail(f failure) { r.failures = append(r.failures, f) }

// apiStep records the outcome of an API call for what ("create cronjob
// ns/name"), with reason, and reports whether it succeeded. A refusal that
// retrying cannot fix (forbidden, invalid, an object owned by someone
// else) is stalled; anything else (a timeout, a 5xx, throttling) passes.
// Both are retried with backoff. Optimistic-concurrency races (a conflict,
// an object created meanwhile) are retried without a mark on status: they
// are how concurrent writers take turns, and the next attempt succeeds.
func (r *readiness) apiStep(reason, what string, err error) bool {
	if err == nil {
		return true
	}
	err = fmt.Errorf("%s: %w", what, err)
	if lostRace(err) {
		r.retry = append(r.retry, err)
		return false
	}
	r.fail(failure{reason: reason, message: err.Error(), stalled: refused(err), err: err})
	return false
}

// lostRace reports whether err is an optimistic-concurrency race (a
// conflict, an object created meanwhile): how concurrent writers take
// turns, retried at once and no failure.
func lostRace(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

// actionNeeded is an error that retrying cannot fix: its message says what
// someone must do (delete a Secret whose content the manager cannot use).
type actionNeeded struct{ error }

func (e actionNeeded) Unwrap() error { return e.error }

// needsAction marks err as one that someone must act on.
func needsAction(err error) error { return actionNeeded{err} }

// refused reports whether err cannot be got past by trying again: the API
// server refused the request (forbidden, invalid, an object owned by
// someone else), or someone must act first (needsAction).
func refused(err error) bool {
	var owned *controllerutil.AlreadyOwnedError
	var action actionNeeded
	return errors.As(err, &owned) || errors.As(err, &action) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsNotAcceptable(err) ||
		apierrors.IsUnsupportedMediaType(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// outcome is what Reconcile returns for what it observed: a terminal error
// for an unusable spec (only a spec change, which triggers a reconcile by
// itself, can help), the failed steps' errors for a retry with backoff, or
// a requeue after next (0: none; watches bring the object back).
func (r readiness) outcome(next time.Duration) (ctrl.Result, error) {
	if r.invalid != nil {
		return ctrl.Result{}, reconcile.TerminalError(r.invalid)
	}
	errs := slices.Clone(r.retry)
	for _, f := range r.failures {
		if f.err != nil {
			errs = append(errs, f.err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// fetchLive reads the object req names into obj, and reports whether there
// is anything to reconcile: not when it is gone or being deleted (nothing
// outside the cluster is owned; owned objects are garbage-collected).
// gone, when set, is called once the object is found not to exist, to drop
// what the manager remembers of it.
func fetchLive(ctx context.Context, c client.Reader, req ctrl.Request, obj client.Object, gone func()) (bool, error) {
	if err := c.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) && gone != nil {
			gone()
		}
		return false, client.IgnoreNotFound(err)
	}
	return obj.GetDeletionTimestamp().IsZero(), nil
}

// statusPatch writes an object's status once, at the end of its reconcile
// (in a defer), and only when it changed: an idle reconcile writes nothing.
type statusPatch struct {
	client   client.Client
	recorder events.EventRecorder
	obj      client.Object
	orig     client.Object
	// conditions are obj's, and before what they were when it was read.
	conditions *[]metav1.Condition
	before     []metav1.Condition
	// hold skips the write (see holdFirstStatus).
	hold bool
}

// newStatusPatch remembers obj as read, before the reconcile changes it;
// conditions points at obj's status conditions.
func newStatusPatch(c client.Client, rec events.EventRecorder, obj client.Object, conditions *[]metav1.Condition) *statusPatch {
	return &statusPatch{
		client: c, recorder: rec, obj: obj, orig: obj.DeepCopyObject().(client.Object),
		conditions: conditions, before: slices.Clone(*conditions),
	}
}

// patch records the Ready transition as an event and writes the status
// when it changed. It is deferred, so it runs however the reconcile ends;
// a failed write replaces the reconcile's error, since retrying is then
// what matters (the steps that failed fail again, and say so).
func (p *statusPatch) patch(ctx context.Context, retErr *error) {
	if p.hold {
		return
	}
	recordReadyTransition(p.recorder, p.obj, p.before, *p.conditions)
	if err := patchStatus(ctx, p.client, p.orig, p.obj); err != nil {
		*retErr = err
	}
}

// patchStatus writes obj's status with one merge patch against orig, and
// only when it changed, so an idle object costs no write.
func patchStatus(ctx context.Context, c client.Client, orig, obj client.Object) error {
	patch := client.MergeFrom(orig)
	data, err := patch.Data(obj)
	if err != nil {
		return fmt.Errorf("compute status patch: %w", err)
	}
	if string(data) == "{}" {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}
