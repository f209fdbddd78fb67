package controllers

import (
	"context"
	"errors"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// expectFailure waits until obj is Ready=False with reason and a message
// containing each of names, and checks that it is marked the way GitOps
// tools read it: Stalled (Degraded, Failed) when someone must act,
// Reconciling (Progressing, InProgress) when the manager expects it to
// clear, never both.
func expectFailure(ctx context.Context, obj client.Object, reason string, stalled bool, names ...string) {
	GinkgoHelper()
	msg := And(ContainSubstring(names[0]))
	for _, n := range names[1:] {
		msg = And(msg, ContainSubstring(n))
	}
	ready := expectReadyMessage(ctx, obj, metav1.ConditionFalse, reason, msg)
	conds := conditionsOf(obj)
	marked, other := cxv1.ReconcilingCondition, cxv1.StalledCondition
	if stalled {
		marked, other = other, marked
	}
	c := meta.FindStatusCondition(conds, marked)
	Expect(c).NotTo(BeNil(), "%s missing beside Ready=False/%s", marked, reason)
	Expect(c.Status).To(Equal(metav1.ConditionTrue))
	Expect(c.Reason).To(Equal(reason))
	Expect(c.Message).To(Equal(ready.Message))
	Expect(meta.FindStatusCondition(conds, other)).To(BeNil(), "%s beside %s", other, marked)
}

// refusedBy is the answer of an API server that will not take an object.
func refusedBy(resource, name string) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name, errors.New("exceeded quota: objects, requested: count=1, used: count=10, limited: count=10"))
}

