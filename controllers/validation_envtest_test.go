package controllers

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Each invalid object must be rejected by the API server itself (schema and
// CEL rules in the CRD), with a message that names the offending field, so
// `kubectl apply` of a bad object fails at once and says why.
var _ = Describe("API validation", func() {
	DescribeTable("rejects invalid objects with a message naming the field",
		func(ctx SpecContext, doc string, wantField, wantMessage string) {
			ns := newNamespace(ctx)
			err := k8sClient.Create(ctx, objectFromYAML(ns, doc))
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(wantField))
			Expect(err.Error()).To(ContainSubstring(wantMessage))
			GinkgoWriter.Println(err.Error())
		},
		Entry("a Touchpoint channel outside the enum", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: fax}
spec: {channel: fax}`, "spec.channel", `Unsupported value: "fax"`),
		// Names the API server takes but the collector or the token Secrets
		// could not: refused at apply, naming metadata.name.
		Entry("a Touchpoint name with a dot", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: web.shop}
spec: {channel: web}`, "metadata.name", "must be a DNS-1123 label"),
		Entry("a Touchpoint name longer than 63 characters", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: a123456789b123456789c123456789d123456789e123456789f123456789g1234}
spec: {channel: web}`, "metadata.name", "must be a DNS-1123 label"),
		Entry("a Survey name with a dot", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: nps.after.chat}
spec: {type: NPS, question: "Would you recommend us?", trigger: {touchpoints: [chat]}}`, "metadata.name", "must be a DNS-1123 label"),
		Entry("a Survey named like the namespace's link-key Secret", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: link-keys}
spec: {type: NPS, question: "Would you recommend us?", trigger: {touchpoints: [chat]}}`, "metadata.name", "link-keys is reserved"),
		Entry("a Touchpoint without a channel", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: nochannel}
spec: {displayName: Somewhere}`, "spec.channel", "Required value"),
		Entry("a wait threshold that is not a duration", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: chat}
spec: {channel: chat, waitTime: {threshold: 2 minutes}}`, "spec.waitTime.threshold", "should match"),
		Entry("a zero window", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: chat}
spec: {channel: chat, window: 0d}`, "spec.window", "must be greater than zero"),
		Entry("business hours that end before they start", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: chat}
spec:
  channel: chat
  businessHours:
    hours: [{days: [Monday], start: "18:00", end: "09:00"}]`, "spec.businessHours.hours[0]", "start must be before end"),
		Entry("business hours on a day that does not exist", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata: {name: chat}
spec:
  channel: chat
  businessHours:
    hours: [{days: [Funday], start: "09:00", end: "17:00"}]`, "spec.businessHours.hours[0].days[0]", `Unsupported value: "Funday"`),
		Entry("a Survey with neither trigger nor schedule", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: orphan}
spec: {type: NPS, question: "Would you recommend us?"}`, "spec", "spec must set trigger, schedule, or both"),
		Entry("a Survey type outside the enum", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: wrongtype}
spec: {type: CES2, question: "How easy?", trigger: {touchpoints: [chat]}}`, "spec.type", `Unsupported value: "CES2"`),
		Entry("a samplePercent above 100", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: oversampled}
spec: {type: NPS, question: "Would you recommend us?", trigger: {touchpoints: [chat], samplePercent: 150}}`,
			"spec.trigger.samplePercent", "must be between 0 and 100"),
		Entry("a trigger with no touchpoints", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: notrigger}
spec: {type: NPS, question: "Would you recommend us?", trigger: {touchpoints: []}}`,
			"spec.trigger.touchpoints", "should have at least 1 items"),
		Entry("a cron expression without five fields", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: wave}
spec:
  type: CSAT
  question: "How satisfied are you?"
  schedule: {cron: "every monday", audience: {name: customers, key: list}}`,
			"spec.schedule.cron", "must have five fields"),
		Entry("a webhook URL that is not a URL", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata: {name: hook}
spec:
  type: NPS
  question: "Would you recommend us?"
  trigger: {touchpoints: [chat]}
  delivery: {webhook: {url: "not a url", secretRef: {name: hook, key: key}}}`,
			"spec.delivery.webhook.url", "must be an absolute http or https URL"),
		Entry("a Journey without stages", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Journey
metadata: {name: empty}
spec: {stages: []}`, "spec.stages", "should have at least 1 items"),
		Entry("a Journey stage without touchpoints", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Journey
metadata: {name: hollow}
spec: {stages: [{name: browse, touchpoints: []}]}`, "spec.stages[0].touchpoints", "should have at least 1 items"),
		Entry("a Journey with two stages of the same name", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Journey
metadata: {name: twice}
spec:
  stages:
    - {name: browse, touchpoints: [web]}
    - {name: browse, touchpoints: [chat]}`, "spec.stages", "stage names must be unique"),
		Entry("a Journey stage name that is not a DNS label", `
apiVersion: cx.cxop.dev/v1alpha1
kind: Journey
metadata: {name: shouting}
spec: {stages: [{name: Browse_Products, touchpoints: [web]}]}`, "spec.stages[0].name", "should match"),
		Entry("a CXTarget with two subjects", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: both}
spec:
  touchpointRef: {name: chat}
  surveyRef: {name: nps}
  objective: {nps: {min: 40}}`, "spec", "spec must set exactly one of journeyRef, touchpointRef or surveyRef"),
		Entry("a CXTarget with no subject", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: nobody}
