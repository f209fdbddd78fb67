package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/promrules"
)

// Ports of the collector, in the pod and on the Service. The API (and the
// probes) are for the cluster; the survey page has a port of its own, the
// only one to route from the internet; metrics are apart from both.
const (
	// CollectorPort serves the API and the probes (Service port "http").
	CollectorPort = 8080
	// CollectorPagePort serves the hosted survey page alone (Service port
	// "page"), for an Ingress or Gateway.
	CollectorPagePort = 8081
	// CollectorMetricsPort serves /metrics (Service port "metrics").
	CollectorMetricsPort = 9090
)

// Paths inside the collector's container.
const (
	collectorDataDir    = "/var/lib/cxop"
	collectorConfigDir  = "/etc/cxop"
	collectorSecretsDir = "/etc/cxop-secrets"
	collectorRunAsUser  = 65532 // the distroless "nonroot" user
	collectorVolumeData = "data"
)

// KubeCollectorRuntime runs each namespace's collector as a one-replica
// StatefulSet with a PersistentVolumeClaim for its embedded store, a
// Service, and a ServiceAccount that mounts no API token (the collector
// never talks to the API server).
type KubeCollectorRuntime struct {
	Client client.Client
	// APIReader, when set, reads past the manager's cache: a store switch
	// asks it whether the old workload is there before creating the new
	// one.
	APIReader client.Reader
	Image     string
	// ImagePullSecrets name Secrets in each collector's namespace that the
	// kubelet pulls Image with (a private registry or mirror).
	ImagePullSecrets []string
	Resources        corev1.ResourceRequirements
	// StorageSize and StorageClass shape the data PVC; an empty class uses
	// the cluster's default.
	StorageSize  resource.Quantity
	StorageClass string
	// BlockCacheSize is the collector's block cache (--block-cache-size);
	// zero leaves the collector's default.
	BlockCacheSize resource.Quantity
	// DeletePVC deletes the data PVC with the collector when the last
	// Touchpoint of a namespace goes. The default keeps it, so that
	// deleting and re-applying Touchpoints loses no history.
	DeletePVC bool
	// ServiceMonitors is set when the cluster serves the Prometheus
	// Operator's ServiceMonitor kind: each collector then gets one, so
	// its metrics (and the alerts built on them) reach Prometheus.
	ServiceMonitors bool
	// PrometheusRules is set when the cluster serves the Prometheus
	// Operator's PrometheusRule kind: each collector then gets the alerts
	// on its data volume and store (internal/promrules.Collector).
	PrometheusRules bool
	// PageURLTemplate is where customers reach a namespace's survey page (through
	// an Ingress or Gateway the platform team runs), with "{namespace}"
	// replaced by the namespace, such as "https://cx.example.com/{namespace}".
	// Empty: surveys send no invitations.
	PageURLTemplate string
	// WebhookAllowHosts may be reached by survey webhooks although they
	// resolve to internal addresses (an in-cluster mailer).
	WebhookAllowHosts []string
	// AllowInsecureWebhooks lets survey webhooks use plain http URLs; by
	// default collectors send them over https only.
	AllowInsecureWebhooks bool
	// WebhookDenyCIDRs are ranges survey webhooks may not reach besides
	// the built-in ones: the cluster's pod and Service CIDRs.
	WebhookDenyCIDRs []string
	// Delivery sets the collectors' webhook retry window and invitation
	// rate limits; zero leaves the collector's defaults.
	Delivery collectorapi.DeliveryOptions
	// Postgres shapes the collectors of namespaces on PostgreSQL.
	Postgres PostgresCollectors
}

// PostgresCollectors shapes the collectors of namespaces whose records are
// kept in PostgreSQL: a Deployment of stateless replicas.
type PostgresCollectors struct {
	// SecretKey is the key of the connection string in the namespace's
	// Secret (empty: DefaultPostgresSecretKey).
	SecretKey string
	// Replicas is the Deployment's replica count (zero: 2).
	Replicas int32
	// NoStatementCache runs the collectors with
	// --postgres-statement-cache=false, for a PgBouncer in transaction
	// pooling mode that keeps no prepared statements.
	NoStatementCache bool
	// EngineLeaseTTL runs the collectors with --postgres-engine-lease-ttl
	// (zero: the collector's default): how soon another replica takes over
	// the survey engine work of one that died.
	EngineLeaseTTL time.Duration
}

