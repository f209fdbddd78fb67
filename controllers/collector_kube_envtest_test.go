package controllers

import (
	"fmt"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("Collector workloads in a cluster", func() {
	It("creates a StatefulSet whose pods the restricted Pod Security Standard admits, and removes it keeping the data", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		// The API server's PodSecurity admission enforces the standard on
		// pods of a labelled namespace: a pod made from the template must
		// be admitted.
		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ns}, nsObj)).To(Succeed())
		if nsObj.Labels == nil {
			nsObj.Labels = map[string]string{}
		}
		nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())

		rt := &KubeCollectorRuntime{
			Client: k8sClient, Image: "example.com/cxop:test", ImagePullSecrets: []string{"registry-cred"},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
			},
			StorageSize:       resource.MustParse("2Gi"),
			BlockCacheSize:    resource.MustParse("192Mi"),
			ServiceMonitors:   true,
			PrometheusRules:   true,
			PageURLTemplate:   "https://cx.example.com/{namespace}/",
			WebhookAllowHosts: []string{"mailer.internal", "sms.internal"},
			WebhookDenyCIDRs:  []string{"34.118.224.0/20", "34.118.0.0/16"},
			Delivery:          collectorapi.DeliveryOptions{RetryFor: 72 * time.Hour, PerTouchpoint: 500, PerNamespace: 2000},
		}
		url, err := rt.Ensure(ctx, ns, collectorapi.Files{})
		Expect(err).NotTo(HaveOccurred())
		Expect(url).To(Equal("http://cxop-collector." + ns + ".svc:8080"))

		var sts appsv1.StatefulSet
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorName}, &sts)).To(Succeed())
		Expect(*sts.Spec.Replicas).To(BeEquivalentTo(1))
		Expect(sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(appsv1.RetainPersistentVolumeClaimRetentionPolicyType))
		Expect(sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()).To(Equal("2Gi"))
		pod := sts.Spec.Template.Spec
		Expect(*pod.AutomountServiceAccountToken).To(BeFalse())
		c := pod.Containers[0]
		Expect(c.Args).To(ContainElements("collector", "--config=/etc/cxop/config.yaml", "--secrets=/etc/cxop-secrets/secrets.yaml",
			"--webhook-allow-hosts=mailer.internal,sms.internal", "--block-cache-size=192Mi",
			"--listen=:8080", "--page-listen=:8081", "--metrics-listen=:9090", "--webhook-deny-cidrs=34.118.224.0/20,34.118.0.0/16",
			"--webhook-retry-for=72h0m0s", "--invitation-rate-per-touchpoint=500", "--invitation-rate-per-namespace=2000"))
		// https only unless the manager allows plain http.
		Expect(c.Args).NotTo(ContainElement("--allow-insecure-webhooks"))
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		Expect(ports).To(Equal(map[string]int32{"http": 8080, "page": 8081, "metrics": 9090}))
		Expect(c.ReadinessProbe.HTTPGet.Port.StrVal).To(Equal("http"))
		Expect(rt.PageURL(ns)).To(Equal("https://cx.example.com/" + ns))
		Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
		Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/healthz"))
		Expect(c.Resources.Limits.Memory().String()).To(Equal("512Mi"))
		Expect(pod.ImagePullSecrets).To(Equal([]corev1.LocalObjectReference{{Name: "registry-cred"}}))
		// 90% of 512Mi: Pebble's caches are Go heap in the static image.
		Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "GOMEMLIMIT", Value: "483183819"}))

		var sa corev1.ServiceAccount
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorName}, &sa)).To(Succeed())
		Expect(*sa.AutomountServiceAccountToken).To(BeFalse())
		var svc corev1.Service
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorName}, &svc)).To(Succeed())
		// The API, the survey page (the one port to route from the
		// internet) and the metrics, each on its own port.
		svcPorts := map[string]string{}
		for _, p := range svc.Spec.Ports {
			svcPorts[p.Name] = fmt.Sprintf("%d->%s", p.Port, p.TargetPort.StrVal)
		}
		Expect(svcPorts).To(Equal(map[string]string{"http": "8080->http", "page": "8081->page", "metrics": "9090->metrics"}))
		for k, v := range svc.Spec.Selector {
			Expect(sts.Spec.Template.Labels).To(HaveKeyWithValue(k, v))
		}

		// Prometheus finds the collector through a ServiceMonitor that
		// selects its Service.
		sm := rt.serviceMonitor(ns)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(sm), sm)).To(Succeed())
		matchLabels, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		for k, v := range matchLabels {
			Expect(svc.Labels).To(HaveKeyWithValue(k, v))
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		Expect(endpoints).To(ConsistOf(And(HaveKeyWithValue("port", "metrics"), HaveKeyWithValue("path", "/metrics"))))

		// The collector's own alerts: its data volume and its store.
		rules := rt.collectorRules(ns)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(rules), rules)).To(Succeed())
		groups, _, _ := unstructured.NestedSlice(rules.Object, "spec", "groups")
		Expect(groups).To(HaveLen(1))
		ruleList, _, _ := unstructured.NestedSlice(groups[0].(map[string]any), "rules")
		Expect(ruleList).To(ContainElement(HaveKeyWithValue("alert", "CXOPCollectorDataVolumeFilling")))
		Expect(ruleList).To(ContainElement(HaveKeyWithValue("alert", "CXOPCollectorStoreNotWritable")))

		testPod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "template-check", Labels: map[string]string{"check": "psa"}},
			Spec:       *pod.DeepCopy(),
		}
		// The template's PVC volume is added by the StatefulSet controller.
		testPod.Spec.Volumes = append(testPod.Spec.Volumes, corev1.Volume{
			Name: collectorVolumeData, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
		})
		Expect(k8sClient.Create(ctx, testPod)).To(Succeed())

		// The same pod without its security context is refused, which
		// proves the namespace enforces the standard.
		insecure := testPod.DeepCopy()
		insecure.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "insecure"}
		insecure.Spec.Containers[0].SecurityContext = nil
		err = k8sClient.Create(ctx, insecure)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("restricted"))

		// Applying again changes nothing it does not own; allowing plain
		// http reaches the pod's arguments.
		rt.AllowInsecureWebhooks = true
		_, err = rt.Ensure(ctx, ns, collectorapi.Files{})
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorName}, &sts)).To(Succeed())
		Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--allow-insecure-webhooks"))

		Expect(rt.Remove(ctx, ns)).To(Succeed())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(&sts), &appsv1.StatefulSet{}))).To(BeTrue())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(&svc), &corev1.Service{}))).To(BeTrue())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(sm), rt.serviceMonitor(ns)))).To(BeTrue())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(rules), rt.collectorRules(ns)))).To(BeTrue())
	})
})
