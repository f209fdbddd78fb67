package controllers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// kubeAndInProcessCollectors makes every collector object a cluster has
// (ServiceAccount, Service, StatefulSet, ServiceMonitor; on removal the
// PVC) through the manager's own client, as the manager in a cluster does,
// and runs the collector itself in this process, where no kubelet would
// start the pod: the manager's permissions are exercised on the workloads
// and its objects still get live figures.
type kubeAndInProcessCollectors struct {
	kube  *KubeCollectorRuntime
	local *inProcessCollectors
}

func (r kubeAndInProcessCollectors) Ensure(ctx context.Context, ns string, files collectorapi.Files) (string, error) {
	if _, err := r.kube.Ensure(ctx, ns, files); err != nil {
		return "", err
	}
	return r.local.Ensure(ctx, ns, files)
}

func (r kubeAndInProcessCollectors) EnsureStore(ctx context.Context, ns string, files collectorapi.Files, store CollectorStore) (string, error) {
	if _, err := r.kube.EnsureStore(ctx, ns, files, store); err != nil {
		return "", err
	}
	return r.local.EnsureStore(ctx, ns, files, store)
}

func (r kubeAndInProcessCollectors) Remove(ctx context.Context, ns string) error {
	if err := r.kube.Remove(ctx, ns); err != nil {
		return err
	}
	return r.local.Remove(ctx, ns)
}

func (r kubeAndInProcessCollectors) PageURL(ns string) (string, error) { return r.local.PageURL(ns) }
func (r kubeAndInProcessCollectors) ServesSurveyPages() bool           { return r.local.ServesSurveyPages() }
func (r kubeAndInProcessCollectors) URL(ns string) string              { return r.local.URL(ns) }
func (r kubeAndInProcessCollectors) AllowsInsecureWebhooks() bool {
	return r.local.AllowsInsecureWebhooks()
}

// rulesOf reads the rules of the Role or ClusterRole in a file of
// config/rbac: the generated manager-role, whose rules the chart installs
// in both modes, or the leader election Role.
func rulesOf(t *testing.T, file string) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "rbac", file))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 {
		t.Fatalf("%s holds no rules", file)
	}
	return role.Rules
}

