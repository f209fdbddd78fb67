package controllers

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// targetGauge reads one of the manager's target gauges, or nil when the
// series does not exist.
func targetGauge(name, ns, target string) *float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == ns && labels["name"] == target {
				return ptr.To((*dto.Metric).GetGauge(m).GetValue())
			}
		}
	}
	return nil
}

var _ = Describe("CXTarget evaluation", func() {
	It("goes Met, Breached and back with the collector's numbers, with events only on transitions", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		cxt := &cxv1.CXTarget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-wait"},
			Spec: cxv1.CXTargetSpec{
				TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
				Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
				MinSamples:    ptr.To[int32](10),
			},
		}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		Expect(cxt.Status.State).To(BeEmpty())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			g.Expect(cxt.Status.State).To(Equal(cxv1.TargetStateInsufficientData))
		}).Should(Succeed())
		Expect(targetGauge("cxop_target_value", ns, "chat-wait")).To(BeNil(), "no value on no data")
		Expect(*targetGauge("cxop_target_objective", ns, "chat-wait")).To(Equal(95.0))

		url, token := tp.Status.Ingest.URL, tokenOf(ctx, ns, TouchpointTokenSecretName("chat"))
		at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		send := func(prefix string, n, wait int) {
			lines := make([]string, n)
			for i := range lines {
				lines[i] = fmt.Sprintf(`{"id":"%s%d","touchpoint":"chat","customer":"c%d","time":%q,"waitSeconds":%d}`, prefix, i, i, at, wait)
			}
			code, body := post(url+"/v1/events", token, strings.Join(lines, "\n"))
			Expect(code).To(Equal(200), body)
		}
		state := func(want cxv1.TargetState) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
				g.Expect(cxt.Status.State).To(Equal(want))
			}).Should(Succeed())
		}

		By("20 waits within the threshold")
		send("ok", 20, 30)
		state(cxv1.TargetStateMet)
		Expect(cxt.Status.Current).To(Equal("100"))
		Expect(cxt.Status.Samples).To(BeEquivalentTo(20))
		Expect(cxt.Status.ErrorBudgetRemaining).To(Equal("100"))
		Expect(cxt.Status.BurnRates).To(Equal([]cxv1.BurnRate{{Window: "1h", Rate: "0"}, {Window: "6h", Rate: "0"}, {Window: "1d", Rate: "0"}, {Window: "3d", Rate: "0"}}))
		Expect(meta.IsStatusConditionTrue(cxt.Status.Conditions, cxv1.TargetMetCondition)).To(BeTrue())
		Expect(*targetGauge("cxop_target_value", ns, "chat-wait")).To(Equal(100.0))

		By("20 waits over it: 50% compliance, the interval wholly below 95%")
		send("slow", 20, 300)
		state(cxv1.TargetStateBreached)
		Expect(cxt.Status.Current).To(Equal("50"))
		// 20 bad against a budget of 5% x 40 = 2: 1 - 20/2 = -900%.
		Expect(cxt.Status.ErrorBudgetRemaining).To(Equal("-900"))
		// Half bad in the last hour: 0.5 / 0.05 = 10.
		Expect(cxt.Status.BurnRates[0]).To(Equal(cxv1.BurnRate{Window: "1h", Rate: "10"}))
		Expect(meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition).Status).To(Equal(metav1.ConditionFalse))
		Expect(*targetGauge("cxop_target_breached", ns, "chat-wait")).To(Equal(1.0))
		Expect(*targetGauge("cxop_target_error_budget_remaining", ns, "chat-wait")).To(BeNumerically("~", -9.0, 1e-9))

		By("1,000 more good waits")
		send("more", 1000, 10)
		state(cxv1.TargetStateMet)
		// 20 bad of 1,040 against a budget of 52.
		Expect(cxt.Status.ErrorBudgetRemaining).To(Equal("61.5"))
		Expect(*targetGauge("cxop_target_breached", ns, "chat-wait")).To(Equal(0.0))

		reasons := func() []string {
			var out []string
			withKind := cxt.DeepCopy()
			withKind.SetGroupVersionKind(cxv1.GroupVersion.WithKind("CXTarget"))
			for _, e := range eventsFor(ctx, withKind) {
				if e.Reason == "TargetBreached" || e.Reason == "TargetRecovered" {
					out = append(out, e.Reason)
				}
			}
			return out
		}
		Eventually(reasons).Should(Equal([]string{"TargetBreached", "TargetRecovered"}))
		Consistently(reasons, 3*time.Second).Should(HaveLen(2), "refreshes with no transition emit no event")

		Expect(k8sClient.Delete(ctx, cxt)).To(Succeed())
		Eventually(func() *float64 { return targetGauge("cxop_target_objective", ns, "chat-wait") }).Should(BeNil())
	})

	It("writes a PrometheusRule with the target's burn-rate alerts, and removes it when alerts are turned off", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		cxt := &cxv1.CXTarget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "chat-wait"},
			Spec: cxv1.CXTargetSpec{
				TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
				Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
				Alerting:      &cxv1.Alerting{Labels: map[string]string{"team": "care"}, RunbookURL: "https://runbooks.example/chat"},
			},
		}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		rule := &unstructured.Unstructured{}
		rule.SetGroupVersionKind(PrometheusRuleGVK)
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cxop-chat-wait"}, rule)
		}).Should(Succeed())
		Expect(rule.GetOwnerReferences()).To(HaveLen(1))
		Expect(rule.GetOwnerReferences()[0].Name).To(Equal("chat-wait"))
		groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		Expect(groups).To(HaveLen(2))
		alerts := groups[1].(map[string]any)["rules"].([]any)
		Expect(alerts).To(HaveLen(2))
		page := alerts[0].(map[string]any)
		Expect(page["alert"]).To(Equal("CXTargetErrorBudgetBurn"))
		Expect(page["labels"]).To(HaveKeyWithValue("team", "care"))
		Expect(page["labels"]).To(HaveKeyWithValue("severity", "page"))
		Expect(page["annotations"]).To(HaveKeyWithValue("runbook_url", "https://runbooks.example/chat"))
		Expect(page["expr"]).To(ContainSubstring("> 13.44"))

		Expect(updateObject(ctx, cxt, func() { cxt.Spec.Alerting.BurnRateAlerts = ptr.To(false) })).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cxop-chat-wait"}, rule))
		}).Should(BeTrue())
	})

	It("writes its PrometheusRule again when someone deletes or edits it, and AlertRules says what holds", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		cxt := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "chat-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
		}}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		key := client.ObjectKey{Namespace: ns, Name: "cxop-chat-wait"}
		rule := &unstructured.Unstructured{}
		rule.SetGroupVersionKind(PrometheusRuleGVK)
		applied := func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, key, rule)).To(Succeed())
			groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
			g.Expect(groups).To(HaveLen(2), "the rule's groups")
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			c := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.AlertRulesCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(cxv1.AlertRulesAppliedReason))
		}
		Eventually(applied).Should(Succeed())
		first := rule.GetUID()

		By("deleting the PrometheusRule by hand")
		Expect(k8sClient.Delete(ctx, rule)).To(Succeed())
		Eventually(func(g Gomega) {
			applied(g)
			g.Expect(rule.GetUID()).NotTo(Equal(first), "the rule was not written again")
		}).Should(Succeed())

		By("emptying its groups by hand")
		Expect(unstructured.SetNestedSlice(rule.Object, []any{}, "spec", "groups")).To(Succeed())
		Expect(k8sClient.Update(ctx, rule)).To(Succeed())
		Eventually(applied).Should(Succeed())
		Consistently(applied, "2s").Should(Succeed())
	})
})
