package controllers

import (
	"context"
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// postgresRuntime is a KubeCollectorRuntime as the manager builds it with
// --collector-store=postgres and the chart's defaults.
func postgresRuntime() *KubeCollectorRuntime {
	return &KubeCollectorRuntime{
		Client: k8sClient, Image: "example.com/cxop:test",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		StorageSize:    resource.MustParse("2Gi"),
		BlockCacheSize: resource.MustParse("128Mi"),
	}
}

func isGone(ctx context.Context, obj client.Object) bool {
	err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	return apierrors.IsNotFound(err)
}

// dsnSecret makes the Secret a namespace's collectors connect with.
func dsnSecret(ns, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

// expectSwitching ensures store twice while the old workload of the
// namespace is there: each time the answer is a *storeSwitching, the old
// workload is being deleted in the foreground (so the garbage collector
// removes it only after its pods), and the new one is not created.
func expectSwitching(ctx context.Context, rt *KubeCollectorRuntime, ns string, store CollectorStore, old, next client.Object) {
	GinkgoHelper()
	for range 2 {
		_, err := rt.EnsureStore(ctx, ns, collectorapi.Files{}, store)
		var switching *storeSwitching
		Expect(errors.As(err, &switching)).To(BeTrue(), "EnsureStore: %v; want a store switch under way", err)
		Expect(err.Error()).To(ContainSubstring("created once its pods are gone"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(old), old)).To(Succeed(), "the old workload waits for the garbage collector")
		Expect(old.GetDeletionTimestamp()).NotTo(BeNil())
		Expect(old.GetFinalizers()).To(ContainElement(metav1.FinalizerDeleteDependents), "deleted in the foreground")
		Expect(isGone(ctx, next)).To(BeTrue(), "no new workload while the old one is there")
		var svc corev1.Service
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorName}, &svc)).To(Succeed())
		Expect(svc.Spec.Selector).To(Equal(collectorSelector()))
	}
}

// finishForegroundDeletion does what the garbage collector does once a
// workload deleted in the foreground has no pods left: it removes the
// finalizer, and the workload is gone. No garbage collector runs here.
func finishForegroundDeletion(ctx context.Context, obj client.Object) {
	GinkgoHelper()
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	obj.SetFinalizers(nil)
	Expect(k8sClient.Update(ctx, obj)).To(Succeed())
	Eventually(func() bool { return isGone(ctx, obj) }).Should(BeTrue())
}

