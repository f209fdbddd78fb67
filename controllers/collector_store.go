package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// Where a namespace's collector keeps its records. The manager's
// --collector-store chooses for the cluster; a namespace's StoreAnnotation
// overrides it, as its data policy annotations do.
const (
	// StoreEmbedded keeps records in the collector's embedded store on a
	// PersistentVolumeClaim: one replica per namespace.
	StoreEmbedded = "embedded"
	// StorePostgres keeps records in a PostgreSQL database the platform
	// team runs: stateless collector replicas (docs/postgres.md).
	StorePostgres = "postgres"
)

// Namespace annotations that choose a namespace's store.
const (
	// StoreAnnotation: "embedded" or "postgres".
	StoreAnnotation = "cx.cxop.dev/store"
	// PostgresSecretAnnotation names the Secret, in the namespace, that
	// holds the connection string of the namespace's database, overriding
	// --collector-postgres-secret.
	PostgresSecretAnnotation = "cx.cxop.dev/postgres-secret"
)

// DefaultPostgresSecretKey is the key of the connection string in the
// Secret a namespace's collector connects with.
const DefaultPostgresSecretKey = "dsn"

// collectorPostgresDir is where the connection string's Secret key is
// mounted in a collector's container.
const collectorPostgresDir = "/etc/cxop-postgres"

// CollectorStore is where a namespace's collector keeps its records.
type CollectorStore struct {
	// Kind is StoreEmbedded or StorePostgres.
	Kind string
	// PostgresSecret names the Secret in the namespace that holds the
	// connection string (with StorePostgres).
	PostgresSecret string
}

// StoreRuntime is a CollectorRuntime that keeps each namespace's records
// in the store the namespace chose. A runtime that is not one (`cxop dev`'s
// local processes) chooses one store for every collector by itself.
type StoreRuntime interface {
	CollectorRuntime
	// EnsureStore is Ensure with the namespace's store. Switching a
	// namespace's store replaces its workload; it moves no data.
	EnsureStore(ctx context.Context, namespace string, files collectorapi.Files, store CollectorStore) (string, error)
}

func checkStore(v string) error {
	if v != StoreEmbedded && v != StorePostgres {
		return fmt.Errorf("%q is neither %q nor %q", v, StoreEmbedded, StorePostgres)
	}
	return nil
}

// postgresSecretMissing is a namespace on PostgreSQL whose connection
// string cannot be read. Its collector keeps its last workload: a pod
// started without the string could only fail, and falling back to the
// embedded store would split the namespace's data over two stores.
type postgresSecretMissing struct {
	namespace, secret, key string
	// why is what is wrong with the Secret.
	why string
}

func (e *postgresSecretMissing) Error() string {
	return fmt.Sprintf("namespace %s keeps its records in PostgreSQL, and Secret %s/%s %s: create it with the connection string under key %q (or name another Secret with annotation %s); the collector keeps its last workload and config until then",
		e.namespace, e.namespace, e.secret, e.why, e.key, PostgresSecretAnnotation)
}

// collectorStore is the namespace's store for policy, after checking that
// a PostgreSQL namespace's connection string is there to mount. The Secret
// is the platform team's, outside the manager's cache, so it is read from
// the API server.
func (r *CollectorReconciler) collectorStore(ctx context.Context, ns string, policy DataPolicy) (CollectorStore, error) {
	if _, ok := r.Runtime.(StoreRuntime); !ok || policy.Store != StorePostgres {
		// A runtime that is not a StoreRuntime keeps records where it
		// chose (dataPolicy refuses the annotations that say otherwise).
		return CollectorStore{Kind: StoreEmbedded}, nil
	}
	store := CollectorStore{Kind: StorePostgres, PostgresSecret: policy.PostgresSecret}
	key := r.PostgresSecretKey
	if key == "" {
		key = DefaultPostgresSecretKey
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	var sec corev1.Secret
	err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: store.PostgresSecret}, &sec)
	switch {
	case apierrors.IsNotFound(err):
		return store, &postgresSecretMissing{namespace: ns, secret: store.PostgresSecret, key: key, why: "does not exist"}
	case err != nil:
		return store, fmt.Errorf("get secret %s/%s: %w", ns, store.PostgresSecret, err)
	case len(sec.Data[key]) == 0:
		return store, &postgresSecretMissing{namespace: ns, secret: store.PostgresSecret, key: key, why: fmt.Sprintf("has no key %q, or it is empty", key)}
	}
	return store, nil
}
