package controllers

import (
	"bytes"
	"encoding/base64"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

var _ = Describe("Customer id key rotation", func() {
	It("keeps the replaced key as the previous one, in the Secret and the collector's secrets file", func(ctx SpecContext) {
		ns := newAnnotatedNamespace(ctx, map[string]string{PseudonymizeCustomersAnnotation: "true"})
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		keyA := customerIDKeyOf(ctx, ns)
		Expect(keyA).To(HaveLen(32))
		b64 := base64.StdEncoding.EncodeToString
		Eventually(func(g Gomega) {
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKey).To(Equal(b64(keyA)))
			g.Expect(collectorSecretsOf(ctx, g, ns).CustomerIDKeyPrevious).To(BeEmpty())
		}).Should(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("a new key written into the Secret: the old one becomes previous")
		keyB := bytes.Repeat([]byte{0xb0}, 32)
		sec := &corev1.Secret{ObjectMeta: metaOf(ns, CustomerIDKeySecretName)}
		Expect(updateObject(ctx, sec, func() { sec.Data[CustomerIDKeyKey] = keyB })).To(Succeed())
		Eventually(func(g Gomega) {
			f := collectorSecretsOf(ctx, g, ns)
			g.Expect(f.CustomerIDKey).To(Equal(b64(keyB)), "ingest uses the new key")
			g.Expect(f.CustomerIDKeyPrevious).To(Equal(b64(keyA)), "erasure and access still find the old pseudonyms")
			var got corev1.Secret
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &got)).To(Succeed())
			g.Expect(got.Data[CustomerIDKeyPrevious]).To(Equal(keyA), "the Secret keeps it, so a restart of the manager does too")
		}).Should(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("the Secret deleted: a new key is made, and the one it held becomes previous")
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metaOf(ns, CustomerIDKeySecretName)})).To(Succeed())
		Eventually(func(g Gomega) {
			var got corev1.Secret
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: CustomerIDKeySecretName}, &got)).To(Succeed())
			g.Expect(got.Data[CustomerIDKeyKey]).To(HaveLen(32))
			g.Expect(got.Data[CustomerIDKeyKey]).NotTo(Equal(keyB))
			g.Expect(got.Data[CustomerIDKeyPrevious]).To(Equal(keyB))
			f := collectorSecretsOf(ctx, g, ns)
			g.Expect(f.CustomerIDKey).To(Equal(b64(got.Data[CustomerIDKeyKey])))
			g.Expect(f.CustomerIDKeyPrevious).To(Equal(b64(keyB)))
		}).Should(Succeed())

		By("a previous key someone cut short stalls the namespace, naming it")
		Expect(updateObject(ctx, sec, func() { sec.Data[CustomerIDKeyPrevious] = keyB[:8] })).To(Succeed())
		expectFailure(ctx, tp, cxv1.CollectorFailedReason, true,
			CustomerIDKeySecretName, `"previous" holds 8 bytes, must hold at least 32`)
		Expect(updateObject(ctx, sec, func() { sec.Data[CustomerIDKeyPrevious] = keyB })).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
	})
})
