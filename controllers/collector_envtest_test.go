package controllers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// tokenOf waits for the token Secret named and returns its token.
func tokenOf(ctx context.Context, ns, name string) string {
	var token string
	Eventually(func(g Gomega) {
		var sec corev1.Secret
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sec)).To(Succeed())
		token = string(sec.Data[TokenKey])
		g.Expect(token).To(HaveLen(64))
	}).Should(Succeed())
	return token
}

// post sends body to url with token and returns the status code and body.
func post(url, token, body string) (int, string) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

var _ = Describe("Collector provisioning and live status", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	It("runs a collector for the namespace, hands out scoped tokens and shows its numbers in status", func(ctx SpecContext) {
		tp := touchpoint(ns, "chat")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		svy := npsSurvey(ns, "support-nps", "chat")
		Expect(k8sClient.Create(ctx, svy)).To(Succeed())

		tpToken := tokenOf(ctx, ns, TouchpointTokenSecretName("chat"))
		svyToken := tokenOf(ctx, ns, SurveyTokenSecretName("support-nps"))
		Expect(tpToken).NotTo(Equal(svyToken))

		// The config holds hashes, never tokens.
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorConfigMapName}, &cm)).To(Succeed())
		var cfg collectorapi.Config
		Expect(yaml.UnmarshalStrict([]byte(cm.Data[CollectorConfigKey]), &cfg)).To(Succeed())
		Expect(cfg.Touchpoints).To(HaveLen(1))
		Expect(cfg.Touchpoints[0].Name).To(Equal("chat"))
		Expect(cfg.Touchpoints[0].WaitThreshold).To(Equal("2m"))
		Expect(cfg.Touchpoints[0].TokenSHA256).To(Equal([]string{collectorapi.HashToken(tpToken)}))
		Expect(cfg.Surveys).To(HaveLen(1))
		Expect(cm.Data[CollectorConfigKey]).NotTo(ContainSubstring(tpToken))
		// Every config carries the read token the manager reads with: the
		// collector serves no summary or export without one.
		readToken := tokenOf(ctx, ns, ReadTokenSecretName)
		Expect(cfg.ReadTokenSHA256).To(Equal([]string{collectorapi.HashToken(readToken)}))

		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		Expect(tp.Status.Ingest).NotTo(BeNil())
		Expect(tp.Status.Ingest.TokenSecretRef.Name).To(Equal("cxop-touchpoint-chat"))
		url := tp.Status.Ingest.URL
		Expect(url).To(HavePrefix("http://127.0.0.1:"))

		// Four waits against a 2m threshold: two compliant.
		at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		var events bytes.Buffer
		for i, wait := range []int{30, 60, 150, 300} {
			fmt.Fprintf(&events, `{"id":"e%d","touchpoint":"chat","customer":"c%d","time":%q,"waitSeconds":%d}`+"\n", i, i, at, wait)
		}
		code, body := post(url+"/v1/events", tpToken, events.String())
		Expect(code).To(Equal(200), body)
		// A survey's token is no touchpoint's token.
		code, _ = post(url+"/v1/events", svyToken, events.String())
		Expect(code).To(Equal(401))

		// Ten answers: 5 promoters, 3 passives, 2 detractors: NPS 30.
		var answers bytes.Buffer
		for i, s := range []int{10, 9, 9, 10, 9, 8, 7, 8, 3, 6} {
			fmt.Fprintf(&answers, `{"id":"r%d","survey":"support-nps","customer":"c%d","score":%d,"time":%q}`+"\n", i, i, s, at)
		}
		code, body = post(url+"/v1/responses", svyToken, answers.String())
		Expect(code).To(Equal(200), body)

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(tp), tp)).To(Succeed())
			g.Expect(tp.Status.Interactions).To(BeEquivalentTo(4))
			g.Expect(tp.Status.WaitCompliance).To(Equal("50"))
			g.Expect(tp.Status.LastEventTime).NotTo(BeNil())
		}).Should(Succeed())
		// The median of 30, 60, 150 and 300 is read from the DDSketch as the
		// lower middle value, 60s, within its 1% relative error.
		Expect(tp.Status.WaitP50).To(Equal("59.7s"))

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svy), svy)).To(Succeed())
			g.Expect(svy.Status.Responses).To(BeEquivalentTo(10))
			g.Expect(svy.Status.Score).To(Equal("30"))
			g.Expect([]int64{svy.Status.Promoters, svy.Status.Passives, svy.Status.Detractors}).To(Equal([]int64{5, 3, 2}))
		}).Should(Succeed())
		Expect(svy.Status.ScoreLower).NotTo(BeEmpty())
		Expect(svy.Status.Ingest.TokenSecretRef.Name).To(Equal("cxop-survey-support-nps"))

		// The numbers above came through the read token; nothing else reads.
		read := func(token string) int {
			req, err := http.NewRequest(http.MethodGet, url+"/v1/summary?survey=support-nps", nil)
			Expect(err).NotTo(HaveOccurred())
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return resp.StatusCode
		}
		Expect(read("")).To(Equal(401))
		Expect(read(svyToken)).To(Equal(401))
		Expect(read(readToken)).To(Equal(200))
	})

	It("shows a Journey's stages: interactions, distinct customers, compliance, NPS and conversion", func(ctx SpecContext) {
		for _, name := range []string{"web", "chat", "phone"} {
			Expect(k8sClient.Create(ctx, touchpoint(ns, name))).To(Succeed())
		}
		Expect(k8sClient.Create(ctx, npsSurvey(ns, "help-nps", "chat"))).To(Succeed())
		jny := &cxv1.Journey{
			ObjectMeta: metaOf(ns, "shop"),
			Spec: cxv1.JourneySpec{
				Stages: []cxv1.JourneyStage{
					{Name: "browse", Touchpoints: []string{"web"}},
					{Name: "get-help", Touchpoints: []string{"chat", "phone"}},
				},
				Surveys: []string{"help-nps"},
			},
		}
		Expect(k8sClient.Create(ctx, jny)).To(Succeed())
		tp := touchpoint(ns, "web")
		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		url := tp.Status.Ingest.URL

		at := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		send := func(touchpoint string, lines ...string) {
			code, body := post(url+"/v1/events", tokenOf(ctx, ns, TouchpointTokenSecretName(touchpoint)), strings.Join(lines, "\n"))
			Expect(code).To(Equal(200), body)
		}
		ev := func(id, tp, customer string, wait int) string {
			return fmt.Sprintf(`{"id":%q,"touchpoint":%q,"customer":%q,"time":%q,"waitSeconds":%d}`, id, tp, customer, at, wait)
		}
		// Four customers browse; two of them ask for help, one of those
		// on both the chat and the phone.
		send("web", ev("w1", "web", "c1", 1), ev("w2", "web", "c2", 1), ev("w3", "web", "c3", 1), ev("w4", "web", "c4", 1))
		send("chat", ev("h1", "chat", "c1", 60), ev("h2", "chat", "c2", 200))
		send("phone", ev("p1", "phone", "c2", 30))
		var answers []string
		for i, s := range []int{10, 9, 2} {
			answers = append(answers, fmt.Sprintf(`{"id":"a%d","survey":"help-nps","customer":"c%d","score":%d,"time":%q}`, i, i, s, at))
		}
		code, body := post(url+"/v1/responses", tokenOf(ctx, ns, SurveyTokenSecretName("help-nps")), strings.Join(answers, "\n"))
		Expect(code).To(Equal(200), body)

		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(jny), jny)).To(Succeed())
			g.Expect(jny.Status.Stages).To(Equal([]cxv1.JourneyStageStatus{
				{Name: "browse", Interactions: 4, Customers: 4, WaitCompliance: "100"},
				{Name: "get-help", Interactions: 3, Customers: 2, WaitCompliance: "66.7", Score: "33.3", Conversion: "50"},
			}))
			// 6 of 7 waits are within 2m.
			g.Expect(jny.Status.WaitCompliance).To(Equal("85.7"))
			g.Expect(jny.Status.NPS).To(Equal("33.3"))
			// The one wait over 2m was on the chat.
			g.Expect(jny.Status.WaitBudgetSpentBy).To(Equal([]cxv1.BudgetShare{{Touchpoint: "chat", Percent: "100"}}))
			g.Expect(jny.Status.Targets).To(Equal(&cxv1.TargetCounts{}))
		}).Should(Succeed())
	})

	It("rotates a token when its Secret is deleted, and removes the collector with the last Touchpoint", func(ctx SpecContext) {
		tp := touchpoint(ns, "phone")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		old := tokenOf(ctx, ns, TouchpointTokenSecretName("phone"))
		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		url := tp.Status.Ingest.URL

		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metaOf(ns, TouchpointTokenSecretName("phone"))})).To(Succeed())
		var fresh string
		Eventually(func(g Gomega) {
			fresh = tokenOf(ctx, ns, TouchpointTokenSecretName("phone"))
			g.Expect(fresh).NotTo(Equal(old))
		}).Should(Succeed())
		event := `{"id":"x","touchpoint":"phone","customer":"c","time":"` + time.Now().UTC().Format(time.RFC3339) + `"}`
		// The collector reloads its config: the new token works, the old one no longer does.
		Eventually(func() int { code, _ := post(url+"/v1/events", fresh, event); return code }).Should(Equal(200))
		Eventually(func() int { code, _ := post(url+"/v1/events", old, event); return code }).Should(Equal(401))

		Expect(k8sClient.Delete(ctx, tp)).To(Succeed())
		Eventually(func() bool {
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorConfigMapName}, &corev1.ConfigMap{})
			return apierrors.IsNotFound(err)
		}).Should(BeTrue())
		Eventually(func() string { return collectors.URL(ns) }).Should(BeEmpty())
		Eventually(func() bool {
			err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: TouchpointTokenSecretName("phone")}, &corev1.Secret{})
			return apierrors.IsNotFound(err)
		}).Should(BeTrue())
	})

	It("reports a collector that cannot answer as not ready, with no numbers", func(ctx SpecContext) {
		tp := touchpoint(ns, "store")
		Expect(k8sClient.Create(ctx, tp)).To(Succeed())
		expectReady(ctx, tp, "True", cxv1.ReconciledReason)
		Expect(collectors.Remove(ctx, ns)).To(Succeed())
		// Remove forgets the URL; the reconciler keeps asking the old one.
		expectReady(ctx, tp, "False", cxv1.CollectorUnavailableReason)
		Expect(tp.Status.Interactions).To(BeZero())
		Expect(tp.Status.WaitCompliance).To(BeEmpty())
	})
})

func metaOf(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
