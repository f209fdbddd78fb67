package controllers

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// webhookReceiver records signed webhooks, verifying each with the
// Standard Webhooks reference library.
type webhookReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	received []map[string]any
}

func newWebhookReceiver(secret string) *webhookReceiver {
	v, err := standardwebhooks.NewWebhook(secret)
	Expect(err).NotTo(HaveOccurred())
	r := &webhookReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer GinkgoRecover()
		data, _ := io.ReadAll(req.Body)
		Expect(v.Verify(data, req.Header)).To(Succeed(), "webhook signature")
		var body map[string]any
		Expect(json.Unmarshal(data, &body)).To(Succeed())
		r.mu.Lock()
		r.received = append(r.received, body)
		r.mu.Unlock()
	}))
	DeferCleanup(r.srv.Close)
	return r
}

func (r *webhookReceiver) ofType(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, b := range r.received {
		if b["type"] == typ {
			out = append(out, b)
		}
	}
	return out
}

var formToken = regexp.MustCompile(`name="form" value="([0-9a-f]+)"`)

var _ = Describe("Surveys end to end", func() {
	It("invites after an interaction, takes the answer on the hosted page, and follows up the detractor", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		rcv := newWebhookReceiver(secret)
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": secret},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		hook := func(path string) *cxv1.WebhookSpec {
			return &cxv1.WebhookSpec{URL: rcv.srv.URL + path, SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}
		}
		svy := npsSurvey(ns, "support-nps", "chat")
		svy.Spec.Trigger.SamplePercent = ptrTo(resource.MustParse("100"))
		svy.Spec.FollowUpQuestion = "What is the main reason for your score?"
		svy.Spec.Throttle = &cxv1.SurveyThrottle{PerCustomer: "30d"}
		svy.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: hook("/invitations")}
		svy.Spec.ClosedLoop = &cxv1.ClosedLoop{DetractorWebhook: hook("/detractors")}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)

		By("posting one interaction with the Touchpoint's token")
		tpToken := tokenOf(ctx, ns, TouchpointTokenSecretName("chat"))
		Eventually(func() int {
			code, _ := post(collectors.URL(ns)+"/v1/events", tpToken,
				fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c-42","time":%q,"contact":{"email":"ana@example.com"}}`, time.Now().UTC().Format(time.RFC3339)))
			return code
		}).Should(Equal(200))

		By("receiving the signed invitation")
		Eventually(func() int { return len(rcv.ofType("survey.invitation")) }).Should(Equal(1))
		inv := rcv.ofType("survey.invitation")[0]
		Expect(inv).To(HaveKeyWithValue("customer", "c-42"))
		Expect(inv).To(HaveKeyWithValue("question", svy.Spec.Question))
		link := inv["link"].(string)
		Expect(link).To(HavePrefix(collectors.URL(ns) + "/s/"))

		By("answering 3 out of 10 on the hosted page")
		resp, err := http.Get(link)
		Expect(err).NotTo(HaveOccurred())
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		Expect(string(page)).To(ContainSubstring("<legend>" + svy.Spec.Question + "</legend>"))
		form := formToken.FindStringSubmatch(string(page))
		Expect(form).To(HaveLen(2))
		resp, err = http.PostForm(link, url.Values{"form": {form[1]}, "score": {"3"}, "comment": {"I waited too long."}})
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))

		By("seeing the detractor webhook fire and the Survey's status count it")
		Eventually(func() int { return len(rcv.ofType("survey.detractor")) }).Should(Equal(1))
		Expect(rcv.ofType("survey.detractor")[0]).To(HaveKeyWithValue("score", 3.0))
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			st := svy.Status
			g.Expect(st.Responses).To(BeEquivalentTo(1))
			g.Expect(st.Detractors).To(BeEquivalentTo(1))
			g.Expect(st.Score).To(Equal("-100"))
			g.Expect(st.InvitationsSent).To(BeEquivalentTo(1))
			g.Expect(st.ResponseRate).To(Equal("100"))
			g.Expect(st.OpenDetractors).To(BeEquivalentTo(1))
			delivering := meta.FindStatusCondition(st.Conditions, cxv1.DeliveringCondition)
			g.Expect(delivering).NotTo(BeNil())
			g.Expect(delivering.Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())

		By("following the detractor up with the Survey's token")
		surveyToken := tokenOf(ctx, ns, SurveyTokenSecretName("support-nps"))
		detractor := rcv.ofType("survey.detractor")[0]["detractor"].(string)
		code, body := post(collectors.URL(ns)+"/v1/followups/"+detractor, surveyToken, "")
		Expect(code).To(Equal(200), body)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.OpenDetractors).To(BeZero())
			g.Expect(svy.Status.FollowUpP50).NotTo(BeEmpty())
		}).Should(Succeed())
	})

	It("says so when a webhook's signing key is missing, and delivers once it appears", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		rcv := newWebhookReceiver(secret)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		svy.Spec.Delivery = &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: rcv.srv.URL, SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			c := meta.FindStatusCondition(svy.Status.Conditions, cxv1.DeliveringCondition)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(cxv1.WebhookKeyMissingReason))
			g.Expect(c.Message).To(ContainSubstring(`spec.delivery.webhook.secretRef: Secret "mailer" not found`))
		}).Should(Succeed())

		tpToken := tokenOf(ctx, ns, TouchpointTokenSecretName("chat"))
		Eventually(func() int {
			code, _ := post(collectors.URL(ns)+"/v1/events", tpToken,
				fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c-1","time":%q}`, time.Now().UTC().Format(time.RFC3339)))
			return code
		}).Should(Equal(200))
		Consistently(func() int { return len(rcv.ofType("survey.invitation")) }, 2*time.Second).Should(BeZero())

		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": secret},
		})).To(Succeed())
		// The key is picked up on the collector's next look at the
		// namespace, 30 s at most; a Survey change brings it sooner.
		Expect(updateObject(ctx, svy, func() { svy.Spec.Question = strings.TrimSuffix(svy.Spec.Question, "?") + " today?" })).To(Succeed())
		Eventually(func() int { return len(rcv.ofType("survey.invitation")) }, 30*time.Second).Should(Equal(1))
	})
})

