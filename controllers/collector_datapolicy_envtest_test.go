package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// newAnnotatedNamespace creates a namespace of its own for one spec, with
// annotations.
func newAnnotatedNamespace(ctx context.Context, annotations map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cx-policy-", Annotations: annotations}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, ns))).To(Succeed())
	})
	return ns.Name
}

// annotateNamespace sets (or, for "", removes) annotations of ns.
func annotateNamespace(ctx context.Context, ns string, annotations map[string]string) {
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	Expect(updateObject(ctx, obj, func() {
		a := obj.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		for k, v := range annotations {
			if v == "" {
				delete(a, k)
			} else {
				a[k] = v
			}
		}
		obj.SetAnnotations(a)
	})).To(Succeed())
}

// renderedConfig is the part of the collector config file these specs
// read, by the field names the collector reads (docs/collector.md).
type renderedConfig struct {
	Retention               string   `json:"retention"`
	ContactRetention        string   `json:"contactRetention"`
	PseudonymizeCustomers   bool     `json:"pseudonymizeCustomers"`
	ReadTokenSHA256         []string `json:"readTokenSHA256"`
	CustomerDataTokenSHA256 []string `json:"customerDataTokenSHA256"`
	Surveys                 []struct {
		Name string `json:"name"`
	} `json:"surveys"`
}

// renderedSecrets is the part of the collector secrets file these specs
// read.
type renderedSecrets struct {
	CustomerIDKey         string `json:"customerIDKey"`
	CustomerIDKeyPrevious string `json:"customerIDKeyPrevious"`
}

// sha256Hex is a token's hash as the collector config holds it.
func sha256Hex(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// collectorConfigOf returns the namespace's rendered collector config, as
// written and parsed.
func collectorConfigOf(ctx context.Context, g Gomega, ns string) (string, renderedConfig) {
	var cm corev1.ConfigMap
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CollectorConfigMapName}, &cm)).To(Succeed())
	raw := cm.Data[CollectorConfigKey]
	var cfg renderedConfig
	g.Expect(yaml.Unmarshal([]byte(raw), &cfg)).To(Succeed())
	return raw, cfg
}

// collectorSecretsOf returns the namespace's collector secrets file.
func collectorSecretsOf(ctx context.Context, g Gomega, ns string) renderedSecrets {
	var sec corev1.Secret
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CollectorSecretsName}, &sec)).To(Succeed())
	var f renderedSecrets
	g.Expect(yaml.Unmarshal(sec.Data[CollectorSecretsKey], &f)).To(Succeed())
	return f
}

// customerIDKeyOf waits for the namespace's customer id key Secret and
// returns its key.
func customerIDKeyOf(ctx context.Context, ns string) []byte {
	var key []byte
	Eventually(func(g Gomega) {
		var sec corev1.Secret
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &sec)).To(Succeed())
		key = sec.Data[CustomerIDKeyKey]
	}).Should(Succeed())
	return key
}