var _ = Describe("Injected failures", func() {
	It("a Survey whose audience ConfigMap goes is stalled naming it, and recovers when it is back", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		panel := &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"customers": "c-1\nc-2,bo@example.com\n"}}
		Expect(k8sClient.Create(ctx, panel)).To(Succeed())
		svy := &cxv1.Survey{ObjectMeta: metaOf(ns, "quarterly-nps"), Spec: cxv1.SurveySpec{
			Type: cxv1.SurveyTypeNPS, Question: "How likely are you to recommend us?",
			Schedule: &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers"}},
		}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		Expect(k8sClient.Delete(ctx, panel)).To(Succeed())
		expectFailure(ctx, svy, cxv1.AudienceNotFoundReason, true, `spec.schedule.audience: ConfigMap "panel" not found`)
		Expect(svy.Status.NextScheduleTime).NotTo(BeNil(), "the schedule is still shown")

		By("a ConfigMap without the key, then one that is no list of customers")
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"list": "c-1\n"}})).To(Succeed())
		expectFailure(ctx, svy, cxv1.AudienceNotFoundReason, true, `spec.schedule.audience: ConfigMap "panel" has no key "customers"`)
		Expect(updateObject(ctx, panel, func() { panel.Data = map[string]string{"customers": `[{"email":"x@example.com"}]`} })).To(Succeed())
		expectFailure(ctx, svy, cxv1.InvalidAudienceReason, true, `spec.schedule.audience: ConfigMap "panel" key "customers": `)

		Expect(updateObject(ctx, panel, func() { panel.Data = map[string]string{"customers": "c-1\n"} })).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)
	})

	It("a Survey whose webhook Secret goes is stalled naming it", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		mailer := &corev1.Secret{ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}
		Expect(k8sClient.Create(ctx, mailer)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		svy.Spec.ClosedLoop = &cxv1.ClosedLoop{DetractorWebhook: &cxv1.WebhookSpec{
			URL: "https://crm.example.com/detractors", SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		Expect(k8sClient.Delete(ctx, mailer)).To(Succeed())
		expectFailure(ctx, svy, cxv1.WebhookKeyMissingReason, true, `spec.closedLoop.detractorWebhook.secretRef: Secret "mailer" not found`)
	})

	It("a Survey whose wave CronJob the API server refuses is stalled naming it", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"customers": "c-1\n"}})).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		lift := faults.inject("create", ns, "", isA[*batchv1.CronJob], refusedBy("cronjobs", "cxop-wave-support-nps"))
		DeferCleanup(lift)
		Expect(updateObject(ctx, svy, func() {
			svy.Spec.Schedule = &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers"}}
		})).To(Succeed())
		expectFailure(ctx, svy, cxv1.ApplyFailedReason, true, "apply wave CronJob "+ns+"/cxop-wave-support-nps: ", "exceeded quota")

		By("the quota raised, the next change goes through")
		lift()
		Expect(updateObject(ctx, svy, func() { svy.Spec.Question = "How likely are you to recommend us to a friend?" })).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)
	})

	It("Touchpoints and Surveys show a collector the manager cannot write, naming what was refused", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		chat := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, chat)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, chat, metav1.ConditionTrue, cxv1.ReconciledReason)
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		lift := faults.inject("create", ns, TouchpointTokenSecretName("web"), isA[*corev1.Secret], refusedBy("secrets", TouchpointTokenSecretName("web")))
		DeferCleanup(lift)
		web := touchpoint(ns, "web")
		Expect(k8sClient.Create(ctx, web)).To(Succeed())
		for _, obj := range []client.Object{chat, svy, web} {
			expectFailure(ctx, obj, cxv1.CollectorFailedReason, true,
				"the namespace's collector could not be written: ", "secret "+ns+"/"+TouchpointTokenSecretName("web"), "exceeded quota")
		}

		By("the quota raised, the collector is written and all recover")
		lift()
		for _, obj := range []client.Object{chat, svy, web} {
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				g.Expect(meta.IsStatusConditionTrue(conditionsOf(obj), cxv1.ReadyCondition)).To(BeTrue())
			}, "90s").Should(Succeed())
		}
	})

	It("a Touchpoint, Survey and Journey whose collector cannot answer wait for it, keeping their last numbers marked Stale", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		chat := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, chat)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		jny := &cxv1.Journey{ObjectMeta: metaOf(ns, "get-help"), Spec: cxv1.JourneySpec{
			Stages: []cxv1.JourneyStage{{Name: "chat", Touchpoints: []string{"chat"}}}, Surveys: []string{"support-nps"},
		}}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		for _, obj := range []client.Object{chat, svy, jny} {
			expectReady(ctx, obj, metav1.ConditionTrue, cxv1.ReconciledReason)
		}
		Expect(jny.Status.Stages).To(HaveLen(1))

		Expect(collectors.Remove(ctx, ns)).To(Succeed())
		for _, obj := range []client.Object{chat, svy, jny} {
			expectFailure(ctx, obj, cxv1.CollectorUnavailableReason, false, "collector")
			// No false recovery: the numbers of the last good reading
			// stay, and say they are stale (see stale.go).
			c := meta.FindStatusCondition(conditionsOf(obj), cxv1.StaleCondition)
			Expect(c).NotTo(BeNil(), "%s has no Stale condition", obj.GetName())
			Expect(c.Status).To(Equal(metav1.ConditionTrue))
			Expect(c.Reason).To(Equal(cxv1.CollectorUnavailableReason))
		}
		Expect(jny.Status.Stages).To(HaveLen(1))
		Expect(jny.Status.Stages[0].Name).To(Equal("chat"))
		Expect(jny.Status.Targets).NotTo(BeNil())
	})

	It("a CXTarget whose subject cannot be read says so instead of keeping Ready=True", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		cxt := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "chat-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
		}}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		expectReady(ctx, cxt, metav1.ConditionTrue, cxv1.ReconciledReason)

		lift := faults.inject("get", ns, "chat", isA[*cxv1.Touchpoint], apierrors.NewServiceUnavailable("etcd is restarting"))
		DeferCleanup(lift)
		expectFailure(ctx, cxt, cxv1.ReadFailedReason, false, "get Touchpoint "+ns+"/chat: ", "etcd is restarting")

		lift()
		expectReady(ctx, cxt, metav1.ConditionTrue, cxv1.ReconciledReason)
	})

	It("a Journey whose references or targets cannot be read keeps its last numbers marked Stale, naming what failed", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		jny := &cxv1.Journey{ObjectMeta: metaOf(ns, "get-help"), Spec: cxv1.JourneySpec{
			Stages: []cxv1.JourneyStage{{Name: "chat", Touchpoints: []string{"chat"}}},
		}}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		expectReady(ctx, jny, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(jny.Status.Stages).To(HaveLen(1))
		Expect(jny.Status.Targets).NotTo(BeNil())

		kept := func(what string) {
			GinkgoHelper()
			Expect(jny.Status.Stages).To(HaveLen(1), "%s cleared the stages", what)
			Expect(jny.Status.Stages[0].Name).To(Equal("chat"))
			Expect(jny.Status.Targets).NotTo(BeNil(), "%s cleared the target counts", what)
			c := meta.FindStatusCondition(jny.Status.Conditions, cxv1.StaleCondition)
			Expect(c).NotTo(BeNil(), "%s: no Stale condition", what)
			Expect(c.Status).To(Equal(metav1.ConditionTrue))
			Expect(c.Reason).To(Equal(cxv1.ReadFailedReason))
			Expect(c.Message).To(And(HavePrefix("The numbers are those of the last good reading, at "), ContainSubstring("etcd is restarting")))
		}
		recovered := func() {
			GinkgoHelper()
			expectReady(ctx, jny, metav1.ConditionTrue, cxv1.ReconciledReason)
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(jny), jny)).To(Succeed())
				g.Expect(meta.FindStatusCondition(jny.Status.Conditions, cxv1.StaleCondition)).To(BeNil())
			}).Should(Succeed())
		}

		By("the targets cannot be listed")
		lift := faults.inject("list", ns, "", isA[*cxv1.CXTargetList], apierrors.NewServiceUnavailable("etcd is restarting"))
		DeferCleanup(lift)
		expectFailure(ctx, jny, cxv1.ReadFailedReason, false, "measure the journey: list targets of Journey/get-help: ", "etcd is restarting")
		kept("a failed list")
		lift()
		recovered()

		By("a stage's Touchpoint cannot be read")
		lift = faults.inject("get", ns, "chat", isA[*cxv1.Touchpoint], apierrors.NewServiceUnavailable("etcd is restarting"))
		DeferCleanup(lift)
		expectFailure(ctx, jny, cxv1.ReadFailedReason, false, "resolve references: get Touchpoint "+ns+"/chat: ", "etcd is restarting")
		kept("a failed get")
		lift()
		recovered()
	})
})

