package controllers

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// decodeObjects reads every object of a multi-document YAML stream.
func decodeObjects(data []byte) []*unstructured.Unstructured {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return objs
		}
		Expect(err).NotTo(HaveOccurred())
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(doc, &u.Object)).To(Succeed())
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// objectFromYAML decodes one object and places it in namespace.
func objectFromYAML(namespace, doc string) *unstructured.Unstructured {
	objs := decodeObjects([]byte(doc))
	Expect(objs).To(HaveLen(1))
	objs[0].SetNamespace(namespace)
	return objs[0]
}

func readFile(path string) []byte {
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return data
}

// conditionsOf returns the status conditions of any cxop object.
func conditionsOf(obj client.Object) []metav1.Condition {
	switch o := obj.(type) {
	case *cxv1.Touchpoint:
		return o.Status.Conditions
	case *cxv1.Survey:
		return o.Status.Conditions
	case *cxv1.Journey:
		return o.Status.Conditions
	case *cxv1.CXTarget:
		return o.Status.Conditions
	}
	panic("not a cxop object")
}

func observedGenerationOf(obj client.Object) int64 {
	switch o := obj.(type) {
	case *cxv1.Touchpoint:
		return o.Status.ObservedGeneration
	case *cxv1.Survey:
		return o.Status.ObservedGeneration
	case *cxv1.Journey:
		return o.Status.ObservedGeneration
	case *cxv1.CXTarget:
		return o.Status.ObservedGeneration
	}
	panic("not a cxop object")
}

// expectReady waits until obj has Ready with the given status and reason,
// describing its current generation, and returns the condition.
func expectReady(ctx context.Context, obj client.Object, status metav1.ConditionStatus, reason string) metav1.Condition {
	return expectReadyMessage(ctx, obj, status, reason, nil)
}

// expectReadyMessage is expectReady that also waits for the message to
// match, since the cache may briefly lag behind objects created just before.
func expectReadyMessage(ctx context.Context, obj client.Object, status metav1.ConditionStatus, reason string, message types.GomegaMatcher) metav1.Condition {
	var ready metav1.Condition
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		c := meta.FindStatusCondition(conditionsOf(obj), cxv1.ReadyCondition)
		g.Expect(c).NotTo(BeNil(), "no Ready condition yet")
		g.Expect(c.Status).To(Equal(status), "Ready is %s/%s: %s", c.Status, c.Reason, c.Message)
		g.Expect(c.Reason).To(Equal(reason))
		if message != nil {
			g.Expect(c.Message).To(message)
		}
		g.Expect(c.ObservedGeneration).To(Equal(obj.GetGeneration()))
		g.Expect(observedGenerationOf(obj)).To(Equal(obj.GetGeneration()))
		ready = *c
	}).Should(Succeed())
	return ready
}

// updateObject applies mutate to the latest version of obj and updates it,
// retrying when the operator's status writes win the race.
func updateObject(ctx context.Context, obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return k8sClient.Update(ctx, obj)
	})
}
