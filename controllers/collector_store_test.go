package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// stubRuntime is a CollectorRuntime that records what it was asked and
// answers ensureErr.
type stubRuntime struct {
	ensured   int
	ensureErr error
}

func (s *stubRuntime) Ensure(context.Context, string, collectorapi.Files) (string, error) {
	s.ensured++
	return "http://collector", s.ensureErr
}
func (s *stubRuntime) PageURL(string) (string, error)       { return "", nil }
func (s *stubRuntime) ServesSurveyPages() bool              { return false }
func (s *stubRuntime) AllowsInsecureWebhooks() bool         { return false }
func (s *stubRuntime) Remove(context.Context, string) error { return nil }
func (s *stubRuntime) URL(string) string                    { return "http://collector" }

// stubStoreRuntime is a stubRuntime that takes the namespace's store, as
// KubeCollectorRuntime does.
type stubStoreRuntime struct {
	stubRuntime
	stores []CollectorStore
}

func (s *stubStoreRuntime) EnsureStore(ctx context.Context, ns string, files collectorapi.Files, store CollectorStore) (string, error) {
	s.stores = append(s.stores, store)
	return s.Ensure(ctx, ns, files)
}

// reconcileOnce reconciles the collector of namespace ns (with the given
// annotations and one Touchpoint) on a fake API server, and returns the
// result, the error, and the outcome reported to Written.
func reconcileOnce(t *testing.T, rt CollectorRuntime, annotations map[string]string, objs ...runtime.Object) (ctrl.Result, error, error) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := cxv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	objs = append(objs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: annotations}},
		&cxv1.Touchpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "chat"},
			Spec: cxv1.TouchpointSpec{Channel: cxv1.ChannelChat, WaitTime: &cxv1.WaitTimeSpec{Threshold: "2m"}}})
	c := fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build()
	var written error
	r := &CollectorReconciler{Client: c, Runtime: rt, Written: func(_ string, err error) { written = err }}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: CollectorName}})
	return res, err, written
}

// A store switch under way is a wait, not a failure: the reconcile
// succeeds and comes back, and the namespace's objects show
// StoreSwitching, Reconciling rather than Stalled.
func TestStoreSwitchIsAWait(t *testing.T) {
	rt := &stubStoreRuntime{stubRuntime: stubRuntime{ensureErr: &storeSwitching{namespace: "shop", from: StoreEmbedded, to: StorePostgres, old: "StatefulSet", next: "Deployment"}}}
	res, err, written := reconcileOnce(t, rt, nil)
	if err != nil || res.RequeueAfter != storeSwitchRetry {
		t.Fatalf("reconcile: %+v, %v; want a requeue after %s and no error", res, err, storeSwitchRetry)
	}
	var switching *storeSwitching
	if !errors.As(written, &switching) {
		t.Fatalf("outcome %v; want the switch reported", written)
	}
	s := &StatusSource{}
	s.CollectorWritten("shop", written)
	f, ok := s.collectorFailure("shop")
	if !ok || f.reason != cxv1.StoreSwitchingReason || f.stalled ||
		!strings.Contains(f.message, "switching from the embedded store to postgres: its StatefulSet is being deleted, and the Deployment is created once its pods are gone") {
		t.Errorf("failure %+v; want StoreSwitching, not stalled, saying what happens", f)
	}
}

// Under `cxop dev` the local collectors keep every namespace's records in
// the store of its --store flag: a namespace's store annotations are
// refused (InvalidDataPolicy, naming each and the flag) instead of being
// ignored while the Secret they name is required.
func TestLocalCollectorsRefuseStoreAnnotations(t *testing.T) {
	rt := &stubRuntime{}
	res, err, written := reconcileOnce(t, rt, map[string]string{StoreAnnotation: StorePostgres, PostgresSecretAnnotation: "shop-db"})
	var bad *invalidDataPolicy
	if !errors.As(err, &bad) || res.RequeueAfter != 0 {
		t.Fatalf("reconcile: %+v, %v; want an unusable data policy", res, err)
	}
	for _, want := range []string{
		"annotation cx.cxop.dev/store: `cxop dev` keeps every namespace's records in the store its --store flag chose",
		"annotation cx.cxop.dev/postgres-secret: `cxop dev` keeps every namespace's records in the store its --store flag chose",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Secret shop/shop-db") {
		t.Errorf("error %q asks for the Secret", err)
	}
	if rt.ensured != 0 {
		t.Errorf("the collector was started %d times on a refused policy", rt.ensured)
	}
	s := &StatusSource{}
	s.CollectorWritten("shop", written)
	if f, ok := s.collectorFailure("shop"); !ok || f.reason != cxv1.InvalidDataPolicyReason || !f.stalled {
		t.Errorf("failure %+v; want InvalidDataPolicy, stalled", f)
	}

	// The other annotations still apply, and no Secret is needed.
	rt = &stubRuntime{}
	res, err, written = reconcileOnce(t, rt, map[string]string{RetentionAnnotation: "90d"})
	if err != nil || written != nil || rt.ensured != 1 {
		t.Errorf("reconcile without store annotations: %+v, %v, outcome %v, %d starts; want the collector started", res, err, written, rt.ensured)
	}
}
