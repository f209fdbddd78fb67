package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
)

// eventReporter is the reportingController of the events cxop emits.
const eventReporter = "cxop-manager"

// Options configure the reconcilers.
type Options struct {
	// Runtime runs the namespaces' collectors.
	Runtime CollectorRuntime
	// RefreshInterval is how often status numbers are refreshed from the
	// collectors (default 30s, jittered).
	RefreshInterval time.Duration
	// RetryInterval is how soon an object whose collector could not
	// answer tries again (default 5s).
	RetryInterval time.Duration
	// Waves runs Surveys' scheduled waves: CronJobWaves in a cluster,
	// ManagerWaves where no CronJob controller runs (`cxop dev`).
	Waves WaveScheduler
	// Concurrency is how many objects of each kind are reconciled at once
	// (default 10). Each reconcile waits on the API server for its status
	// write, so one worker caps a kind at a few hundred objects a second.
	Concurrency int
	// DataPolicy is the collectors' data policy where a namespace's
	// annotations set none (zero fields: DefaultDataPolicy's).
	DataPolicy DataPolicy
	// WatchNamespaces, when set, are the only namespaces the manager works
	// in; it then reads and watches only their Namespace objects.
	WatchNamespaces []string
	// PostgresSecretKey is the key of the connection string in the Secret
	// of a namespace on PostgreSQL (empty: DefaultPostgresSecretKey).
	PostgresSecretKey string
}

// SetupWithManager registers the field indexes and every reconciler with
// mgr.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	if opts.Runtime == nil {
		return errors.New("no collector runtime")
	}
	if opts.Waves == nil {
		return errors.New("no wave scheduler")
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 30 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 10
	}
	if err := setupIndexes(ctx, mgr); err != nil {
		return err
	}
	c, rec := mgr.GetClient(), mgr.GetEventRecorder(eventReporter)
	status := NewStatusSource(c, opts.Runtime, opts.RefreshInterval)
	if opts.RetryInterval > 0 {
		status.RetryInterval = opts.RetryInterval
	}
	for name, r := range map[string]interface {
		SetupWithManager(ctrl.Manager, controller.Options) error
	}{
		"collector": &CollectorReconciler{Client: c, APIReader: mgr.GetAPIReader(), Runtime: opts.Runtime,
			Forget: status.API.Forget, Written: status.CollectorWritten,
			DataPolicy: opts.DataPolicy, WatchNamespaces: opts.WatchNamespaces,
			PostgresSecretKey: opts.PostgresSecretKey, SecretRetry: status.RetryInterval},
		"touchpoint": &TouchpointReconciler{Client: c, Recorder: rec, Live: status},
		"survey":     &SurveyReconciler{Client: c, APIReader: mgr.GetAPIReader(), Recorder: rec, Live: status, Waves: opts.Waves},
		"journey":    &JourneyReconciler{Client: c, Recorder: rec, Live: status},
		"cxtarget": &CXTargetReconciler{Client: c, Recorder: rec, Live: status,
			PrometheusRules: HasKind(mgr.GetRESTMapper(), PrometheusRuleGVK)},
	} {
		if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: opts.Concurrency}); err != nil {
			return fmt.Errorf("set up %s reconciler: %w", name, err)
		}
	}
	return nil
}