var _ = Describe("Idle reconciles", func() {
	It("write nothing once status says what is true, for every kind", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"customers": "c-1\n"}})).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		svy.Spec.Schedule = &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers"}}
		svy.Spec.ClosedLoop = &cxv1.ClosedLoop{DetractorWebhook: &cxv1.WebhookSpec{
			URL: "https://crm.example.com/detractors", SecretRef: cxv1.SecretKeyReference{Name: "absent", Key: "signing-key"}}}
		jny := &cxv1.Journey{ObjectMeta: metaOf(ns, "get-help"), Spec: cxv1.JourneySpec{
			Stages: []cxv1.JourneyStage{{Name: "chat", Touchpoints: []string{"chat"}}}, Surveys: []string{"support-nps"},
		}}
		cxt := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "chat-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
		}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		objs := []client.Object{&cxv1.Touchpoint{ObjectMeta: metaOf(ns, "chat")}, svy, jny, cxt}
		expectReady(ctx, objs[0], metav1.ConditionTrue, cxv1.ReconciledReason)
		expectReady(ctx, jny, metav1.ConditionTrue, cxv1.ReconciledReason)
		expectReady(ctx, cxt, metav1.ConditionTrue, cxv1.ReconciledReason)
		// A failing object is idle too: its failure is written once. It is
		// not held back for its collector (new objects are, see
		// holdFirstStatus), so wait until status shows the collector too.
		expectFailure(ctx, svy, cxv1.WebhookKeyMissingReason, true, `Secret "absent" not found`)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.Ingest).NotTo(BeNil())
		}).Should(Succeed())

		versions := func() []string {
			var vs []string
			for _, obj := range objs {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
				vs = append(vs, obj.GetResourceVersion())
			}
			return vs
		}
		before := versions()
		// The suite refreshes every 2 s: three refreshes of each object.
		Consistently(versions, "6s", "500ms").Should(Equal(before))
	})
})
