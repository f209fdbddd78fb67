package controllers

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// collectorGauge reads one of the manager's collector gauges for ns, or nil
// when the series does not exist.
func collectorGauge(name, ns string) *float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == ns {
					return ptr.To(m.GetGauge().GetValue())
				}
			}
		}
	}
	return nil
}

var _ = Describe("A collector that cannot answer", func() {
	It("leaves every kind's last numbers in status, marked Stale with the time of the last good reading", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		jny := &cxv1.Journey{ObjectMeta: metaOf(ns, "help"), Spec: cxv1.JourneySpec{
			Stages: []cxv1.JourneyStage{{Name: "get-help", Touchpoints: []string{"chat"}}}, Surveys: []string{"support-nps"}}}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		cxt := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "chat-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
			MinSamples:    ptr.To[int32](2),
		}}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		// Ready once the collector has loaded the survey's token.
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("two waits over the threshold and an NPS answer")
		at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		code, body := post(tp.Status.Ingest.URL+"/v1/events", tokenOf(ctx, ns, TouchpointTokenSecretName("chat")), strings.Join([]string{
			fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c1","time":%q,"waitSeconds":600}`, at),
			fmt.Sprintf(`{"id":"e2","touchpoint":"chat","customer":"c2","time":%q,"waitSeconds":900}`, at),
		}, "\n"))
		Expect(code).To(Equal(200), body)
		code, body = post(tp.Status.Ingest.URL+"/v1/responses", tokenOf(ctx, ns, SurveyTokenSecretName("support-nps")),
			fmt.Sprintf(`{"id":"r1","survey":"support-nps","customer":"c1","score":10,"time":%q}`, at))
		Expect(code).To(Equal(200), body)

		live := func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(tp), tp)).To(Succeed())
			g.Expect(tp.Status.Interactions).To(BeEquivalentTo(2))
			g.Expect(tp.Status.WaitCompliance).To(Equal("0"))
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.Score).To(Equal("100"))
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(jny), jny)).To(Succeed())
			g.Expect(jny.Status.WaitCompliance).To(Equal("0"))
			g.Expect(jny.Status.NPS).To(Equal("100"))
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			g.Expect(cxt.Status.State).To(Equal(cxv1.TargetStateBreached))
		}
		Eventually(live).Should(Succeed())
		Eventually(func() *float64 { return collectorGauge("cxop_collector_up", ns) }).Should(HaveValue(Equal(1.0)))
		lastAnswer := collectorGauge("cxop_collector_last_answer_timestamp_seconds", ns)
		Expect(lastAnswer).NotTo(BeNil())
		Expect(*lastAnswer).To(BeNumerically("~", float64(time.Now().Unix()), 60))

		By("the collector going down")
		collectors.pause(ns)
		stale := func(obj client.Object) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				c := meta.FindStatusCondition(conditionsOf(obj), cxv1.StaleCondition)
				g.Expect(c).NotTo(BeNil(), "%s has no Stale condition", obj.GetName())
				g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
				g.Expect(c.Reason).To(Equal(cxv1.CollectorUnavailableReason))
				g.Expect(c.Message).To(MatchRegexp(`^The numbers are those of the last good reading, at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: the collector `))
				ready := meta.FindStatusCondition(conditionsOf(obj), cxv1.ReadyCondition)
				g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(ready.Reason).To(Equal(cxv1.CollectorUnavailableReason))
			}).Should(Succeed())
		}
		for _, obj := range []client.Object{tp, svy, jny, cxt} {
			stale(obj)
		}
		// Stale, and still the same numbers: no false recovery.
		live(Default)
		Expect(cxt.Status.CurrentUpper).NotTo(BeEmpty())
		Expect(*targetGauge("cxop_target_breached", ns, "chat-wait")).To(Equal(1.0))
		Expect(*collectorGauge("cxop_collector_up", ns)).To(Equal(0.0))
		Expect(*collectorGauge("cxop_collector_last_answer_timestamp_seconds", ns)).To(BeNumerically("<=", float64(time.Now().Unix())))
		Consistently(live, 2*time.Second).Should(Succeed())

		By("the collector back")
		Expect(collectors.resume(ctx, ns)).To(Succeed())
		for _, obj := range []client.Object{tp, svy, jny, cxt} {
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				g.Expect(meta.FindStatusCondition(conditionsOf(obj), cxv1.StaleCondition)).To(BeNil())
				g.Expect(meta.IsStatusConditionTrue(conditionsOf(obj), cxv1.ReadyCondition)).To(BeTrue())
			}).Should(Succeed())
		}
		live(Default)
		Eventually(func() *float64 { return collectorGauge("cxop_collector_up", ns) }).Should(HaveValue(Equal(1.0)))
	})
})