var _ = Describe("Collector store", func() {
	It("runs a namespace on PostgreSQL as a Deployment with a PodDisruptionBudget, and switches to the embedded store and back", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		// Pods made from the template must pass the restricted standard,
		// as the StatefulSet's do.
		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ns}, nsObj)).To(Succeed())
		nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())

		rt := postgresRuntime()
		pg := CollectorStore{Kind: StorePostgres, PostgresSecret: "cx-postgres"}
		key := types.NamespacedName{Namespace: ns, Name: CollectorName}

		By("embedded first, with its data PVC (made by hand: no StatefulSet controller runs here)")
		Expect(rt.Ensure(ctx, ns, collectorapi.Files{})).To(Equal("http://cxop-collector." + ns + ".svc:8080"))
		Expect(k8sClient.Get(ctx, key, &appsv1.StatefulSet{})).To(Succeed())
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-" + CollectorName + "-0"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}},
			},
		}
		Expect(k8sClient.Create(ctx, pvc)).To(Succeed())

		By("to PostgreSQL: the StatefulSet goes first, in the foreground; no Deployment while it (and so a pod of it) is there")
		stsObj := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}}
		expectSwitching(ctx, rt, ns, pg, stsObj, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})
		By("the StatefulSet's pods gone: a Deployment of two replicas takes over, the PVC stays")
		finishForegroundDeletion(ctx, stsObj)
		Expect(rt.EnsureStore(ctx, ns, collectorapi.Files{}, pg)).To(Equal("http://cxop-collector." + ns + ".svc:8080"))
		Expect(isGone(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})).To(BeTrue())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pvc), &corev1.PersistentVolumeClaim{})).To(Succeed(), "the embedded data is kept")

		var dep appsv1.Deployment
		Expect(k8sClient.Get(ctx, key, &dep)).To(Succeed())
		Expect(*dep.Spec.Replicas).To(BeEquivalentTo(2))
		Expect(dep.Labels).To(HaveKeyWithValue(ManagedByLabel, ManagedByValue))
		Expect(dep.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue()).To(Equal(0))
		pod := dep.Spec.Template.Spec
		c := pod.Containers[0]
		Expect(c.Args).To(ContainElements("collector", "--store=postgres", "--postgres-dsn-file=/etc/cxop-postgres/dsn",
			"--config=/etc/cxop/config.yaml", "--secrets=/etc/cxop-secrets/secrets.yaml",
			"--listen=:8080", "--page-listen=:8081", "--metrics-listen=:9090"))
		Expect(c.Args).NotTo(ContainElement(HavePrefix("--data-dir")))
		Expect(c.Args).NotTo(ContainElement(HavePrefix("--block-cache-size")))
		Expect(c.Args).NotTo(ContainElement(HavePrefix("--postgres-statement-cache")))
		Expect(c.Args).NotTo(ContainElement(HavePrefix("--postgres-engine-lease-ttl")))
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(c.StartupProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(c.Resources.Limits.Memory().String()).To(Equal("512Mi"))
		Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "postgres", MountPath: "/etc/cxop-postgres", ReadOnly: true}))
		Expect(c.VolumeMounts).NotTo(ContainElement(HaveField("Name", collectorVolumeData)))
		var dsnVolume *corev1.Volume
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == "postgres" {
				dsnVolume = &pod.Volumes[i]
			}
		}
		Expect(dsnVolume).NotTo(BeNil())
		Expect(dsnVolume.Secret.SecretName).To(Equal("cx-postgres"))
		Expect(dsnVolume.Secret.Items).To(Equal([]corev1.KeyToPath{{Key: "dsn", Path: "dsn"}}), "only the connection string is projected")
		Expect(*dsnVolume.Secret.DefaultMode).To(BeEquivalentTo(0o440))
		term := pod.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
		Expect(term).To(HaveLen(1))
		Expect(term[0].PodAffinityTerm.TopologyKey).To(Equal("kubernetes.io/hostname"))
		Expect(term[0].PodAffinityTerm.LabelSelector.MatchLabels).To(Equal(collectorSelector()))
		var svc corev1.Service
		Expect(k8sClient.Get(ctx, key, &svc)).To(Succeed())
		for k, v := range svc.Spec.Selector {
			Expect(dep.Spec.Template.Labels).To(HaveKeyWithValue(k, v), "the Service reaches the replicas")
		}
		testPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "template-check"}, Spec: *pod.DeepCopy()}
		Expect(k8sClient.Create(ctx, testPod, client.DryRunAll)).To(Succeed(), "the restricted Pod Security Standard admits the pods")

		var pdb policyv1.PodDisruptionBudget
		Expect(k8sClient.Get(ctx, key, &pdb)).To(Succeed())
		Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
		Expect(pdb.Spec.MinAvailable).To(BeNil())
		Expect(pdb.Spec.Selector.MatchLabels).To(Equal(collectorSelector()))
		Expect(*pdb.Spec.UnhealthyPodEvictionPolicy).To(Equal(policyv1.AlwaysAllow))

		By("the manager's PostgreSQL options reach the Deployment")
		rt.Postgres = PostgresCollectors{SecretKey: "uri", Replicas: 3, NoStatementCache: true, EngineLeaseTTL: 10 * time.Second}
		Expect(rt.EnsureStore(ctx, ns, collectorapi.Files{}, pg)).Error().NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, key, &dep)).To(Succeed())
		Expect(*dep.Spec.Replicas).To(BeEquivalentTo(3))
		Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--postgres-dsn-file=/etc/cxop-postgres/uri", "--postgres-statement-cache=false",
			"--postgres-engine-lease-ttl=10s"))

		By("back to embedded: Deployment and PodDisruptionBudget go, the StatefulSet comes back once the Deployment's pods are gone")
		depObj := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}}
		expectSwitching(ctx, rt, ns, CollectorStore{Kind: StoreEmbedded}, depObj, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})
		finishForegroundDeletion(ctx, depObj)
		Expect(rt.EnsureStore(ctx, ns, collectorapi.Files{}, CollectorStore{Kind: StoreEmbedded})).Error().NotTo(HaveOccurred())
		Expect(isGone(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})).To(BeTrue())
		Expect(isGone(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})).To(BeTrue())
		var sts appsv1.StatefulSet
		Expect(k8sClient.Get(ctx, key, &sts)).To(Succeed())
		Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElements("--data-dir=/var/lib/cxop", "--block-cache-size=128Mi"))
		Expect(sts.Spec.Template.Spec.Containers[0].Args).NotTo(ContainElement(HavePrefix("--store")))

		By("to PostgreSQL with deleteWithCollector: the embedded PVC goes with the StatefulSet")
		rt.DeletePVC = true
		expectSwitching(ctx, rt, ns, pg, stsObj, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})
		finishForegroundDeletion(ctx, stsObj)
		Expect(rt.EnsureStore(ctx, ns, collectorapi.Files{}, pg)).Error().NotTo(HaveOccurred())
		Eventually(func() bool {
			var p corev1.PersistentVolumeClaim
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pvc), &p)
			// The PVC protection finalizer keeps a deleted claim around
			// where no controller removes it.
			return apierrors.IsNotFound(err) || (err == nil && !p.DeletionTimestamp.IsZero())
		}).Should(BeTrue())

		By("removing the collector removes the PostgreSQL workload too")
		Expect(rt.Remove(ctx, ns)).To(Succeed())
		Expect(isGone(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})).To(BeTrue())
		Expect(isGone(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorName}})).To(BeTrue())
	})

	It("waits with Ready=False naming a missing connection Secret or key, starts nothing, and recovers once it is there", func(ctx SpecContext) {
		ns := newAnnotatedNamespace(ctx, map[string]string{StoreAnnotation: StorePostgres, PostgresSecretAnnotation: "shop-postgres"})
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())

		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.PostgresSecretMissingReason,
			ContainSubstring("Secret "+ns+"/shop-postgres does not exist: create it with the connection string under key \"dsn\""))
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CollectorConfigMapName}, &corev1.ConfigMap{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no collector config is written for a store that cannot open: %v", err)
		Expect(collectors.storeOf(ns)).To(Equal(CollectorStore{}), "no collector was started")

		By("a Secret without the key")
		Expect(k8sClient.Create(ctx, dsnSecret(ns, "shop-postgres", map[string][]byte{"password": []byte("x")}))).To(Succeed())
		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.PostgresSecretMissingReason,
			ContainSubstring(`Secret `+ns+`/shop-postgres has no key "dsn", or it is empty`))

		By("the key is added: the collector starts on PostgreSQL, found again without any other change")
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-postgres"}}
		Expect(updateObject(ctx, sec, func() { sec.Data["dsn"] = []byte("postgres://cxop@db.internal/cx_shop") })).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(collectors.storeOf(ns)).To(Equal(CollectorStore{Kind: StorePostgres, PostgresSecret: "shop-postgres"}))
	})

	It("follows the namespace's store annotation, and stalls on an unusable one with InvalidDataPolicy", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(collectors.storeOf(ns)).To(Equal(CollectorStore{Kind: StoreEmbedded}), "the manager's default")

		By("an unknown store")
		annotateNamespace(ctx, ns, map[string]string{StoreAnnotation: "pg"})
		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.InvalidDataPolicyReason,
			ContainSubstring(`annotation cx.cxop.dev/store: "pg" is neither "embedded" nor "postgres"`))
		Consistently(func() CollectorStore { return collectors.storeOf(ns) }, time.Second).Should(Equal(CollectorStore{Kind: StoreEmbedded}),
			"never a silent default: the collector keeps its store")

		By("PostgreSQL with no Secret named (the manager names none)")
		annotateNamespace(ctx, ns, map[string]string{StoreAnnotation: StorePostgres})
		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.InvalidDataPolicyReason,
			ContainSubstring("no Secret holds the connection string: set annotation cx.cxop.dev/postgres-secret"))

		By("a name that cannot be a Secret's")
		annotateNamespace(ctx, ns, map[string]string{PostgresSecretAnnotation: "Shop_DB"})
		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.InvalidDataPolicyReason,
			ContainSubstring(`annotation cx.cxop.dev/postgres-secret: "Shop_DB" is not a Secret name`))

		By("a usable Secret: the namespace moves to PostgreSQL")
		Expect(k8sClient.Create(ctx, dsnSecret(ns, "shop-db", map[string][]byte{"dsn": []byte("postgres://cxop@db.internal/cx_shop")}))).To(Succeed())
		annotateNamespace(ctx, ns, map[string]string{PostgresSecretAnnotation: "shop-db"})
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Eventually(func() CollectorStore { return collectors.storeOf(ns) }).Should(Equal(CollectorStore{Kind: StorePostgres, PostgresSecret: "shop-db"}))

		By("the annotation removed: back to the manager's default")
		annotateNamespace(ctx, ns, map[string]string{StoreAnnotation: ""})
		Eventually(func() CollectorStore { return collectors.storeOf(ns) }).Should(Equal(CollectorStore{Kind: StoreEmbedded}))
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
	})
})
