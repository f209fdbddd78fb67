package controllers

import (
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

var _ = Describe("config/samples", func() {
	It("applies every sample and each one becomes Ready", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		files, err := filepath.Glob(filepath.Join("..", "config", "samples", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).NotTo(BeEmpty())

		kinds := map[string]int{}
		var created []client.Object
		for _, f := range files {
			for _, u := range decodeObjects(readFile(f)) {
				u.SetNamespace(ns)
				Expect(k8sClient.Create(ctx, u)).To(Succeed(), "create %s %s from %s", u.GetKind(), u.GetName(), f)
				kinds[u.GetKind()]++
				typed, err := scheme.New(u.GroupVersionKind())
				Expect(err).NotTo(HaveOccurred())
				obj := typed.(client.Object)
				obj.SetNamespace(ns)
				obj.SetName(u.GetName())
				created = append(created, obj)
			}
		}
		// The online-shop story the README tells.
		Expect(kinds).To(Equal(map[string]int{"Journey": 1, "Touchpoint": 5, "Survey": 2, "CXTarget": 3}))

		for _, obj := range created {
			expectReady(ctx, obj, metav1.ConditionTrue, cxv1.ReconciledReason)
		}

		jny := &cxv1.Journey{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "buy-online-get-help"}, jny)).To(Succeed())
		Expect(jny.Spec.Stages).To(HaveLen(4))

		By("showing each target's objective in words")
		objectives := map[string]string{}
		for _, name := range []string{"support-nps-40", "chat-wait-2m", "delivery-csat-85"} {
			cxt := &cxv1.CXTarget{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cxt)).To(Succeed())
			objectives[name] = cxt.Status.Objective
		}
		Expect(objectives).To(Equal(map[string]string{
			"support-nps-40":   ">= 40",
			"chat-wait-2m":     "95% <= 2m",
			"delivery-csat-85": ">= 85%",
		}))
		Expect(strings.Join(files, " ")).NotTo(ContainSubstring("kustomization"),
			"kubectl apply -f config/samples must find only objects")
	})
})