// DefaultPostgresReplicas is how many collectors serve a namespace on
// PostgreSQL unless the manager is told otherwise.
const DefaultPostgresReplicas = 2

func (p PostgresCollectors) secretKey() string {
	if p.SecretKey == "" {
		return DefaultPostgresSecretKey
	}
	return p.SecretKey
}

func (p PostgresCollectors) replicas() int32 {
	if p.Replicas <= 0 {
		return DefaultPostgresReplicas
	}
	return p.Replicas
}

// ServiceMonitorGVK is the Prometheus Operator's scrape configuration kind.
var ServiceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors,verbs=get;create;update;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete

func (k *KubeCollectorRuntime) serviceMonitor(namespace string) *unstructured.Unstructured {
	return collectorObject(ServiceMonitorGVK, namespace)
}

// collectorObject is the namespace's object of a kind the manager knows
// only as unstructured (the Prometheus Operator's), named as the collector.
func collectorObject(gvk schema.GroupVersionKind, namespace string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	obj.SetNamespace(namespace)
	obj.SetName(CollectorName)
	return obj
}

var _ StoreRuntime = &KubeCollectorRuntime{}

// URL is the in-cluster address of the namespace's collector Service.
func (k *KubeCollectorRuntime) URL(namespace string) string {
	return fmt.Sprintf("http://%s.%s.svc:%d", CollectorName, namespace, CollectorPort)
}

// ServesSurveyPages reports whether a page URL template is configured.
func (k *KubeCollectorRuntime) ServesSurveyPages() bool { return k.PageURLTemplate != "" }

// AllowsInsecureWebhooks reports whether collectors run with
// --allow-insecure-webhooks.
func (k *KubeCollectorRuntime) AllowsInsecureWebhooks() bool { return k.AllowInsecureWebhooks }

// PageURL is PageURLTemplate with the namespace filled in.
func (k *KubeCollectorRuntime) PageURL(namespace string) (string, error) {
	return strings.TrimSuffix(strings.ReplaceAll(k.PageURLTemplate, "{namespace}", namespace), "/"), nil
}

// Ensure runs the namespace's collector on the embedded store.
func (k *KubeCollectorRuntime) Ensure(ctx context.Context, namespace string, files collectorapi.Files) (string, error) {
	return k.EnsureStore(ctx, namespace, files, CollectorStore{Kind: StoreEmbedded})
}

