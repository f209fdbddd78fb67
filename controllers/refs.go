package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
