package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
)

// eventReporter is the reportingController of the events cxop emits.
const eventReporter = "cxop-manager"

// SetupWithManager registers the field indexes and every reconciler with
// mgr.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := setupIndexes(ctx, mgr); err != nil {
		return err
	}
	c, rec := mgr.GetClient(), mgr.GetEventRecorder(eventReporter)
	for name, r := range map[string]interface{ SetupWithManager(ctrl.Manager) error }{
		"touchpoint": &TouchpointReconciler{Client: c, Recorder: rec},
		"survey":     &SurveyReconciler{Client: c, Recorder: rec},
		"journey":    &JourneyReconciler{Client: c, Recorder: rec},
		"cxtarget":   &CXTargetReconciler{Client: c, Recorder: rec},
	} {
		if err := r.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up %s reconciler: %w", name, err)
		}
	}
	return nil
}