// EnsureStore creates or updates the ServiceAccount, the Service and the
// workload of the namespace's store: a StatefulSet for the embedded store,
// a Deployment and a PodDisruptionBudget for PostgreSQL. The other store's
// workload is deleted first, in the foreground, and the new one created
// only once it (and so every pod of it) is gone: until then EnsureStore
// answers a *storeSwitching, so that two stores never take the
// namespace's records at once. The embedded store's PVC stays unless
// DeletePVC is set.
// The config reaches the pods through the ConfigMap volume, which the
// kubelet refreshes in place; the collector reloads it without a restart,
// so the pod template carries no config hash.
func (k *KubeCollectorRuntime) EnsureStore(ctx context.Context, namespace string, _ collectorapi.Files, store CollectorStore) (string, error) {
	if store.Kind == StorePostgres && store.PostgresSecret == "" {
		return "", needsAction(fmt.Errorf("namespace %s: no Secret named for the PostgreSQL connection string", namespace))
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}
	if _, err := controllerutil.CreateOrPatch(ctx, k.Client, sa, func() error {
		sa.Labels = mergeLabels(sa.Labels, collectorLabels())
		sa.AutomountServiceAccountToken = ptr.To(false)
		return nil
	}); err != nil {
		return "", fmt.Errorf("apply serviceaccount: %w", err)
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}
	if _, err := controllerutil.CreateOrPatch(ctx, k.Client, svc, func() error {
		svc.Labels = mergeLabels(svc.Labels, mergeLabels(collectorLabels(), collectorSelector()))
		svc.Spec.Selector = collectorSelector()
		svc.Spec.Ports = []corev1.ServicePort{
			{Name: "http", Port: CollectorPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
			{Name: "page", Port: CollectorPagePort, TargetPort: intstr.FromString("page"), Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: CollectorMetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("apply service: %w", err)
	}

	meta := metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}
	if store.Kind == StorePostgres {
		old, err := k.retireWorkload(ctx, &appsv1.StatefulSet{ObjectMeta: meta}, &appsv1.Deployment{ObjectMeta: meta})
		if err != nil {
			return "", err
		}
		if old {
			if k.DeletePVC {
				if err := k.deleteAll(ctx, []client.Object{k.dataPVC(namespace)}); err != nil {
					return "", err
				}
			}
			return "", &storeSwitching{namespace: namespace, from: StoreEmbedded, to: StorePostgres, old: "StatefulSet", next: "Deployment"}
		}
		if err := k.applyPostgres(ctx, namespace, store); err != nil {
			return "", err
		}
	} else {
		if _, err := k.deletePresent(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: meta}); err != nil {
			return "", err
		}
		old, err := k.retireWorkload(ctx, &appsv1.Deployment{ObjectMeta: meta}, &appsv1.StatefulSet{ObjectMeta: meta})
		if err != nil {
			return "", err
		}
		if old {
			return "", &storeSwitching{namespace: namespace, from: StorePostgres, to: StoreEmbedded, old: "Deployment", next: "StatefulSet"}
		}
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}
		if _, err := controllerutil.CreateOrPatch(ctx, k.Client, sts, func() error {
			k.mutateStatefulSet(sts)
			return nil
		}); err != nil {
			return "", fmt.Errorf("apply statefulset: %w", err)
		}
	}

	if k.ServiceMonitors {
		sm := k.serviceMonitor(namespace)
		if _, err := controllerutil.CreateOrUpdate(ctx, k.Client, sm, func() error {
			sm.SetLabels(mergeLabels(sm.GetLabels(), collectorLabels()))
			selector := map[string]any{}
			for key, v := range collectorSelector() {
				selector[key] = v
			}
			return unstructured.SetNestedField(sm.Object, map[string]any{
				"selector":  map[string]any{"matchLabels": selector},
				"endpoints": []any{map[string]any{"port": "metrics", "path": "/metrics", "interval": "30s"}},
			}, "spec")
		}); err != nil {
			return "", fmt.Errorf("apply servicemonitor: %w", err)
		}
	}
	if k.PrometheusRules {
		if err := k.applyCollectorRules(ctx, namespace); err != nil {
			return "", err
		}
	}
	return k.URL(namespace), nil
}

// collectorRules is the namespace's PrometheusRule with the collector's
// alerts.
func (k *KubeCollectorRuntime) collectorRules(namespace string) *unstructured.Unstructured {
	return collectorObject(PrometheusRuleGVK, namespace)
}

func (k *KubeCollectorRuntime) applyCollectorRules(ctx context.Context, namespace string) error {
	groups, err := promrules.Collector(namespace)
	if err != nil {
		return fmt.Errorf("generate collector alert rules: %w", err)
	}
	data, err := json.Marshal(groups)
	if err != nil {
		return err
	}
	value, err := ruleGroups(data)
	if err != nil {
		return err
	}
	rule := k.collectorRules(namespace)
	if _, err := controllerutil.CreateOrUpdate(ctx, k.Client, rule, func() error {
		rule.SetLabels(mergeLabels(rule.GetLabels(), collectorLabels()))
		return unstructured.SetNestedField(rule.Object, value, "spec", "groups")
	}); err != nil {
		return fmt.Errorf("apply collector PrometheusRule: %w", err)
	}
	return nil
}

// Remove deletes the workload (of either store), Service and
// ServiceAccount. The PVC follows only when DeletePVC is set, through the
// StatefulSet's retention policy (and explicitly, for clusters where that
// policy is disabled).
func (k *KubeCollectorRuntime) Remove(ctx context.Context, namespace string) error {
	if err := k.removeEmbedded(ctx, namespace); err != nil {
		return err
	}
	if err := k.removePostgres(ctx, namespace); err != nil {
		return err
	}
	meta := metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}
	objs := []client.Object{&corev1.Service{ObjectMeta: meta}, &corev1.ServiceAccount{ObjectMeta: meta}}
	if k.ServiceMonitors {
		objs = append(objs, k.serviceMonitor(namespace))
	}
	if k.PrometheusRules {
		objs = append(objs, k.collectorRules(namespace))
	}
	return k.deleteAll(ctx, objs)
}

// removeEmbedded deletes the embedded store's StatefulSet, and its PVC
// when DeletePVC is set.
func (k *KubeCollectorRuntime) removeEmbedded(ctx context.Context, namespace string) error {
	objs := []client.Object{&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}}
	if k.DeletePVC {
		objs = append(objs, k.dataPVC(namespace))
	}
	return k.deleteAll(ctx, objs)
}

