package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/score"
)

// Key names, in the collector's secrets file, of a Survey's webhook keys.
func deliveryKeyName(survey string) string  { return survey + "-delivery" }
func detractorKeyName(survey string) string { return survey + "-detractor" }

// surveyConfig renders one Survey for the collector.
func surveyConfig(s *cxv1.Survey, token string) collectorapi.SurveyConfig {
	c := collectorapi.SurveyConfig{
		Name: s.Name, Type: score.Kind(s.Spec.Type), TokenSHA256: []string{collectorapi.HashToken(token)},
		Question: s.Spec.Question, FollowUpQuestion: s.Spec.FollowUpQuestion,
		LinkTTL: string(s.Spec.GetLinkTTL()), Suspend: s.Spec.Suspend,
	}
	if t := s.Spec.Trigger; t != nil {
		p := t.GetSamplePercent()
		percent := p.AsApproximateFloat64()
		c.Trigger = &collectorapi.TriggerConfig{Touchpoints: t.Touchpoints, Delay: string(t.Delay), SamplePercent: &percent}
	}
	if th := s.Spec.Throttle; th != nil {
		c.Throttle = string(th.PerCustomer)
	}
	if d := s.Spec.Delivery; d != nil && d.Webhook != nil {
		c.Webhook = &collectorapi.WebhookConfig{URL: d.Webhook.URL, Key: deliveryKeyName(s.Name)}
	}
	if cl := s.Spec.ClosedLoop; cl != nil && cl.DetractorWebhook != nil {
		c.DetractorWebhook = &collectorapi.WebhookConfig{URL: cl.DetractorWebhook.URL, Key: detractorKeyName(s.Name)}
	}
	return c
}

// collectorSecrets renders the collector's secrets file: the namespace's
// link keys and the signing key of every Survey webhook, read from the
// Secrets the Surveys name. A Secret or key that is missing leaves that
// webhook without a key, so the collector keeps its messages until it
// appears; the Survey's own status reports it.
//
// customerIDKeys (base64), when not empty, are the key of pseudonymous
// customer ids and the one it replaced.
//
// It also reports whether a key was missing: the user's Secrets are not
// watched, so the namespace is looked at again soon.
func (r *CollectorReconciler) collectorSecrets(ctx context.Context, ns string, svys []cxv1.Survey, customerIDKeys customerIDKeys) ([]byte, bool, error) {
	current, previous, err := r.ensureLinkKeys(ctx, ns)
	if err != nil {
		return nil, false, err
	}
	missing := false
	var f collectorapi.Secrets
	f.CustomerIDKey, f.CustomerIDKeyPrevious = customerIDKeys.current, customerIDKeys.previous
	f.LinkKeys.Current = base64.StdEncoding.EncodeToString(current)
	if previous != nil {
		f.LinkKeys.Previous = base64.StdEncoding.EncodeToString(previous)
	}
	f.WebhookKeys = map[string]string{}
	for i := range svys {
		s := &svys[i]
		for name, hook := range map[string]*cxv1.WebhookSpec{deliveryKeyName(s.Name): deliveryWebhook(s), detractorKeyName(s.Name): detractorWebhook(s)} {
			if hook == nil {
				continue
			}
			key, err := r.webhookKey(ctx, ns, hook.SecretRef)
			if err != nil {
				return nil, false, err
			}
			if key == nil {
				missing = true
				continue
			}
			f.WebhookKeys[name] = base64.StdEncoding.EncodeToString(key)
		}
	}
	// Sorted keys keep the rendered file stable, so an unchanged set of
	// Surveys writes nothing.
	sorted := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(f.WebhookKeys)) {
		sorted[k] = f.WebhookKeys[k]
	}
	f.WebhookKeys = sorted
	data, err := yaml.Marshal(f)
	return data, missing, err
}

func deliveryWebhook(s *cxv1.Survey) *cxv1.WebhookSpec {
	if s.Spec.Delivery == nil {
		return nil
	}
	return s.Spec.Delivery.Webhook
}

func detractorWebhook(s *cxv1.Survey) *cxv1.WebhookSpec {
	if s.Spec.ClosedLoop == nil {
		return nil
	}
	return s.Spec.ClosedLoop.DetractorWebhook
}

// webhookKey reads a Survey's signing key from the Secret it names. The
// Secret is the user's, outside the manager's cache, so it is read from
// the API server; nil means it is not there (yet).
func (r *CollectorReconciler) webhookKey(ctx context.Context, ns string, ref cxv1.SecretKeyReference) ([]byte, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	var sec corev1.Secret
	err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, &sec)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s: %w", ns, ref.Name, err)
	}
	return sec.Data[ref.Key], nil
}

// ensureLinkKeys returns the namespace's link signing keys, creating the
// Secret with a random current key the first time. Its previous key, when
// someone set one during a rotation, keeps older links working.
func (r *CollectorReconciler) ensureLinkKeys(ctx context.Context, ns string) (current, previous []byte, err error) {
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: ns, Name: LinkKeySecretName}
	err = r.Get(ctx, key, &sec)
	if err == nil {
		if len(sec.Data[LinkKeyCurrent]) < 32 {
			return nil, nil, needsAction(fmt.Errorf("secret %s: %q must hold at least 32 bytes; delete the Secret to have a new key made (links already sent stop working)", key, LinkKeyCurrent))
		}
		return sec.Data[LinkKeyCurrent], sec.Data[LinkKeyPrevious], nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("get secret %s: %w", key, err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, nil, fmt.Errorf("make link key: %w", err)
	}
	sec = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: LinkKeySecretName, Labels: collectorLabels()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{LinkKeyCurrent: k},
	}
	if err := r.Create(ctx, &sec); err != nil {
		return nil, nil, fmt.Errorf("create secret %s: %w", key, err)
	}
	return k, nil, nil
}

// applySecretsFile writes the collector's secrets file into its Secret.
func (r *CollectorReconciler) applySecretsFile(ctx context.Context, ns string, data []byte) error {
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: ns, Name: CollectorSecretsName}
	err := r.Get(ctx, key, &sec)
	switch {
	case apierrors.IsNotFound(err):
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorSecretsName, Labels: collectorLabels()},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{CollectorSecretsKey: data},
		}
		if err := r.Create(ctx, &sec); err != nil {
			return fmt.Errorf("create secret %s: %w", key, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get secret %s: %w", key, err)
	}
	if string(sec.Data[CollectorSecretsKey]) == string(data) {
		return nil
	}
	sec.Data = map[string][]byte{CollectorSecretsKey: data}
	if err := r.Update(ctx, &sec); err != nil {
		return fmt.Errorf("update secret %s: %w", key, err)
	}
	return nil
}
