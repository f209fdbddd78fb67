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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// health is what Argo CD (through config/argocd/health.lua) and kstatus
// say of one object.
type health struct {
	Argo, ArgoMessage string
	KStatus           status.Status
}

// healthOf reads obj from the API server and judges it both ways.
func healthOf(ctx SpecContext, obj client.Object) health {
	GinkgoHelper()
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	return judge(obj)
}

// judge judges obj as it is, both ways.
func judge(obj client.Object) health {
	GinkgoHelper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: content}
	gvk, err := apiutil.GVKForObject(obj, scheme)
	Expect(err).NotTo(HaveOccurred())
	u.SetGroupVersionKind(gvk)
	argo, msg, err := argoHealth(healthScript(GinkgoT()), u.Object)
	Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return health{Argo: argo, ArgoMessage: msg, KStatus: res.Status}
}

var _ = Describe("Argo CD health and kstatus", func() {
	It("judge real objects as the README says, Breached and Stalled as Degraded, Reconciling as Progressing", func(ctx SpecContext) {
		ns := newNamespace(ctx)

		By("a Touchpoint whose collector answers: Healthy, Current")
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReady(ctx, tp, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(healthOf(ctx, tp)).To(Equal(health{"Healthy", "Reconciled: Spec is valid and every reference resolves", status.CurrentStatus}))

		By("the same Touchpoint with a spec the manager has not observed: Progressing, InProgress")
		newer := tp.DeepCopy()
		newer.Generation++
		Expect(judge(newer)).To(Equal(health{"Progressing", "Waiting for the cxop manager to observe this generation", status.InProgressStatus}))

		By("a Journey of it: Healthy, Current")
		jny := &cxv1.Journey{ObjectMeta: metaOf(ns, "get-help"), Spec: cxv1.JourneySpec{
			Stages: []cxv1.JourneyStage{{Name: "chat", Touchpoints: []string{"chat"}}},
		}}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		expectReady(ctx, jny, metav1.ConditionTrue, cxv1.ReconciledReason)
		Expect(healthOf(ctx, jny)).To(Equal(health{"Healthy", "Reconciled: Spec is valid and every reference resolves", status.CurrentStatus}))

		By("a CXTarget on a Touchpoint that does not exist: Progressing, InProgress")
		ghost := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "ghost-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "ghost"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
		}}
		Expect(k8sClient.Create(ctx, ghost)).To(Succeed())
		expectReady(ctx, ghost, metav1.ConditionFalse, cxv1.TouchpointNotFoundReason)
		Expect(healthOf(ctx, ghost)).To(Equal(health{"Progressing", `TouchpointNotFound: Touchpoint "ghost" not found`, status.InProgressStatus}))

		By("a Survey whose schedule cannot be parsed: Degraded, Failed")
		bad := npsSurvey(ns, "bad-cron", "chat")
		bad.Spec.Schedule = &cxv1.SurveySchedule{Cron: "0 9 31 2 mon-xyz", Audience: cxv1.ConfigMapKeyReference{Name: "customers", Key: "list"}}
		Expect(k8sClient.Create(ctx, bad)).To(Succeed())
		expectReady(ctx, bad, metav1.ConditionFalse, cxv1.InvalidSpecReason)
		h := healthOf(ctx, bad)
		Expect(h.Argo).To(Equal("Degraded"))
		Expect(h.ArgoMessage).To(HavePrefix(`InvalidSpec: spec.schedule.cron: "0 9 31 2 mon-xyz" is not a valid cron expression`))
		Expect(h.KStatus).To(Equal(status.FailedStatus))

		By("a Survey whose webhook signing key is missing: Degraded, Failed (stalled until someone creates the Secret)")
		hooked := npsSurvey(ns, "hooked", "chat")
		hooked.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: "https://mailer.example.com/i", SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}}
		Expect(k8sClient.Create(ctx, hooked)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(hooked), hooked)).To(Succeed())
			c := meta.FindStatusCondition(hooked.Status.Conditions, cxv1.DeliveringCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(cxv1.WebhookKeyMissingReason))
		}).Should(Succeed())
		h = healthOf(ctx, hooked)
		Expect(h.Argo).To(Equal("Degraded"))
		Expect(h.ArgoMessage).To(HavePrefix(`WebhookKeyMissing: spec.delivery.webhook.secretRef: Secret "mailer" not found`))
		Expect(h.KStatus).To(Equal(status.FailedStatus))

		By("a CXTarget met, then breached: Healthy then Degraded for Argo CD; Current for kstatus, which judges reconciliation, not objectives")
		cxt := &cxv1.CXTarget{ObjectMeta: metaOf(ns, "chat-wait"), Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: "chat"},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
			MinSamples:    ptr.To[int32](10),
		}}
		Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
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
		send("ok", 20, 30)
		state(cxv1.TargetStateMet)
		h = healthOf(ctx, cxt)
		Expect(h.Argo).To(Equal("Healthy"))
		Expect(h.ArgoMessage).To(HavePrefix("Met: "))
		Expect(h.KStatus).To(Equal(status.CurrentStatus))

		send("slow", 20, 300)
		state(cxv1.TargetStateBreached)
		h = healthOf(ctx, cxt)
		Expect(h.Argo).To(Equal("Degraded"))
		Expect(h.ArgoMessage).To(HavePrefix("Breached: "))
		Expect(meta.IsStatusConditionTrue(cxt.Status.Conditions, cxv1.ReadyCondition)).To(BeTrue(), "a Breached target is evaluated, so Ready")
		Expect(h.KStatus).To(Equal(status.CurrentStatus))

		By("an object just created, before the manager wrote its status: Progressing for Argo CD; kstatus cannot tell and says Current")
		fresh := &cxv1.Touchpoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh", Generation: 1}}
		Expect(judge(fresh)).To(Equal(health{"Progressing", "Waiting for the cxop manager to observe this generation", status.CurrentStatus}))
	})
})