// dataPVC is the embedded store's PVC, made from the StatefulSet's claim
// template.
func (k *KubeCollectorRuntime) dataPVC(namespace string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
		Namespace: namespace, Name: collectorVolumeData + "-" + CollectorName + "-0",
	}}
}

// deletePresent deletes those of objs that the client (the manager's
// cache, in a cluster) holds, and reports whether there were any. A
// namespace that stays on its store then costs no API request for the
// other store's workload at each reconcile.
func (k *KubeCollectorRuntime) deletePresent(ctx context.Context, objs ...client.Object) (bool, error) {
	var present []client.Object
	for _, obj := range objs {
		err := k.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
		present = append(present, obj)
	}
	return len(present) > 0, k.deleteAll(ctx, present)
}

// storeSwitching is a namespace whose collector moves to the other store:
// the old store's workload is being deleted, and the new one is created
// only once it is gone. Both select the pods the collector Service sends
// to; were they up together, records would land in both stores.
type storeSwitching struct {
	namespace, from, to string
	// old and next name the workloads' kinds.
	old, next string
}

func (e *storeSwitching) Error() string {
	return fmt.Sprintf("namespace %s: the collector is switching from the %s store to %s: its %s is being deleted, and the %s is created once its pods are gone, so that the collector Service never sends records to both stores",
		e.namespace, e.from, e.to, e.old, e.next)
}

// retireWorkload deletes old, the other store's workload, in the
// foreground: the garbage collector deletes its pods first, and old only
// after they are gone. It reports whether old is still there, in which case
// the caller must not create next yet. The manager's cache may not hold an
// old workload created moments ago (a namespace switched at once): before
// next is first created, the API server is asked.
func (k *KubeCollectorRuntime) retireWorkload(ctx context.Context, old, next client.Object) (bool, error) {
	key := client.ObjectKeyFromObject(old)
	err := k.Client.Get(ctx, key, old)
	if apierrors.IsNotFound(err) && k.APIReader != nil {
		switch nerr := k.Client.Get(ctx, client.ObjectKeyFromObject(next), next); {
		case nerr == nil:
			return false, nil // switched already
		case !apierrors.IsNotFound(nerr):
			return false, fmt.Errorf("get %T %s: %w", next, key, nerr)
		}
		err = k.APIReader.Get(ctx, key, old)
	}
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %T %s: %w", old, key, err)
	}
	if old.GetDeletionTimestamp().IsZero() || !controllerutil.ContainsFinalizer(old, metav1.FinalizerDeleteDependents) {
		err := k.Client.Delete(ctx, old, client.PropagationPolicy(metav1.DeletePropagationForeground))
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("delete %T %s: %w", old, key, err)
		}
	}
	return true, nil
}

// removePostgres deletes the PostgreSQL collectors' Deployment and
// PodDisruptionBudget. The database is the platform team's and keeps the
// namespace's records.
func (k *KubeCollectorRuntime) removePostgres(ctx context.Context, namespace string) error {
	meta := metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}
	return k.deleteAll(ctx, []client.Object{&appsv1.Deployment{ObjectMeta: meta}, &policyv1.PodDisruptionBudget{ObjectMeta: meta}})
}