var _ = Describe("Scheduled waves", func() {
	It("runs a Survey's waves as a CronJob it owns, and shows when the next is due", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"), Data: map[string]string{"customers.txt": "c-1\nc-2,bo@example.com\n"}})).To(Succeed())
		svy := &cxv1.Survey{ObjectMeta: metaOf(ns, "quarterly-nps"), Spec: cxv1.SurveySpec{
			Type: cxv1.SurveyTypeNPS, Question: "How likely are you to recommend us?",
			Schedule: &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", TimeZone: "Europe/Paris",
				Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers.txt"}},
		}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())

		var cj batchv1.CronJob
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cxop-wave-quarterly-nps"}, &cj)
		}).Should(Succeed())
		Expect(cj.Spec.Schedule).To(Equal("0 9 1 */3 *"))
		Expect(*cj.Spec.TimeZone).To(Equal("Europe/Paris"))
		Expect(*cj.Spec.Suspend).To(BeFalse())
		Expect(cj.Spec.ConcurrencyPolicy).To(Equal(batchv1.ForbidConcurrent))
		Expect(cj.OwnerReferences).To(HaveLen(1))
		Expect(cj.OwnerReferences[0].Name).To(Equal("quarterly-nps"))
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		Expect(pod.Containers[0].Args).To(ContainElements("survey-wave", "--survey=quarterly-nps",
			"--collector=http://cxop-collector."+ns+".svc:8080", "--audience=/etc/cxop-audience/customers.txt", "--wave=$(JOB_NAME)"))
		Expect(*pod.AutomountServiceAccountToken).To(BeFalse())
		Expect(pod.Volumes[0].Secret.SecretName).To(Equal("cxop-survey-quarterly-nps"))
		Expect(pod.ImagePullSecrets).To(Equal([]corev1.LocalObjectReference{{Name: "registry-cred"}}))
		// The token file is root-owned 0440; only the fsGroup lets uid 65532 read it.
		Expect(*pod.SecurityContext.FSGroup).To(Equal(int64(65532)))
		Expect(*cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds).To(BeNumerically(">", 0))

		paris, err := time.LoadLocation("Europe/Paris")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.NextScheduleTime).NotTo(BeNil())
			next := svy.Status.NextScheduleTime.In(paris)
			g.Expect(next.Day()).To(Equal(1))
			g.Expect(next.Hour()).To(Equal(9))
			g.Expect(int(next.Month()) % 3).To(Equal(1)) // January, April, July, October
			g.Expect(next.After(time.Now())).To(BeTrue())
		}).Should(Succeed())

		By("suspending the Survey: the CronJob is suspended and no wave is due")
		Expect(updateObject(ctx, svy, func() { svy.Spec.Suspend = true })).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&cj), &cj)).To(Succeed())
			g.Expect(*cj.Spec.Suspend).To(BeTrue())
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.NextScheduleTime).To(BeNil())
		}).Should(Succeed())

		By("making it transactional instead: the CronJob goes")
		Expect(updateObject(ctx, svy, func() {
			svy.Spec.Schedule = nil
			svy.Spec.Trigger = &cxv1.SurveyTrigger{Touchpoints: []string{"chat"}}
		})).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(&cj), &batchv1.CronJob{}))
		}).Should(BeTrue())
	})
})