var _ = Describe("Namespace data policy", func() {
	It("renders the manager's defaults and a customer data token into a namespace without annotations", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)

		token := tokenOf(ctx, ns, CustomerDataTokenSecretName)
		readToken := tokenOf(ctx, ns, ReadTokenSecretName)
		Expect(token).NotTo(Equal(readToken))
		Eventually(func(g Gomega) {
			raw, cfg := collectorConfigOf(ctx, g, ns)
			g.Expect(raw).To(MatchRegexp(`(?m)^retention: 400d$`))
			g.Expect(raw).To(MatchRegexp(`(?m)^contactRetention: 7d$`))
			g.Expect(raw).NotTo(ContainSubstring("pseudonymizeCustomers"))
			g.Expect(raw).NotTo(ContainSubstring(token))
			g.Expect(cfg.CustomerDataTokenSHA256).To(Equal([]string{sha256Hex(token)}))
			g.Expect(cfg.ReadTokenSHA256).To(Equal([]string{sha256Hex(readToken)}))
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(BeEmpty())
		}).Should(Succeed())

		var sec corev1.Secret
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerDataTokenSecretName}, &sec)).To(Succeed())
		Expect(sec.Labels).To(HaveKeyWithValue(ManagedByLabel, ManagedByValue))
		Expect(sec.Data).To(HaveLen(1))
		By("no key is made while pseudonymization is off")
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "customer id key Secret: %v", err)
	})

	It("applies the namespace's annotations, follows their changes and keeps the customer id key", func(ctx SpecContext) {
		ns := newAnnotatedNamespace(ctx, map[string]string{
			RetentionAnnotation: "90d", ContactRetentionAnnotation: "36h", PseudonymizeCustomersAnnotation: "true",
		})
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		Expect(k8sClient.Create(ctx, npsSurvey(ns, "support-nps", "chat"))).To(Succeed())

		key := customerIDKeyOf(ctx, ns)
		Expect(key).To(HaveLen(32))
		Expect(strings.Trim(string(key), "\x00")).NotTo(BeEmpty(), "the key is random, not zeros")
		var sec corev1.Secret
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &sec)).To(Succeed())
		Expect(sec.Labels).To(HaveKeyWithValue(ManagedByLabel, ManagedByValue))
		Expect(sec.OwnerReferences).To(BeEmpty(), "the key outlives every Touchpoint")
		Eventually(func(g Gomega) {
			raw, cfg := collectorConfigOf(ctx, g, ns)
			g.Expect(raw).To(MatchRegexp(`(?m)^retention: 90d$`))
			g.Expect(raw).To(MatchRegexp(`(?m)^contactRetention: 36h$`))
			g.Expect(raw).To(MatchRegexp(`(?m)^pseudonymizeCustomers: true$`))
			g.Expect(cfg.Surveys).To(HaveLen(1))
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(Equal(base64.StdEncoding.EncodeToString(key)))
		}).Should(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("a changed annotation reaches the config without any other change")
		annotateNamespace(ctx, ns, map[string]string{RetentionAnnotation: "30d", PseudonymizeCustomersAnnotation: "false"})
		Eventually(func(g Gomega) {
			raw, _ := collectorConfigOf(ctx, g, ns)
			g.Expect(raw).To(MatchRegexp(`(?m)^retention: 30d$`))
			g.Expect(raw).NotTo(ContainSubstring("pseudonymizeCustomers"))
			// The key stays in the secrets file: erasure and access still
			// find what was stored under pseudonyms while it was on.
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(Equal(base64.StdEncoding.EncodeToString(key)))
		}).Should(Succeed())
		Expect(customerIDKeyOf(ctx, ns)).To(Equal(key), "turning pseudonymization off keeps the key")

		By("a removed annotation falls back to the manager's default")
		annotateNamespace(ctx, ns, map[string]string{RetentionAnnotation: "", PseudonymizeCustomersAnnotation: "true"})
		Eventually(func(g Gomega) {
			raw, _ := collectorConfigOf(ctx, g, ns)
			g.Expect(raw).To(MatchRegexp(`(?m)^retention: 400d$`))
			g.Expect(raw).To(MatchRegexp(`(?m)^contactRetention: 36h$`))
			g.Expect(raw).To(MatchRegexp(`(?m)^pseudonymizeCustomers: true$`))
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(Equal(base64.StdEncoding.EncodeToString(key)), "the same key is used again")
		}).Should(Succeed())
	})

	It("stalls the namespace's objects on an unusable annotation, keeps the last config, and recovers when it is fixed", func(ctx SpecContext) {
		ns := newAnnotatedNamespace(ctx, map[string]string{RetentionAnnotation: "30d"})
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		var before string
		Eventually(func(g Gomega) {
			raw, cfg := collectorConfigOf(ctx, g, ns)
			g.Expect(cfg.Retention).To(Equal("30d"))
			g.Expect(cfg.Surveys).To(HaveLen(1))
			before = raw
		}).Should(Succeed())

		annotateNamespace(ctx, ns, map[string]string{RetentionAnnotation: "forever", PseudonymizeCustomersAnnotation: "yes"})
		for _, obj := range []client.Object{tp, svy} {
			expectFailure(ctx, obj, cxv1.InvalidDataPolicyReason, true,
				`annotation cx.cxop.dev/retention: "forever" is not a positive duration`,
				`annotation cx.cxop.dev/pseudonymize-customers: "yes" is neither "true" nor "false"`,
				"the collector keeps its last config")
		}
		Eventually(func(g Gomega) {
			var warned bool
			withKind := tp.DeepCopy()
			withKind.SetGroupVersionKind(cxv1.GroupVersion.WithKind("Touchpoint"))
			for _, e := range eventsFor(ctx, withKind) {
				warned = warned || (e.Type == corev1.EventTypeWarning && e.Reason == cxv1.InvalidDataPolicyReason &&
					strings.Contains(e.Note, RetentionAnnotation))
			}
			g.Expect(warned).To(BeTrue(), "no Warning event %s naming the annotation", cxv1.InvalidDataPolicyReason)
		}).Should(Succeed())
		By("the collector is not handed the defaults meanwhile")
		raw, _ := collectorConfigOf(ctx, Default, ns)
		Expect(raw).To(Equal(before))
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "customer id key Secret: %v", err)

		annotateNamespace(ctx, ns, map[string]string{RetentionAnnotation: "60d", PseudonymizeCustomersAnnotation: "false"})
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)
		Eventually(func(g Gomega) {
			_, cfg := collectorConfigOf(ctx, g, ns)
			g.Expect(cfg.Retention).To(Equal("60d"))
		}).Should(Succeed())
	})

	It("stalls on a customer id key someone shortened, never replacing it, and recovers when it is put back", func(ctx SpecContext) {
		ns := newAnnotatedNamespace(ctx, map[string]string{PseudonymizeCustomersAnnotation: "true"})
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		key := customerIDKeyOf(ctx, ns)
		Expect(key).To(HaveLen(32))
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)

		sec := &corev1.Secret{ObjectMeta: metaOf(ns, CustomerIDKeySecretName)}
		Expect(updateObject(ctx, sec, func() { sec.Data[CustomerIDKeyKey] = key[:16] })).To(Succeed())
		expectFailure(ctx, tp, cxv1.CollectorFailedReason, true,
			CustomerIDKeySecretName, `"key" holds 16 bytes, must hold at least 32`)
		Expect(customerIDKeyOf(ctx, ns)).To(Equal(key[:16]), "the manager replaced the key")
		Eventually(func(g Gomega) {
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(Equal(base64.StdEncoding.EncodeToString(key)), "the collector keeps the key it had")
		}).Should(Succeed())

		Expect(updateObject(ctx, sec, func() { sec.Data[CustomerIDKeyKey] = key })).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
	})
})