func (k *KubeCollectorRuntime) deleteAll(ctx context.Context, objs []client.Object) error {
	for _, obj := range objs {
		if err := k.Client.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

func collectorSelector() map[string]string {
	return map[string]string{"app.kubernetes.io/name": CollectorName, "app.kubernetes.io/component": "collector"}
}

func mergeLabels(have, want map[string]string) map[string]string {
	if have == nil {
		have = map[string]string{}
	}
	for k, v := range want {
		have[k] = v
	}
	return have
}

// collectorArgs is the collector container's command line for store.
func (k *KubeCollectorRuntime) collectorArgs(store string) []string {
	args := []string{"collector",
		fmt.Sprintf("--listen=:%d", CollectorPort),
		fmt.Sprintf("--page-listen=:%d", CollectorPagePort),
		fmt.Sprintf("--metrics-listen=:%d", CollectorMetricsPort),
	}
	if store == StorePostgres {
		args = append(args, "--store="+StorePostgres, "--postgres-dsn-file="+collectorPostgresDir+"/"+k.Postgres.secretKey())
		if k.Postgres.EngineLeaseTTL != 0 {
			args = append(args, "--postgres-engine-lease-ttl="+k.Postgres.EngineLeaseTTL.String())
		}
		if k.Postgres.NoStatementCache {
			args = append(args, "--postgres-statement-cache=false")
		}
	} else {
		args = append(args, "--data-dir="+collectorDataDir)
	}
	args = append(args,
		"--config="+collectorConfigDir+"/"+CollectorConfigKey,
		"--secrets="+collectorSecretsDir+"/"+CollectorSecretsKey,
	)
	if len(k.WebhookAllowHosts) > 0 {
		args = append(args, "--webhook-allow-hosts="+strings.Join(k.WebhookAllowHosts, ","))
	}
	if len(k.WebhookDenyCIDRs) > 0 {
		args = append(args, "--webhook-deny-cidrs="+strings.Join(k.WebhookDenyCIDRs, ","))
	}
	if k.AllowInsecureWebhooks {
		args = append(args, "--allow-insecure-webhooks")
	}
	// The block cache is the embedded store's.
	if store != StorePostgres && !k.BlockCacheSize.IsZero() {
		args = append(args, "--block-cache-size="+k.BlockCacheSize.String())
	}
	args = append(args, k.Delivery.Args()...)
	return args
}

// collectorPorts are the container's ports, named as the Service's.
func collectorPorts() []corev1.ContainerPort {
	return []corev1.ContainerPort{
		{Name: "http", ContainerPort: CollectorPort, Protocol: corev1.ProtocolTCP},
		{Name: "page", ContainerPort: CollectorPagePort, Protocol: corev1.ProtocolTCP},
		{Name: "metrics", ContainerPort: CollectorMetricsPort, Protocol: corev1.ProtocolTCP},
	}
}

// pullSecrets refers a pod to image pull Secrets by name; nil for none.
func pullSecrets(names []string) []corev1.LocalObjectReference {
	var refs []corev1.LocalObjectReference
	for _, n := range names {
		refs = append(refs, corev1.LocalObjectReference{Name: n})
	}
	return refs
}

// collectorEnv sets GOMEMLIMIT a tenth under the container's memory limit.
// The image's static build keeps Pebble's memtables and block cache on the
// Go heap; the soft limit makes the runtime collect harder as the heap nears
// the cgroup's limit instead of being OOM-killed by it.
func (k *KubeCollectorRuntime) collectorEnv() []corev1.EnvVar {
	limit, ok := k.Resources.Limits[corev1.ResourceMemory]
	if !ok || limit.IsZero() {
		return nil
	}
	return []corev1.EnvVar{{Name: "GOMEMLIMIT", Value: strconv.FormatInt(limit.Value()/10*9, 10)}}
}

// mutateStatefulSet sets every field cxop owns. Fields a StatefulSet does
// not allow to change (selector, volume claim templates) are set only at
// creation.
func (k *KubeCollectorRuntime) mutateStatefulSet(sts *appsv1.StatefulSet) {
	labels := mergeLabels(collectorLabels(), collectorSelector())
	sts.Labels = mergeLabels(sts.Labels, labels)
	creating := sts.ResourceVersion == ""
	if creating {
		sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: collectorSelector()}
		sts.Spec.ServiceName = CollectorName
		pvc := corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: collectorVolumeData, Labels: labels},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: k.StorageSize}},
			},
		}
		if k.StorageClass != "" {
			pvc.Spec.StorageClassName = ptr.To(k.StorageClass)
		}
		sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{pvc}
	}
	whenDeleted := appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if k.DeletePVC {
		whenDeleted = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	sts.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: whenDeleted, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
	}
	// One writer per store: the embedded engine is single-process.
	sts.Spec.Replicas = ptr.To[int32](1)
	sts.Spec.Template.Labels = labels
	sts.Spec.Template.Spec = k.podSpec(StoreEmbedded,
		corev1.VolumeMount{Name: collectorVolumeData, MountPath: collectorDataDir}, nil)
}