// TestNamespacedManagerUnderRBAC runs the manager as the chart's namespaced
// mode does: as a ServiceAccount holding the generated manager rules as
// Roles in two namespaces (and the leader election Role in its own), and
// get, list and watch of those two Namespace objects by name, against an
// API server that authorizes with RBAC and enforces owner reference
// permissions. It must reconcile the samples in its namespaces to Ready,
// follow a namespace's data policy annotations, make and remove every
// collector object there, and be refused Secrets and Namespaces anywhere
// else and the verbs it does not use everywhere.
func TestNamespacedManagerUnderRBAC(t *testing.T) {
	g := NewWithT(t)
	// The suite's helpers (decodeObjects, conditionsOf) assert through the
	// default Gomega, which Ginkgo's suite points at its own handler.
	RegisterTestingT(t)
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: run "make test", or export KUBEBUILDER_ASSETS="$(hack/setup-envtest.sh | tail -n 1)"`)
	}
	sch := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(sch)).To(Succeed())
	g.Expect(cxv1.AddToScheme(sch)).To(Succeed())

	env := &envtest.Environment{
		CRDDirectoryPaths:       []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("testdata", "crds")},
		ErrorIfCRDPathMissing:   true,
		ControlPlaneStopTimeout: time.Minute,
	}
	// RBAC is envtest's default; it is set here because this test is about
	// it. OwnerReferencesPermissionEnforcement (on in OpenShift) refuses an
	// owner reference with blockOwnerDeletion to who cannot update the
	// owner's finalizers.
	env.ControlPlane.GetAPIServer().Configure().
		Set("authorization-mode", "RBAC").
		Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	adminCfg, err := env.Start()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := client.New(adminCfg, client.Options{Scheme: sch})
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const system, shop, support, other = "cxop-system", "shop", "support", "other"
	var shopNS corev1.Namespace
	for _, ns := range []string{system, shop, support, other} {
		g.Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}
	sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "cxop", Namespace: system}
	bind := func(ns, name string, rules []rbacv1.PolicyRule) {
		g.Expect(admin.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules})).To(Succeed())
		g.Expect(admin.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{sa},
		})).To(Succeed())
	}
	// As the chart's namespaced mode installs them: the rule for Namespace
	// objects, which a Role cannot grant list or watch of, as a ClusterRole
	// limited to the watched ones by name; every other rule as Roles.
	nsRule, rules := splitNamespacesRule(t, rulesOf(t, "role.yaml"))
	for _, ns := range []string{shop, support} {
		bind(ns, "cxop-manager", rules)
	}
	bind(system, "cxop-leader-election", rulesOf(t, "leader_election_role.yaml"))
	nsRule.ResourceNames = []string{shop, support}
	g.Expect(admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "cxop-manager-namespaces"}, Rules: []rbacv1.PolicyRule{nsRule}})).To(Succeed())
	g.Expect(admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cxop-manager-namespaces"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cxop-manager-namespaces"},
		Subjects:   []rbacv1.Subject{sa},
	})).To(Succeed())
	// shop sets its own retention; support takes the manager's.
	g.Expect(admin.Get(ctx, client.ObjectKey{Name: shop}, &shopNS)).To(Succeed())
	shopNS.Annotations = map[string]string{RetentionAnnotation: "45d", PseudonymizeCustomersAnnotation: "true"}
	g.Expect(admin.Update(ctx, &shopNS)).To(Succeed())

	// The API server knows a ServiceAccount by this user name and groups.
	user, err := env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + system + ":cxop",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + system},
	}, nil)
	g.Expect(err).NotTo(HaveOccurred())
	managerCfg := user.Config()

	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue})}
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{
		Scheme:                        sch,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionID:              "manager.cxop.dev",
		LeaderElectionNamespace:       system,
		LeaderElectionReleaseOnCancel: true,
		// The envtest suite's manager, in this same process, registers
		// the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		// As main.go builds it with --watch-namespaces=shop,support.
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{shop: {}, support: {}},
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: managed, &corev1.ConfigMap{}: managed, &corev1.Service{}: managed,
				&corev1.ServiceAccount{}: managed, &appsv1.StatefulSet{}: managed, &batchv1.CronJob{}: managed,
				&appsv1.Deployment{}: managed, &policyv1.PodDisruptionBudget{}: managed,
			},
		},
	})
	g.Expect(err).NotTo(HaveOccurred())
	kube := &KubeCollectorRuntime{
		Client: mgr.GetClient(), Image: "example.com/cxop:test",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		StorageSize: resource.MustParse("1Gi"), BlockCacheSize: resource.MustParse("128Mi"),
		ServiceMonitors: HasKind(mgr.GetRESTMapper(), ServiceMonitorGVK), DeletePVC: true,
	}
	g.Expect(kube.ServiceMonitors).To(BeTrue(), "the ServiceMonitor CRD of testdata/crds is served")
	local := newInProcessCollectors(t.TempDir())
	t.Cleanup(local.stopAll)
	g.Expect(SetupWithManager(ctx, mgr, Options{
		Runtime:         kubeAndInProcessCollectors{kube: kube, local: local},
		RefreshInterval: 2 * time.Second,
		RetryInterval:   200 * time.Millisecond,
		Waves:           &CronJobWaves{Image: kube.Image},
		DataPolicy:      DataPolicy{Retention: "200d", ContactRetention: "3d"},
		WatchNamespaces: []string{shop, support},
	})).To(Succeed())
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		// The manager's watches must close before the API server stops.
		cancel()
		if err := <-mgrDone; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// The samples, and a scheduled Survey that signs its deliveries with
	// a Secret of the user's and sends its waves to a ConfigMap of the
	// user's, in a watched namespace and in another.
	var created []client.Object
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	for _, ns := range []string{shop, other} {
		for _, f := range files {
			data, err := os.ReadFile(f)
			g.Expect(err).NotTo(HaveOccurred())
			for _, u := range decodeObjects(data) {
				u.SetNamespace(ns)
				g.Expect(admin.Create(ctx, u)).To(Succeed(), "create %s %s", u.GetKind(), u.GetName())
				if ns == shop {
					obj, err := sch.New(u.GroupVersionKind())
					g.Expect(err).NotTo(HaveOccurred())
					o := obj.(client.Object)
					o.SetNamespace(ns)
					o.SetName(u.GetName())
					created = append(created, o)
				}
			}
		}
		g.Expect(admin.Create(ctx, &corev1.Secret{ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}})).To(Succeed())
		g.Expect(admin.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"customers": "c-1\nc-2,bo@example.com\n"}})).To(Succeed())
		svy := npsSurvey(ns, "quarterly-nps")
		svy.Spec.Trigger = nil
		svy.Spec.Schedule = &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers"}}
		svy.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: "https://mailer.example.com/invitations", SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}}
		g.Expect(admin.Create(ctx, svy)).To(Succeed())
		if ns == shop {
			created = append(created, &cxv1.Survey{ObjectMeta: metaOf(ns, svy.Name)})
		}
	}

	t.Log("every object in the watched namespace becomes Ready, its collector live")
	for _, obj := range created {
		g.Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
			ready := meta.FindStatusCondition(conditionsOf(obj), cxv1.ReadyCondition)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), "%T %s: %s %s", obj, obj.GetName(), ready.Reason, ready.Message)
		}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
	}
	t.Log("the Survey read the user's signing key: its deliveries are not held back")
	g.Eventually(func(g Gomega) {
		svy := &cxv1.Survey{}
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: "quarterly-nps"}, svy)).To(Succeed())
		c := meta.FindStatusCondition(svy.Status.Conditions, cxv1.DeliveringCondition)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%s: %s", c.Reason, c.Message)
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	t.Log("the manager made the collector's objects, the token Secrets, the wave CronJob and the alert rules")
	for _, obj := range []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metaOf(shop, CollectorName)},
		&corev1.Service{ObjectMeta: metaOf(shop, CollectorName)},
		&appsv1.StatefulSet{ObjectMeta: metaOf(shop, CollectorName)},
		&corev1.ConfigMap{ObjectMeta: metaOf(shop, CollectorConfigMapName)},
		&corev1.Secret{ObjectMeta: metaOf(shop, ReadTokenSecretName)},
		&corev1.Secret{ObjectMeta: metaOf(shop, TouchpointTokenSecretName("support-chat"))},
		&corev1.Secret{ObjectMeta: metaOf(shop, SurveyTokenSecretName("support-nps"))},
		&batchv1.CronJob{ObjectMeta: metaOf(shop, waveJobName("quarterly-nps"))},
		unstructuredOf(ServiceMonitorGVK, shop, CollectorName),
		unstructuredOf(PrometheusRuleGVK, shop, prometheusRuleName("support-nps-40")),
	} {
		g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed(), "%T %s", obj, obj.GetName())
	}
	t.Log("the collector's config carries the namespace's data policy, and the Secrets of customer data are made")
	configOf := func(g Gomega) renderedConfig {
		var cm corev1.ConfigMap
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorConfigMapName}, &cm)).To(Succeed())
		var cfg renderedConfig
		g.Expect(yaml.Unmarshal([]byte(cm.Data[CollectorConfigKey]), &cfg)).To(Succeed())
		return cfg
	}
	g.Eventually(func(g Gomega) {
		cfg := configOf(g)
		g.Expect(cfg.Retention).To(Equal("45d"))
		g.Expect(cfg.ContactRetention).To(Equal("3d"))
		g.Expect(cfg.PseudonymizeCustomers).To(BeTrue())
		g.Expect(cfg.CustomerDataTokenSHA256).To(HaveLen(1))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	var idKey corev1.Secret
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CustomerIDKeySecretName}, &idKey)).To(Succeed())
	g.Expect(idKey.Data[CustomerIDKeyKey]).To(HaveLen(32))
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CustomerDataTokenSecretName}, &corev1.Secret{})).To(Succeed())
	t.Log("a changed annotation reaches the config through the manager's watch of its own Namespace")
	g.Expect(admin.Get(ctx, client.ObjectKey{Name: shop}, &shopNS)).To(Succeed())
	shopNS.Annotations[RetentionAnnotation] = "50d"
	shopNS.Annotations[ContactRetentionAnnotation] = "1d"
	g.Expect(admin.Update(ctx, &shopNS)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cfg := configOf(g)
		g.Expect(cfg.Retention).To(Equal("50d"))
		g.Expect(cfg.ContactRetention).To(Equal("1d"))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	var lease coordinationv1.Lease
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: system, Name: "manager.cxop.dev"}, &lease)).To(Succeed())
	g.Expect(*lease.Spec.HolderIdentity).NotTo(BeEmpty())

	t.Log("a namespace moved to PostgreSQL and back: the manager replaces its workload with the verbs it holds")
	g.Expect(admin.Create(ctx, &corev1.Secret{ObjectMeta: metaOf(shop, "shop-db"), StringData: map[string]string{"dsn": "postgres://cxop@db.internal/cx_shop"}})).To(Succeed())
	setStore := func(store string) {
		g.Eventually(func() error {
			if err := admin.Get(ctx, client.ObjectKey{Name: shop}, &shopNS); err != nil {
				return err
			}
			shopNS.Annotations[StoreAnnotation] = store
			shopNS.Annotations[PostgresSecretAnnotation] = "shop-db"
			return admin.Update(ctx, &shopNS)
		}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	}
	gone := func(obj client.Object) func() bool {
		return func() bool { return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj)) }
	}
	// The old workload is deleted in the foreground, and the new one made
	// only once it is gone; no garbage collector runs here, so the test
	// removes its finalizer as the collector would once its pods are gone.
	switchOver := func(old, next client.Object) {
		g.Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(old), old)).To(Succeed())
			g.Expect(old.GetFinalizers()).To(ContainElement(metav1.FinalizerDeleteDependents))
		}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
		g.Expect(gone(next)()).To(BeTrue(), "%T made while the old workload is there", next)
		old.SetFinalizers(nil)
		g.Expect(admin.Update(ctx, old)).To(Succeed())
	}
	setStore(StorePostgres)
	switchOver(&appsv1.StatefulSet{ObjectMeta: metaOf(shop, CollectorName)}, &appsv1.Deployment{ObjectMeta: metaOf(shop, CollectorName)})
	g.Eventually(func(g Gomega) {
		var dep appsv1.Deployment
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorName}, &dep)).To(Succeed())
		g.Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--store=postgres"))
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorName}, &policyv1.PodDisruptionBudget{})).To(Succeed())
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Eventually(gone(&appsv1.StatefulSet{ObjectMeta: metaOf(shop, CollectorName)}), 30*time.Second, 100*time.Millisecond).Should(BeTrue())
	setStore(StoreEmbedded)
	switchOver(&appsv1.Deployment{ObjectMeta: metaOf(shop, CollectorName)}, &appsv1.StatefulSet{ObjectMeta: metaOf(shop, CollectorName)})
	g.Eventually(func() error {
		return admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorName}, &appsv1.StatefulSet{})
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Eventually(gone(&appsv1.Deployment{ObjectMeta: metaOf(shop, CollectorName)}), 30*time.Second, 100*time.Millisecond).Should(BeTrue())
	g.Eventually(gone(&policyv1.PodDisruptionBudget{ObjectMeta: metaOf(shop, CollectorName)}), 30*time.Second, 100*time.Millisecond).Should(BeTrue())

	t.Log("the namespace it does not watch is left alone")
	for _, name := range []string{"support-chat", "order-email"} {
		tp := &cxv1.Touchpoint{}
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: other, Name: name}, tp)).To(Succeed())
		g.Expect(tp.Status.Conditions).To(BeEmpty(), "Touchpoint %s/%s has a status", other, name)
	}
	for _, obj := range []client.Object{
		&appsv1.StatefulSet{ObjectMeta: metaOf(other, CollectorName)},
		&corev1.Secret{ObjectMeta: metaOf(other, ReadTokenSecretName)},
	} {
		g.Expect(apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj))).To(BeTrue(), "%T %s/%s exists", obj, other, obj.GetName())
	}

	t.Log("as the manager: a Secret of its namespaces is readable, one elsewhere is refused")
	as, err := client.New(managerCfg, client.Options{Scheme: sch})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(as.Get(ctx, client.ObjectKey{Namespace: shop, Name: "mailer"}, &corev1.Secret{})).To(Succeed())
	for _, ns := range []string{other, system, "kube-system"} {
		err := as.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mailer"}, &corev1.Secret{})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "get Secret in %s: %v", ns, err)
	}
	err = as.List(ctx, &corev1.SecretList{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "list Secrets of every namespace: %v", err)
	t.Log("as the manager: its Namespaces are readable by name, no other, and they cannot be listed at large")
	g.Expect(as.Get(ctx, client.ObjectKey{Name: support}, &corev1.Namespace{})).To(Succeed())
	g.Expect(as.List(ctx, &corev1.NamespaceList{}, client.MatchingFields{"metadata.name": shop})).To(Succeed())
	err = as.Get(ctx, client.ObjectKey{Name: other}, &corev1.Namespace{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "get Namespace %s: %v", other, err)
	err = as.List(ctx, &corev1.NamespaceList{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "list every Namespace: %v", err)
	err = as.Update(ctx, &shopNS)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "update a Namespace: %v", err)
	err = as.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorName}, &corev1.PersistentVolumeClaim{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "get a PVC (the manager only deletes them): %v", err)

	t.Log("as the manager, in its own namespace: verbs it does not use are refused")
	var sts appsv1.StatefulSet
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: CollectorName}, &sts)).To(Succeed())
	err = as.Update(ctx, &sts)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "update the StatefulSet (the manager patches it): %v", err)
	var mailer corev1.Secret
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: "mailer"}, &mailer)).To(Succeed())
	err = as.Patch(ctx, &mailer, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`)))
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "patch a Secret: %v", err)
	err = as.Delete(ctx, &cxv1.Touchpoint{ObjectMeta: metaOf(shop, "web-shop")})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "delete a Touchpoint (the manager only reads specs): %v", err)
	var target cxv1.CXTarget
	g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: shop, Name: "support-nps-40"}, &target)).To(Succeed())
	err = as.Status().Update(ctx, &target)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "update a status (the manager patches it): %v", err)

	t.Log("the last Touchpoint gone, the manager removes the collector's objects and, as configured, its PVC")
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metaOf(shop, collectorVolumeData+"-"+CollectorName+"-0"), Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}}
	g.Expect(admin.Create(ctx, pvc)).To(Succeed())
	g.Expect(admin.DeleteAllOf(ctx, &cxv1.Touchpoint{}, client.InNamespace(shop))).To(Succeed())
	for _, obj := range []client.Object{
		&appsv1.StatefulSet{ObjectMeta: metaOf(shop, CollectorName)},
		&corev1.Service{ObjectMeta: metaOf(shop, CollectorName)},
		&corev1.ServiceAccount{ObjectMeta: metaOf(shop, CollectorName)},
		&corev1.ConfigMap{ObjectMeta: metaOf(shop, CollectorConfigMapName)},
		unstructuredOf(ServiceMonitorGVK, shop, CollectorName),
	} {
		g.Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj))
		}, 30*time.Second, 100*time.Millisecond).Should(BeTrue(), "%T %s is not deleted", obj, obj.GetName())
	}
	// Without a PV controller the protection finalizer may hold the PVC
	// with only its deletion timestamp set.
	g.Eventually(func() bool {
		var got corev1.PersistentVolumeClaim
		err := admin.Get(ctx, client.ObjectKeyFromObject(pvc), &got)
		return apierrors.IsNotFound(err) || (err == nil && got.DeletionTimestamp != nil)
	}, 30*time.Second, 100*time.Millisecond).Should(BeTrue(), "the collector's PVC is not deleted")
}

// splitNamespacesRule separates the rule for Namespace objects from the
// manager's other rules, as the chart's namespaced mode does.
func splitNamespacesRule(t *testing.T, rules []rbacv1.PolicyRule) (rbacv1.PolicyRule, []rbacv1.PolicyRule) {
	t.Helper()
	var ns rbacv1.PolicyRule
	var rest []rbacv1.PolicyRule
	for _, r := range rules {
		if len(r.APIGroups) == 1 && r.APIGroups[0] == "" && len(r.Resources) == 1 && r.Resources[0] == "namespaces" {
			ns = r
			continue
		}
		rest = append(rest, r)
	}
	if len(ns.Verbs) == 0 {
		t.Fatal("role.yaml has no rule of its own for namespaces")
	}
	return ns, rest
}

func unstructuredOf(gvk schema.GroupVersionKind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}
