package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// findMissing looks each name up as an object of kind in namespace and
// returns those that do not exist, in the order given. Lookups hit the
// informer cache. Any other error is transient and returned.
func findMissing(ctx context.Context, c client.Client, namespace, kind string, newObj func() client.Object, names []string) ([]missingRef, error) {
	var missing []missingRef
	for _, name := range names {
		err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, newObj())
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, missingRef{Kind: kind, Name: name})
		case err != nil:
			return nil, fmt.Errorf("get %s %s/%s: %w", kind, namespace, name, err)
		}
	}
	return missing, nil
}

// resolve records in r the names of kind in namespace that do not exist;
// a lookup that fails otherwise is a failed step.
func (r *readiness) resolve(ctx context.Context, c client.Client, namespace, kind string, newObj func() client.Object, names []string) {
	missing, err := findMissing(ctx, c, namespace, kind, newObj, names)
	if r.apiStep(cxv1.ReadFailedReason, "resolve references", err) {
		r.missing = append(r.missing, missing...)
	}
}