spec:
  objective: {nps: {min: 40}}`, "spec", "spec must set exactly one of journeyRef, touchpointRef or surveyRef"),
		Entry("a CXTarget with two objectives", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: greedy}
spec:
  surveyRef: {name: nps}
  objective: {nps: {min: 40}, csat: {min: 80}}`, "spec.objective",
			"spec.objective must set exactly one of nps, csat, ces, waitTime, responseRate or firstContactResolution"),
		Entry("a CXTarget with no objective", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: aimless}
spec:
  surveyRef: {name: nps}
  objective: {}`, "spec.objective",
			"spec.objective must set exactly one of nps, csat, ces, waitTime, responseRate or firstContactResolution"),
		Entry("a CXTarget with the removed alerting webhook", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: hooked}
spec:
  surveyRef: {name: nps}
  objective: {nps: {min: 40}}
  alerting:
    webhook: {url: "https://hooks.example/cx", secretRef: {name: hook, key: key}}`, "spec.alerting",
			"spec.alerting.webhook is removed: route breaches through Alertmanager's receivers"),
		Entry("an NPS minimum above 100", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: impossible}
spec:
  surveyRef: {name: nps}
  objective: {nps: {min: 150}}`, "spec.objective.nps.min", "should be less than or equal to 100"),
		Entry("an NPS minimum below -100", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: trivial}
spec:
  surveyRef: {name: nps}
  objective: {nps: {min: -101}}`, "spec.objective.nps.min", "should be greater than or equal to -100"),
		Entry("a CSAT minimum above 100 percent", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: csat}
spec:
  surveyRef: {name: csat}
  objective: {csat: {min: 101}}`, "spec.objective.csat.min", "must be between 0 and 100"),
		Entry("a CES minimum off the 1-7 scale", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: ces}
spec:
  surveyRef: {name: ces}
  objective: {ces: {min: "7.5"}}`, "spec.objective.ces.min", "must be between 1 and 7"),
		Entry("a wait-time percent of 100, which leaves no error budget", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: perfect}
spec:
  touchpointRef: {name: chat}
  objective: {waitTime: {threshold: 2m, percent: 100}}`, "spec.objective.waitTime.percent", "must be greater than 0 and less than 100"),
		Entry("a fractional percent written as a YAML number instead of a quoted quantity", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: unquoted}
spec:
  touchpointRef: {name: chat}
  objective: {waitTime: {threshold: 2m, percent: 99.5}}`, "spec.objective.waitTime.percent", "must be of type integer,string"),
		Entry("a wait-time objective on a Survey", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: mixed}
spec:
  surveyRef: {name: nps}
  objective: {waitTime: {threshold: 2m, percent: 95}}`, "spec", "spec.objective.waitTime needs a touchpointRef or journeyRef subject"),
		Entry("an NPS objective on a Touchpoint", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: mixed}
spec:
  touchpointRef: {name: chat}
  objective: {nps: {min: 40}}`, "spec", "spec.objective nps, csat and ces need a surveyRef or journeyRef subject"),
		Entry("a minSamples of zero", `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: reckless}
spec:
  surveyRef: {name: nps}
  objective: {nps: {min: 40}}
  minSamples: 0`, "spec.minSamples", "should be greater than or equal to 1"),
	)

	Describe("the subject of a CXTarget", func() {
		var ns string
		var cxt *unstructured.Unstructured
		BeforeEach(func(ctx SpecContext) {
			ns = newNamespace(ctx)
			cxt = objectFromYAML(ns, `
apiVersion: cx.cxop.dev/v1alpha1
kind: CXTarget
metadata: {name: chat-wait}
spec:
  touchpointRef: {name: chat}
  objective: {waitTime: {threshold: 2m, percent: 95}}`)
			Expect(k8sClient.Create(ctx, cxt)).To(Succeed())
		})

		It("cannot be renamed", func(ctx SpecContext) {
			err := updateObject(ctx, cxt, func() {
				Expect(unstructured.SetNestedField(cxt.Object, "phone", "spec", "touchpointRef", "name")).To(Succeed())
			})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.touchpointRef: Invalid value"))
			Expect(err.Error()).To(ContainSubstring("spec.touchpointRef is immutable"))
		})

		It("cannot change kind", func(ctx SpecContext) {
			err := updateObject(ctx, cxt, func() {
				unstructured.RemoveNestedField(cxt.Object, "spec", "touchpointRef")
				Expect(unstructured.SetNestedField(cxt.Object, "chat", "spec", "journeyRef", "name")).To(Succeed())
			})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec subject (journeyRef, touchpointRef or surveyRef) is immutable"))
		})

		It("keeps other fields editable", func(ctx SpecContext) {
			Expect(updateObject(ctx, cxt, func() {
				Expect(unstructured.SetNestedField(cxt.Object, "7d", "spec", "window")).To(Succeed())
			})).To(Succeed())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cxt), cxt)).To(Succeed())
			Expect(cxt.GetGeneration()).To(Equal(int64(2)))
		})
	})
})
