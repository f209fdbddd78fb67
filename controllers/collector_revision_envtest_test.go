package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

var _ = Describe("Collector config revision", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	// configMap reads the namespace's collector config and its ConfigMap.
	configMap := func(g Gomega, ctx SpecContext) (collectorapi.Config, corev1.ConfigMap) {
		var cm corev1.ConfigMap
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorConfigMapName}, &cm)).To(Succeed())
		var cfg collectorapi.Config
		g.Expect(yaml.UnmarshalStrict([]byte(cm.Data[CollectorConfigKey]), &cfg)).To(Succeed())
		return cfg, cm
	}

	It("rises when the rendered config changes and stays when it does not", func(ctx SpecContext) {
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		var first collectorapi.Config
		Eventually(func(g Gomega) {
			first, _ = configMap(g, ctx)
			g.Expect(first.Touchpoints).To(HaveLen(1))
		}).Should(Succeed())
		Expect(first.Revision).To(BeNumerically(">", 0))

		// A change the config renders: a higher revision.
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
				return err
			}
			tp.Spec.WaitTime.Threshold = "3m"
			return k8sClient.Update(ctx, tp)
		})).To(Succeed())
		var second collectorapi.Config
		var cm corev1.ConfigMap
		Eventually(func(g Gomega) {
			second, cm = configMap(g, ctx)
			g.Expect(second.Touchpoints[0].WaitThreshold).To(Equal("3m"))
		}).Should(Succeed())
		Expect(second.Revision).To(BeNumerically(">", first.Revision))

		// A change it does not render (the display name): reconciled,
		// and the ConfigMap is not written.
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
				return err
			}
			tp.Spec.DisplayName = "Support chat"
			return k8sClient.Update(ctx, tp)
		})).To(Succeed())
		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		Consistently(func(g Gomega) {
			cfg, now := configMap(g, ctx)
			g.Expect(now.ResourceVersion).To(Equal(cm.ResourceVersion))
			g.Expect(cfg.Revision).To(Equal(second.Revision))
		}, 3*time.Second).Should(Succeed())

		// Rendering the same content again writes nothing and hands back
		// the config as it stands, revision and all.
		r := &CollectorReconciler{Client: k8sClient}
		same := second
		same.Revision = 0
		data, changed, err := r.applyConfigMap(ctx, ns, same)
		Expect(err).NotTo(HaveOccurred())
		Expect(changed).To(BeFalse())
		Expect(string(data)).To(Equal(cm.Data[CollectorConfigKey]))
		_, after := configMap(Default, ctx)
		Expect(after.ResourceVersion).To(Equal(cm.ResourceVersion))
	})
})

// TestNextRevision: one more than the last, or the time in milliseconds if
// greater, so that a ConfigMap made again never goes below the revision
// replicas recorded in the database.
func TestNextRevision(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct{ last, want int64 }{
		{0, 1_700_000_000_000},
		{1_700_000_000_000, 1_700_000_000_001},
		{1_800_000_000_000, 1_800_000_000_001},
		{5, 1_700_000_000_000},
	} {
		if got := nextRevision(tc.last, at); got != tc.want {
			t.Errorf("nextRevision(%d) = %d, want %d", tc.last, got, tc.want)
		}
	}
}
