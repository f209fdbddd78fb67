package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

func touchpoint(ns, name string) *cxv1.Touchpoint {
	return &cxv1.Touchpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       cxv1.TouchpointSpec{Channel: cxv1.ChannelChat, WaitTime: &cxv1.WaitTimeSpec{Threshold: "2m"}},
	}
}

func npsSurvey(ns, name string, touchpoints ...string) *cxv1.Survey {
	return &cxv1.Survey{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cxv1.SurveySpec{
			Type: cxv1.SurveyTypeNPS, Question: "How likely are you to recommend us?",
			Trigger: &cxv1.SurveyTrigger{Touchpoints: touchpoints},
		},
	}
}

// eventsFor lists the events recorded about obj, oldest first.
func eventsFor(ctx context.Context, obj client.Object) []eventsv1.Event {
	list := &eventsv1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(obj.GetNamespace()))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == obj.GetName() && e.Regarding.Kind == obj.GetObjectKind().GroupVersionKind().Kind {
			out = append(out, e)
		}
	}
	return out
}

var _ = Describe("Reference resolution", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	It("holds a Journey not ready until every named Touchpoint and Survey exists, then recovers", func(ctx SpecContext) {
		jny := &cxv1.Journey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
			Spec: cxv1.JourneySpec{
				Stages: []cxv1.JourneyStage{
					{Name: "browse", Touchpoints: []string{"web"}},
					{Name: "get-help", Touchpoints: []string{"chat", "phone"}},
				},
				Surveys: []string{"support-nps"},
			},
		}
		Expect(k8sClient.Create(ctx, touchpoint(ns, "web"))).To(Succeed())
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())

		expectReadyMessage(ctx, jny, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason, Equal(`Touchpoints "chat", "phone" not found; Survey "support-nps" not found`))
		reconciling := meta.FindStatusCondition(jny.Status.Conditions, cxv1.ReconcilingCondition)
		Expect(reconciling).NotTo(BeNil())
		Expect(reconciling.Status).To(Equal(metav1.ConditionTrue))
		Expect(meta.FindStatusCondition(jny.Status.Conditions, cxv1.StalledCondition)).To(BeNil())

		By("creating the Touchpoints: only the Survey is missing")
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		Expect(k8sClient.Create(ctx, touchpoint(ns, "phone"))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(jny), jny)).To(Succeed())
			ready := meta.FindStatusCondition(jny.Status.Conditions, cxv1.ReadyCondition)
			g.Expect(ready.Reason).To(Equal(cxv1.SurveyNotFoundReason))
			g.Expect(ready.Message).To(Equal(`Survey "support-nps" not found`))
		}).Should(Succeed())

		By("creating the Survey: the Journey recovers on its own")
		Expect(k8sClient.Create(ctx, npsSurvey(ns, "support-nps", "chat"))).To(Succeed())
		expectReady(ctx, jny, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(meta.FindStatusCondition(jny.Status.Conditions, cxv1.ReconcilingCondition)).To(BeNil())

		By("recording the transitions as events, a Warning then a Normal")
		jny.SetGroupVersionKind(cxv1.GroupVersion.WithKind("Journey"))
		Eventually(func(g Gomega) {
			var reasons []string
			for _, e := range eventsFor(ctx, jny) {
				reasons = append(reasons, e.Type+"/"+e.Reason)
			}
			g.Expect(reasons).To(ContainElements("Warning/TouchpointNotFound", "Warning/SurveyNotFound", "Normal/Reconciled"))
		}).Should(Succeed())

		By("deleting a Touchpoint: the Journey goes back to not ready")
		Expect(k8sClient.Delete(ctx, touchpoint(ns, "phone"))).To(Succeed())
		expectReadyMessage(ctx, jny, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason, Equal(`Touchpoint "phone" not found`))
	})

	It("holds a Survey not ready until its trigger Touchpoints exist", func(ctx SpecContext) {
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReadyMessage(ctx, svy, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason, Equal(`Touchpoint "chat" not found`))

		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)
	})

	It("holds a CXTarget not ready until its subject exists", func(ctx SpecContext) {
		cxt := &cxv1.CXTarget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "journey-nps"},
			Spec: cxv1.CXTargetSpec{
				JourneyRef: &cxv1.LocalObjectReference{Name: "shop"},
				Objective:  cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}},
			},
		}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReadyMessage(ctx, cxt, metav1.ConditionFalse, cxv1.JourneyNotFoundReason, Equal(`Journey "shop" not found`))
		Expect(cxt.Status.Objective).To(Equal(">= 40"))

		Expect(k8sClient.Create(ctx, &cxv1.Journey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
			Spec:       cxv1.JourneySpec{Stages: []cxv1.JourneyStage{{Name: "browse", Touchpoints: []string{"web"}}}},
		})).To(Succeed())
		// An NPS objective on a Journey is measured on its NPS surveys.
		expectReadyMessage(ctx, cxt, metav1.ConditionFalse, cxv1.ObjectiveMismatchReason, Equal(`spec.objective.nps needs a NPS survey, but Journey "shop" lists none`))

		Expect(k8sClient.Create(ctx, touchpoint(ns, "web"))).To(Succeed())
		Expect(k8sClient.Create(ctx, npsSurvey(ns, "shop-nps", "web"))).To(Succeed())
		jny := &cxv1.Journey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"}}
		Expect(updateObject(ctx, jny, func() { jny.Spec.Surveys = []string{"shop-nps"} })).To(Succeed())
		expectReady(ctx, cxt, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(cxt.Status.State).To(Equal(cxv1.TargetStateInsufficientData))
	})

	It("reports an objective that does not fit the subject, and recovers when the subject changes", func(ctx SpecContext) {
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		svy := npsSurvey(ns, "delivery", "chat")
		svy.Spec.Type = cxv1.SurveyTypeCSAT
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		cxt := &cxv1.CXTarget{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delivery-nps"},
			Spec: cxv1.CXTargetSpec{
				SurveyRef: &cxv1.LocalObjectReference{Name: "delivery"},
				Objective: cxv1.Objective{NPS: &cxv1.NPSObjective{Min: 40}},
			},
		}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReadyMessage(ctx, cxt, metav1.ConditionFalse, cxv1.ObjectiveMismatchReason, Equal(`spec.objective.nps needs a NPS survey, but Survey "delivery" is of type CSAT`))

		Expect(updateObject(ctx, svy, func() { svy.Spec.Type = cxv1.SurveyTypeNPS })).To(Succeed())
		expectReady(ctx, cxt, metav1.ConditionTrue, cxv1.ReconciledReason)
	})

	It("marks a spec the schema accepts but that cannot work as Stalled", func(ctx SpecContext) {
		tp := touchpoint(ns, "chat")
		tp.Spec.BusinessHours = &cxv1.BusinessHours{
			TimeZone: "Europe/Atlantis",
			Hours:    []cxv1.BusinessHoursInterval{{Days: []cxv1.Weekday{"Monday"}, Start: "09:00", End: "17:00"}},
		}
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReadyMessage(ctx, tp, metav1.ConditionFalse, cxv1.InvalidSpecReason, Equal(`spec.businessHours.timeZone: "Europe/Atlantis" is not a known IANA time zone`))
		stalled := meta.FindStatusCondition(tp.Status.Conditions, cxv1.StalledCondition)
		Expect(stalled).NotTo(BeNil())
		Expect(stalled.Status).To(Equal(metav1.ConditionTrue))

		By("fixing the spec")
		Expect(updateObject(ctx, tp, func() { tp.Spec.BusinessHours.TimeZone = "Europe/Berlin" })).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(meta.FindStatusCondition(tp.Status.Conditions, cxv1.StalledCondition)).To(BeNil())
	})

	It("rejects a cron expression that has five fields but never parses", func(ctx SpecContext) {
		svy := npsSurvey(ns, "quarterly")
		svy.Spec.Trigger = nil
		svy.Spec.Schedule = &cxv1.SurveySchedule{
			Cron:     "0 9 31 2 mon-xyz",
			Audience: cxv1.ConfigMapKeyReference{Name: "customers", Key: "list"},
		}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReadyMessage(ctx, svy, metav1.ConditionFalse, cxv1.InvalidSpecReason, HavePrefix(`spec.schedule.cron: "0 9 31 2 mon-xyz" is not a valid cron expression`))
	})
})

var _ = Describe("observedGeneration", func() {
	It("follows every edit of the spec", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(tp.Status.ObservedGeneration).To(Equal(int64(1)))

		for i, threshold := range []cxv1.Duration{"90s", "3m", "5m"} {
			Expect(updateObject(ctx, tp, func() { tp.Spec.WaitTime.Threshold = threshold })).To(Succeed())
			expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
			Expect(tp.Status.ObservedGeneration).To(Equal(int64(i + 2)))
		}
	})

	It("is set on an object that is invalid, so tools know the verdict is current", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		jny := &cxv1.Journey{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
			Spec:       cxv1.JourneySpec{Stages: []cxv1.JourneyStage{{Name: "browse", Touchpoints: []string{"web"}}}},
		}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		expectReady(ctx, jny, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason)
		Expect(updateObject(ctx, jny, func() { jny.Spec.Window = "7d" })).To(Succeed())
		expectReady(ctx, jny, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason)
		Expect(jny.Status.ObservedGeneration).To(Equal(int64(2)))
	})
})
