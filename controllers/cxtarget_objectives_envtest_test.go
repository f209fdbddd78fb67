package controllers

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// alertRules waits for the target's AlertRules condition and returns it,
// with the target as it was then.
func alertRules(ctx SpecContext, cxt *cxv1.CXTarget, state cxv1.TargetState) metav1.Condition {
	GinkgoHelper()
	var c metav1.Condition
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
		g.Expect(cxt.Status.State).To(Equal(state))
		found := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.AlertRulesCondition)
		g.Expect(found).NotTo(BeNil(), "no AlertRules condition")
		g.Expect(found.ObservedGeneration).To(Equal(cxt.Generation))
		c = *found
	}).Should(Succeed())
	return c
}

var _ = Describe("CXTarget objectives the alert rules cannot express", func() {
	It("judges a 1h window and objectives at their bound, with AlertRules=False saying why", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		csat := npsSurvey(ns, "csat", "chat")
		csat.Spec.Type, csat.Spec.Question = cxv1.SurveyTypeCSAT, "How satisfied are you?"
		ces := npsSurvey(ns, "ces", "chat")
		ces.Spec.Type, ces.Spec.Question = cxv1.SurveyTypeCES, "How easy was it?"
		Expect(k8sClient.Create(ctx, csat)).To(Succeed())
		Expect(k8sClient.Create(ctx, ces)).To(Succeed())
		target := func(name, survey string, obj cxv1.Objective, window cxv1.Duration) *cxv1.CXTarget {
			cxt := &cxv1.CXTarget{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: cxv1.CXTargetSpec{
					SurveyRef: &cxv1.LocalObjectReference{Name: survey}, Objective: obj, Window: window,
					MinSamples: ptr.To[int32](4),
					Alerting:   &cxv1.Alerting{AtRiskBelow: ptr.To(resource.MustParse("10"))},
				},
			}
			Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
			return cxt
		}
		short := target("csat-1h", "csat", cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: resource.MustParse("80")}}, "1h")
		all := target("csat-100", "csat", cxv1.Objective{CSAT: &cxv1.PercentObjective{Min: resource.MustParse("100")}}, "")
		best := target("ces-7", "ces", cxv1.Objective{CES: &cxv1.CESObjective{Min: resource.MustParse("7")}}, "")
		expectReady(ctx, csat, metav1.ConditionTrue, cxv1.ReconciledReason)
		expectReady(ctx, ces, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("four answers of 5 to the CSAT survey and four of 7 to the CES survey")
		at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		answer := func(survey string, score int) {
			lines := make([]string, 4)
			for i := range lines {
				lines[i] = fmt.Sprintf(`{"id":"%s%d","survey":%q,"customer":"c%d","score":%d,"time":%q}`, survey, i, survey, i, score, at)
			}
			code, body := post(collectors.URL(ns)+"/v1/responses", tokenOf(ctx, ns, SurveyTokenSecretName(survey)), strings.Join(lines, "\n"))
			Expect(code).To(Equal(200), body)
		}
		answer("csat", 5)
		answer("ces", 7)

		// 100% satisfied against 80% over 1h: x = 100 x 4 / 80 - 4 = 1
		// further unhappy answer, 25% of the budget, over atRiskBelow 10.
		c := alertRules(ctx, short, cxv1.TargetStateMet)
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Reason).To(Equal(cxv1.WindowTooShortReason))
		Expect(c.Message).To(HavePrefix("spec.window 1h is shorter than the 6h lookback of the slower page alert"))
		Expect(short.Status.Current).To(Equal("100"))
		Expect(short.Status.ErrorBudgetRemaining).To(Equal("25"))
		Expect(meta.IsStatusConditionTrue(short.Status.Conditions, cxv1.ReadyCondition)).To(BeTrue())

		// 100% against 100%: no further unhappy answer fits, 0% left.
		c = alertRules(ctx, all, cxv1.TargetStateAtRisk)
		Expect(c.Status).To(Equal(metav1.ConditionFalse))
		Expect(c.Reason).To(Equal(cxv1.NoErrorBudgetReason))
		Expect(c.Message).To(HavePrefix("spec.objective.csat requires 100, the best value there is"))
		Expect(all.Status.Current).To(Equal("100"))
		Expect(all.Status.ErrorBudgetRemaining).To(Equal("0"))
		Expect(all.Status.BurnRates).To(BeEmpty(), "an objective at the best value has no burn rate")

		c = alertRules(ctx, best, cxv1.TargetStateAtRisk)
		Expect(c.Reason).To(Equal(cxv1.NoErrorBudgetReason))
		Expect(best.Status.Current).To(Equal("7"))
		Expect(best.Status.Samples).To(BeEquivalentTo(4))

		rule := &unstructured.Unstructured{}
		rule.SetGroupVersionKind(PrometheusRuleGVK)
		for _, name := range []string{"csat-1h", "csat-100", "ces-7"} {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: prometheusRuleName(name)}, rule)
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%s has a PrometheusRule: %v", name, err)
		}

		By("a window the rules can express brings the rules")
		Expect(updateObject(ctx, short, func() { short.Spec.Window = "7d" })).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(short), short)).To(Succeed())
			c := meta.FindStatusCondition(short.Status.Conditions, cxv1.AlertRulesCondition)
			g.Expect(c.ObservedGeneration).To(Equal(short.Generation))
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%s: %s", c.Reason, c.Message)
			g.Expect(c.Reason).To(Equal(cxv1.AlertRulesAppliedReason))
		}).Should(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: prometheusRuleName("csat-1h")}, rule)).To(Succeed())
	})

	It("evaluates a response rate from the invitations sent and the answers received", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		rcv := newWebhookReceiver(secret)
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": secret},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		svy.Spec.Trigger.SamplePercent = ptrTo(resource.MustParse("100"))
		svy.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{
			URL: rcv.srv.URL + "/invitations", SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		cxt := &cxv1.CXTarget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "answer-rate"},
			Spec: cxv1.CXTargetSpec{
				SurveyRef:  &cxv1.LocalObjectReference{Name: "support-nps"},
				Objective:  cxv1.Objective{ResponseRate: &cxv1.PercentObjective{Min: resource.MustParse("20")}},
				MinSamples: ptr.To[int32](2),
			},
		}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("two interactions, two invitations delivered")
		tpToken := tokenOf(ctx, ns, TouchpointTokenSecretName("chat"))
		now := time.Now().UTC().Format(time.RFC3339)
		for i := range 2 {
			Eventually(func() int {
				code, _ := post(collectors.URL(ns)+"/v1/events", tpToken,
					fmt.Sprintf(`{"id":"e%d","touchpoint":"chat","customer":"c%d","time":%q}`, i, i, now))
				return code
			}).Should(Equal(200))
		}
		Eventually(func() int { return len(rcv.ofType("survey.invitation")) }).Should(Equal(2))
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			g.Expect(cxt.Status.Samples).To(BeEquivalentTo(2))
			g.Expect(cxt.Status.Current).To(Equal("0"))
		}).Should(Succeed())
		// None answered of two: Wilson's upper bound 65.8% is above 20%,
		// so not Breached; 2 bad of a budget of 0.8 x 2 = 1.6: -25% left.
		Expect(cxt.Status.State).To(Equal(cxv1.TargetStateAtRisk))
		Expect(cxt.Status.ErrorBudgetRemaining).To(Equal("-25"))

		By("one answer")
		code, body := post(collectors.URL(ns)+"/v1/responses", tokenOf(ctx, ns, SurveyTokenSecretName("support-nps")),
			fmt.Sprintf(`{"id":"r0","survey":"support-nps","customer":"c0","score":9,"time":%q}`, now))
		Expect(code).To(Equal(200), body)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			g.Expect(cxt.Status.State).To(Equal(cxv1.TargetStateMet))
		}).Should(Succeed())
		// 1 of 2: 50%; 1 bad of a budget of 1.6: 37.5% left. Invitations
		// are counted by UTC day, so the burn rates are the 1d and 3d
		// ones: 0.5 / 0.8 = 0.625, shown half to even.
		Expect(cxt.Status.Current).To(Equal("50"))
		Expect(cxt.Status.Objective).To(Equal(">= 20%"))
		Expect(cxt.Status.ErrorBudgetRemaining).To(Equal("37.5"))
		Expect(cxt.Status.BurnRates).To(Equal([]cxv1.BurnRate{{Window: "1d", Rate: "0.62"}, {Window: "3d", Rate: "0.62"}}))
		met := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.TargetMetCondition)
		Expect(met.Status).To(Equal(metav1.ConditionTrue))
		Expect(met.Message).To(Equal("50 against an objective of 20, with 37.5% of the error budget left"))
		rules := meta.FindStatusCondition(cxt.Status.Conditions, cxv1.AlertRulesCondition)
		Expect(rules).NotTo(BeNil())
		Expect(rules.Reason).To(Equal(cxv1.NoMetricReason))
	})
})