// podSpec is a collector pod on store, with the store's volume mount
// (the data PVC, or the connection string's Secret) and, for a Secret, its
// volume.
func (k *KubeCollectorRuntime) podSpec(store string, storeMount corev1.VolumeMount, storeVolume *corev1.Volume) corev1.PodSpec {
	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds: period, TimeoutSeconds: 2, FailureThreshold: 3,
		}
	}
	startup := probe("/healthz", 2)
	// The store replays its log before /readyz answers; /healthz answers
	// from the first second, so liveness never kills a long replay.
	startup.FailureThreshold = 30
	spec := corev1.PodSpec{
		ServiceAccountName:           CollectorName,
		AutomountServiceAccountToken: ptr.To(false),
		ImagePullSecrets:             pullSecrets(k.ImagePullSecrets),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](collectorRunAsUser),
			RunAsGroup:     ptr.To[int64](collectorRunAsUser),
			FSGroup:        ptr.To[int64](collectorRunAsUser),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		// SIGTERM makes the collector finish in-flight requests and write a
		// checkpoint, which shortens the next start.
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		Containers: []corev1.Container{{
			Name:           "collector",
			Image:          k.Image,
			Args:           k.collectorArgs(store),
			Env:            k.collectorEnv(),
			Ports:          collectorPorts(),
			Resources:      k.Resources,
			StartupProbe:   startup,
			LivenessProbe:  probe("/healthz", 10),
			ReadinessProbe: probe("/readyz", 5),
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				RunAsNonRoot:             ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			VolumeMounts: []corev1.VolumeMount{
				storeMount,
				{Name: "config", MountPath: collectorConfigDir, ReadOnly: true},
				{Name: "secrets", MountPath: collectorSecretsDir, ReadOnly: true},
			},
		}},
		Volumes: []corev1.Volume{{
			Name: "config",
			VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: CollectorConfigMapName},
			}},
		}, {
			Name: "secrets",
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: CollectorSecretsName, DefaultMode: ptr.To[int32](0o440),
			}},
		}},
	}
	if storeVolume != nil {
		spec.Volumes = append(spec.Volumes, *storeVolume)
	}
	return spec
}

// collectorVolumePostgres is the volume of the connection string's Secret.
const collectorVolumePostgres = "postgres"

// applyPostgres creates or updates the Deployment of a namespace's
// collectors on PostgreSQL and its PodDisruptionBudget.
func (k *KubeCollectorRuntime) applyPostgres(ctx context.Context, namespace string, store CollectorStore) error {
	labels := mergeLabels(collectorLabels(), collectorSelector())
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}
	if _, err := controllerutil.CreateOrPatch(ctx, k.Client, dep, func() error {
		dep.Labels = mergeLabels(dep.Labels, labels)
		if dep.ResourceVersion == "" {
			dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: collectorSelector()}
		}
		dep.Spec.Replicas = ptr.To(k.Postgres.replicas())
		// A rollout adds a replica before it takes one away: the
		// replicas hold no state, so there is no reason to serve with
		// fewer while it runs.
		dep.Spec.Strategy = appsv1.DeploymentStrategy{
			Type: appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
			},
		}
		dep.Spec.Template.Labels = labels
		// Only the connection string's key is projected: whatever else
		// the platform team keeps in the Secret stays out of the pod.
		key := k.Postgres.secretKey()
		spec := k.podSpec(StorePostgres,
			corev1.VolumeMount{Name: collectorVolumePostgres, MountPath: collectorPostgresDir, ReadOnly: true},
			&corev1.Volume{Name: collectorVolumePostgres, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: store.PostgresSecret, DefaultMode: ptr.To[int32](0o440),
				Items: []corev1.KeyToPath{{Key: key, Path: key}},
			}}})
		// Replicas on different nodes: a node drain or loss then stops
		// one of them, not the namespace's ingest. Preferred, not
		// required, so a one-node cluster still runs them all.
		spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: &metav1.LabelSelector{MatchLabels: collectorSelector()},
					TopologyKey:   corev1.LabelHostname,
				},
			}},
		}}
		dep.Spec.Template.Spec = spec
		return nil
	}); err != nil {
		return fmt.Errorf("apply deployment: %w", err)
	}

	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: CollectorName}}
	if _, err := controllerutil.CreateOrPatch(ctx, k.Client, pdb, func() error {
		pdb.Labels = mergeLabels(pdb.Labels, labels)
		pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: collectorSelector()}
		// maxUnavailable 1 rather than minAvailable 1: the same with two
		// replicas, but it never blocks a node drain when the manager runs
		// one replica, and keeps all but one serving with three or more.
		pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
		pdb.Spec.MinAvailable = nil
		// A replica that is not ready (its database is down) serves
		// nothing: evicting it costs no availability, and must not hold
		// up a drain while the database is away.
		pdb.Spec.UnhealthyPodEvictionPolicy = ptr.To(policyv1.AlwaysAllow)
		return nil
	}); err != nil {
		return fmt.Errorf("apply poddisruptionbudget: %w", err)
	}
	return nil
}