var _ = Describe("Waves without a CronJob controller", func() {
	It("sends the due wave from the manager, once, under cxop dev", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		const secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
		rcv := newWebhookReceiver(secret)
		Expect(k8sClient.Create(ctx, &corev1.Secret{ObjectMeta: metaOf(ns, "mailer"), StringData: map[string]string{"signing-key": secret}})).To(Succeed())
		Expect(k8sClient.Create(ctx, touchpoint(ns, "chat"))).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.ConfigMap{ObjectMeta: metaOf(ns, "panel"),
			Data: map[string]string{"customers": "p-1,p1@example.com\np-2\np-3,p3@example.com\n"}})).To(Succeed())
		svy := &cxv1.Survey{ObjectMeta: metaOf(ns, "panel-nps"), Spec: cxv1.SurveySpec{
			Type: cxv1.SurveyTypeNPS, Question: "How likely are you to recommend us?",
			Schedule: &cxv1.SurveySchedule{Cron: "* * * * *", Audience: cxv1.ConfigMapKeyReference{Name: "panel", Key: "customers"}},
			Delivery: &cxv1.SurveyDelivery{Webhook: &cxv1.WebhookSpec{URL: rcv.srv.URL, SecretRef: cxv1.SecretKeyReference{Name: "mailer", Key: "signing-key"}}},
		}}
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())
		expectReady(ctx, svy, metav1.ConditionTrue, cxv1.ReconciledReason)
		tokenOf(ctx, ns, SurveyTokenSecretName("panel-nps"))
		Eventually(func() string { return collectors.URL(ns) }).ShouldNot(BeEmpty())

		// A reconciler as `cxop dev` runs it: no CronJobs.
		local := &SurveyReconciler{Client: k8sClient, APIReader: k8sClient, Live: &StatusSource{Runtime: collectors}, Waves: ManagerWaves{}}
		audience, err := local.readAudience(ctx, svy)
		Expect(err).NotTo(HaveOccurred())
		now := time.Now()
		svy.CreationTimestamp = metav1.NewTime(now.Add(-3 * time.Minute))
		svy.Status.LastScheduleTime = nil
		Eventually(func() (err error) {
			svy.Status.LastScheduleTime, err = ManagerWaves{}.send(ctx, local, svy, audience, now)
			return err
		}).Should(Succeed())
		Expect(svy.Status.LastScheduleTime).NotTo(BeNil())
		Expect(svy.Status.LastScheduleTime.Time).To(Equal(now.Truncate(time.Minute).UTC()))
		Eventually(func() int { return len(rcv.ofType("survey.invitation")) }).Should(Equal(3))

		By("not sending it again, not even when the status write was lost")
		sent, err := ManagerWaves{}.send(ctx, local, svy, audience, now)
		Expect(err).NotTo(HaveOccurred())
		Expect(sent).To(BeNil(), "the wave of %s was sent already", now.Truncate(time.Minute))
		svy.Status.LastScheduleTime = nil
		_, err = ManagerWaves{}.send(ctx, local, svy, audience, now)
		Expect(err).NotTo(HaveOccurred())
		Consistently(func() int { return len(rcv.ofType("survey.invitation")) }, 2*time.Second).Should(Equal(3))
	})
})

func ptrTo[T any](v T) *T { return &v }
