package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// Names and labels of what the operator creates for a namespace's collector.
const (
	// CollectorName names the collector's StatefulSet, Service and
	// ServiceAccount in each namespace that has Touchpoints.
	CollectorName = "cxop-collector"
	// CollectorConfigMapName holds the rendered collector config.
	CollectorConfigMapName = "cxop-collector-config"
	// CollectorConfigKey is the key of the config in that ConfigMap.
	CollectorConfigKey = "config.yaml"
	// ReadTokenSecretName holds the token the manager reads summaries with.
	ReadTokenSecretName = "cxop-collector-read-token"
	// TokenKey is the key of a token in every token Secret.
	TokenKey = "token"
	// CollectorSecretsName holds the collector's secrets file: the link
	// key and the webhook signing keys, copied from the Surveys' Secrets.
	CollectorSecretsName = "cxop-collector-secrets"
	// CollectorSecretsKey is the key of the file in that Secret.
	CollectorSecretsKey = "secrets.yaml"
	// LinkKeySecretName holds the namespace's survey link signing keys:
	// LinkKeyCurrent signs, LinkKeyPrevious (when set) still verifies.
	LinkKeySecretName = "cxop-survey-link-keys"
	LinkKeyCurrent    = "current"
	LinkKeyPrevious   = "previous"

	// ManagedByLabel marks every object cxop creates; the manager caches
	// only Secrets and ConfigMaps that carry it.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "cxop"
	// Labels naming the subject of a token Secret.
	touchpointLabel = "cx.cxop.dev/touchpoint"
	surveyLabel     = "cx.cxop.dev/survey"
)

// TouchpointTokenSecretName is the Secret holding the ingest token of a
// Touchpoint.
func TouchpointTokenSecretName(touchpoint string) string { return "cxop-touchpoint-" + touchpoint }

// SurveyTokenSecretName is the Secret holding the answer token of a Survey.
func SurveyTokenSecretName(survey string) string { return "cxop-survey-" + survey }

// CollectorRuntime runs the collector of a namespace. In a cluster it is a
// StatefulSet (KubeCollectorRuntime); under `cxop dev` a local process.
type CollectorRuntime interface {
	// Ensure makes the namespace's collector run with its config and
	// secrets file and returns its base URL. It is called after the config
	// ConfigMap and the secrets Secret are written.
	Ensure(ctx context.Context, namespace string, files collectorapi.Files) (string, error)
	// PageURL is the base URL customers reach the namespace's survey page
	// at, or "" when it has none (surveys then send no invitations).
	PageURL(namespace string) (string, error)
	// ServesSurveyPages reports whether PageURL gives customers a URL at
	// all; without one, surveys make no invitations.
	ServesSurveyPages() bool
	// AllowsInsecureWebhooks reports whether collectors send webhooks to
	// plain http URLs; otherwise only https.
	AllowsInsecureWebhooks() bool
	// Remove stops the namespace's collector. Its data is kept unless the
	// runtime was configured otherwise.
	Remove(ctx context.Context, namespace string) error
	// URL is the base URL of the namespace's collector, or "" when it
	// has none.
	URL(namespace string) string
}

// CollectorReconciler keeps one collector per namespace that has
// Touchpoints: its token Secrets, its config and its runtime. Requests are
// keyed by namespace (the name is always CollectorName), so any number of
// Touchpoint and Survey changes in a namespace collapse into one render.
type CollectorReconciler struct {
	client.Client
	// APIReader reads the Secrets that Surveys name for their webhook
	// keys: they are the user's, outside the manager's cache.
	APIReader client.Reader
	Runtime   CollectorRuntime
	// Forget, when set, drops cached answers of a collector whose config
	// changed, so a new Touchpoint does not wait out the cache.
	Forget func(baseURL string)
	// Written, when set, is told the outcome of every reconcile of a
	// namespace (nil: its collector is written). The collector has no
	// object to write status on; the Touchpoints and Surveys whose config
	// it carries show a failure in their Ready condition
	// (StatusSource.CollectorWritten).
	Written func(namespace string, err error)
	// DataPolicy is the data policy of a namespace whose annotations set
	// none (collector_datapolicy.go); zero fields take DefaultDataPolicy's.
	DataPolicy DataPolicy
	// WatchNamespaces, when set, are the only namespaces the manager works
	// in (--watch-namespaces): their Namespace objects are read one by one.
	WatchNamespaces []string
	// PostgresSecretKey is the key of the connection string in a
	// PostgreSQL namespace's Secret (empty: DefaultPostgresSecretKey).
	PostgresSecretKey string
	// SecretRetry is how soon a namespace waiting for its PostgreSQL
	// Secret looks for it again (default 5s): the Secret is the platform
	// team's and not watched.
	SecretRetry time.Duration
	// namespaces reads Namespace objects (see watchNamespaces).
	namespaces client.Reader
}

// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints;surveys,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// The token Secrets, wave CronJobs and PrometheusRules carry a controller
// reference to their Touchpoint, Survey or CXTarget with blockOwnerDeletion,
// which the OwnerReferencesPermissionEnforcement admission plugin (on by
// default in OpenShift) allows only to who may update the owner's finalizers.
// The manager sets no finalizers.
// +kubebuilder:rbac:groups=cx.cxop.dev,resources=touchpoints/finalizers;surveys/finalizers;cxtargets/finalizers,verbs=update

// Reconcile renders the namespace's collector, or removes it when the
// namespace has no Touchpoints left.
func (r *CollectorReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	ns := req.Namespace
	// waiting is reported although the reconcile succeeds: it waits on
	// someone, and is retried on a timer rather than with backoff.
	var waiting error
	defer func() {
		if retErr == nil && waiting != nil {
			r.report(ns, waiting)
			return
		}
		r.report(ns, retErr)
	}()
	var tps cxv1.TouchpointList
	if err := r.List(ctx, &tps, client.InNamespace(ns)); err != nil {
		return ctrl.Result{}, fmt.Errorf("list touchpoints: %w", err)
	}
	var svys cxv1.SurveyList
	if err := r.List(ctx, &svys, client.InNamespace(ns)); err != nil {
		return ctrl.Result{}, fmt.Errorf("list surveys: %w", err)
	}
	tpItems := slices.DeleteFunc(tps.Items, func(t cxv1.Touchpoint) bool { return !t.DeletionTimestamp.IsZero() })
	svyItems := slices.DeleteFunc(svys.Items, func(s cxv1.Survey) bool { return !s.DeletionTimestamp.IsZero() })

	if err := r.pruneTokenSecrets(ctx, ns, tpItems, svyItems); err != nil {
		return ctrl.Result{}, err
	}
	if len(tpItems) == 0 {
		return ctrl.Result{}, r.removeCollector(ctx, ns)
	}
	policy, err := r.dataPolicy(ctx, ns)
	if err != nil {
		return ctrl.Result{}, err
	}

	// One unusable spec (its own status says why) must not keep the config
	// of every other Touchpoint from loading, so it is left out.
	tpItems = slices.DeleteFunc(tpItems, func(t cxv1.Touchpoint) bool { return checkTouchpointSpec(&t.Spec) != nil })
	svyItems = slices.DeleteFunc(svyItems, func(s cxv1.Survey) bool { return checkSurveySpec(&s.Spec) != nil })
	if err := policy.fits(ns, svyItems); err != nil {
		return ctrl.Result{}, reconcile.TerminalError(err)
	}
	// Nothing is written for a store the collector could not open.
	store, err := r.collectorStore(ctx, ns, policy)
	if missing := (*postgresSecretMissing)(nil); errors.As(err, &missing) {
		waiting = err
		retry := r.SecretRetry
		if retry <= 0 {
			retry = 5 * time.Second
		}
		return ctrl.Result{RequeueAfter: retry}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	reqs := make([]tokenRequest, 0, len(tpItems)+len(svyItems))
	for i := range tpItems {
		reqs = append(reqs, tokenRequest{owner: &tpItems[i], name: TouchpointTokenSecretName(tpItems[i].Name), label: touchpointLabel})
	}
	for i := range svyItems {
		reqs = append(reqs, tokenRequest{owner: &svyItems[i], name: SurveyTokenSecretName(svyItems[i].Name), label: surveyLabel})
	}
	tokens, err := r.ensureTokens(ctx, ns, reqs)
	if err != nil {
		return ctrl.Result{}, err
	}
	cfg := collectorapi.Config{Retention: policy.Retention, ContactRetention: policy.ContactRetention, PseudonymizeCustomers: policy.PseudonymizeCustomers}
	for i := range tpItems {
		cfg.Touchpoints = append(cfg.Touchpoints, touchpointConfig(&tpItems[i], tokens[i]))
	}
	for i := range svyItems {
		cfg.Surveys = append(cfg.Surveys, surveyConfig(&svyItems[i], tokens[len(tpItems)+i]))
	}
	if cfg.PageURL, err = r.Runtime.PageURL(ns); err != nil {
		return ctrl.Result{}, err
	}
	customerIDKeys, err := r.customerIDKeysOf(ctx, ns, policy)
	if err != nil {
		return ctrl.Result{}, err
	}
	secrets, keyMissing, err := r.collectorSecrets(ctx, ns, svyItems, customerIDKeys)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.applySecretsFile(ctx, ns, secrets); err != nil {
		return ctrl.Result{}, err
	}
	readToken, err := r.ensureToken(ctx, ns, nil, ReadTokenSecretName, "")
	if err != nil {
		return ctrl.Result{}, err
	}
	cfg.ReadTokenSHA256 = []string{collectorapi.HashToken(readToken)}
	customerDataToken, err := r.ensureToken(ctx, ns, nil, CustomerDataTokenSecretName, "")
	if err != nil {
		return ctrl.Result{}, err
	}
	cfg.CustomerDataTokenSHA256 = []string{collectorapi.HashToken(customerDataToken)}
	slices.SortFunc(cfg.Touchpoints, func(a, b collectorapi.TouchpointConfig) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(cfg.Surveys, func(a, b collectorapi.SurveyConfig) int { return strings.Compare(a.Name, b.Name) })

	data, changed, err := r.applyConfigMap(ctx, ns, cfg)
	if err != nil {
		return ctrl.Result{}, err
	}
	files := collectorapi.Files{Config: data, Secrets: secrets}
	var url string
	if sr, ok := r.Runtime.(StoreRuntime); ok {
		url, err = sr.EnsureStore(ctx, ns, files, store)
	} else {
		url, err = r.Runtime.Ensure(ctx, ns, files)
	}
	if switching := (*storeSwitching)(nil); errors.As(err, &switching) {
		// The old workload's deletion wakes the namespace (its watch);
		// the timer is for a deletion that event misses.
		waiting = err
		return ctrl.Result{RequeueAfter: storeSwitchRetry}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("run collector: %w", err)
	}
	if changed && r.Forget != nil {
		r.Forget(url)
	}
	// The Secrets that hold webhook keys are the user's and not watched:
	// a missing one is looked for again soon, and present ones are read
	// again now and then, so a rotated key reaches the collector.
	if keyMissing {
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	return ctrl.Result{RequeueAfter: webhookKeyResync}, nil
}

// report passes the outcome of a reconcile of namespace to Written.
// Optimistic-concurrency races (a conflict, a token Secret created
// meanwhile) are retried at once and are no failure: they leave the last
// outcome as it was.
func (r *CollectorReconciler) report(namespace string, err error) {
	if r.Written == nil || lostRace(err) {
		return
	}
	r.Written(namespace, err)
}

// storeSwitchRetry is how soon a namespace whose collector is switching
// stores looks again whether the old workload is gone.
const storeSwitchRetry = 5 * time.Second

// webhookKeyResync is how often a namespace's webhook keys are read again.
const webhookKeyResync = 10 * time.Minute

// touchpointConfig renders one Touchpoint for the collector.
func touchpointConfig(tp *cxv1.Touchpoint, token string) collectorapi.TouchpointConfig {
	c := collectorapi.TouchpointConfig{Name: tp.Name, TokenSHA256: []string{collectorapi.HashToken(token)}}
	if tp.Spec.WaitTime != nil {
		c.WaitThreshold = string(tp.Spec.WaitTime.Threshold)
	}
	if bh := tp.Spec.BusinessHours; bh != nil {
		c.BusinessHours = &collectorapi.BusinessHours{TimeZone: bh.GetTimeZone()}
		for _, h := range bh.Hours {
			p := collectorapi.BusinessPeriod{Start: h.Start, End: h.End}
			for _, d := range h.Days {
				p.Days = append(p.Days, string(d))
			}
			c.BusinessHours.Hours = append(c.BusinessHours.Hours, p)
		}
	}
	return c
}

// ensureToken returns the token in the named Secret, creating the Secret
// with a fresh random token when it does not exist. An existing token is
// never replaced: deleting the Secret is how a token is rotated. owner, when
// set, owns the Secret, so deleting a Touchpoint deletes its token.
func (r *CollectorReconciler) ensureToken(ctx context.Context, namespace string, owner client.Object, name, subjectLabel string) (string, error) {
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: namespace, Name: name}
	err := r.Get(ctx, key, &sec)
	if err == nil {
		if t := string(sec.Data[TokenKey]); t != "" {
			return t, nil
		}
		return "", needsAction(fmt.Errorf("secret %s/%s has no %q key; delete it to have a new token made", key.Namespace, key.Name, TokenKey))
	}
	if !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("get secret %s: %w", key, err)
	}
	token, err := newToken()
	if err != nil {
		return "", err
	}
	sec = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{ManagedByLabel: ManagedByValue},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{TokenKey: []byte(token)},
	}
	if owner != nil {
		sec.Labels[subjectLabel] = owner.GetName()
		if err := controllerutil.SetControllerReference(owner, &sec, r.Scheme()); err != nil {
			return "", fmt.Errorf("own secret %s: %w", key, err)
		}
	}
	if err := r.Create(ctx, &sec); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Created since the cache was read; the next reconcile
			// (which the Secret's creation triggers) reads it.
			return "", fmt.Errorf("secret %s appeared meanwhile: %w", key, err)
		}
		return "", fmt.Errorf("create secret %s: %w", key, err)
	}
	return token, nil
}

// tokenRequest names a token Secret and the object that owns it.
type tokenRequest struct {
	owner client.Object
	name  string
	label string
}

// ensureTokens returns the token of every request, in order, creating the
// missing Secrets concurrently: a namespace applied with a thousand
// Touchpoints at once should not wait for a thousand sequential creates.
func (r *CollectorReconciler) ensureTokens(ctx context.Context, ns string, reqs []tokenRequest) ([]string, error) {
	tokens := make([]string, len(reqs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, req := range reqs {
		g.Go(func() error {
			t, err := r.ensureToken(gctx, ns, req.owner, req.name, req.label)
			tokens[i] = t
			return err
		})
	}
	return tokens, g.Wait()
}

// newToken returns 32 random bytes in hex: unguessable, and safe in a
// header, a shell and a URL alike.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// applyConfigMap writes the rendered config (cfg without its revision)
// and reports the config as written and whether it changed. A config whose
// content differs from the ConfigMap's gets a higher revision
// (nextRevision); one that does not keeps the ConfigMap's, so an idle
// reconcile writes nothing.
func (r *CollectorReconciler) applyConfigMap(ctx context.Context, ns string, cfg collectorapi.Config) ([]byte, bool, error) {
	cfg.Revision = 0
	content, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, false, fmt.Errorf("render collector config: %w", err)
	}
	var cm corev1.ConfigMap
	key := types.NamespacedName{Namespace: ns, Name: CollectorConfigMapName}
	err = r.Get(ctx, key, &cm)
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return nil, false, fmt.Errorf("get configmap %s: %w", key, err)
	}
	var last int64
	if existing, ok := cm.Data[CollectorConfigKey]; ok {
		var old collectorapi.Config
		if yaml.Unmarshal([]byte(existing), &old) == nil {
			last = old.Revision
			old.Revision = 0
			if same, err := yaml.Marshal(old); err == nil && string(same) == string(content) && last > 0 {
				return []byte(existing), false, nil
			}
		}
	}
	cfg.Revision = nextRevision(last, time.Now())
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, false, fmt.Errorf("render collector config: %w", err)
	}
	if create {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorConfigMapName, Labels: collectorLabels()},
			Data:       map[string]string{CollectorConfigKey: string(data)},
		}
		if err := r.Create(ctx, &cm); err != nil {
			return nil, false, fmt.Errorf("create configmap %s: %w", key, err)
		}
		return data, true, nil
	}
	cm.Data = map[string]string{CollectorConfigKey: string(data)}
	if err := r.Update(ctx, &cm); err != nil {
		return nil, false, fmt.Errorf("update configmap %s: %w", key, err)
	}
	return data, true, nil
}

// nextRevision is the revision of a changed config: one more than last,
// or the time in Unix milliseconds when that is greater, so that revisions
// keep rising over a ConfigMap deleted and made again (the database's
// record of the greatest revision outlives it, and a replica whose config
// is below it consumes no records).
func nextRevision(last int64, now time.Time) int64 {
	return max(last+1, now.UnixMilli())
}

// pruneTokenSecrets deletes token Secrets whose Touchpoint or Survey is
// gone. In a cluster the garbage collector does it through the owner
// reference; the local environment of `cxop dev` has no garbage collector.
func (r *CollectorReconciler) pruneTokenSecrets(ctx context.Context, ns string, tps []cxv1.Touchpoint, svys []cxv1.Survey) error {
	var secrets corev1.SecretList
	if err := r.List(ctx, &secrets, client.InNamespace(ns), client.MatchingLabels{ManagedByLabel: ManagedByValue}); err != nil {
		return fmt.Errorf("list secrets: %w", err)
	}
	tpNames, svyNames := map[string]bool{}, map[string]bool{}
	for _, t := range tps {
		tpNames[t.Name] = true
	}
	for _, s := range svys {
		svyNames[s.Name] = true
	}
	for i := range secrets.Items {
		sec := &secrets.Items[i]
		tp, isTP := sec.Labels[touchpointLabel]
		sv, isSvy := sec.Labels[surveyLabel]
		if (isTP && !tpNames[tp]) || (isSvy && !svyNames[sv]) {
			if err := r.Delete(ctx, sec); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete secret %s/%s: %w", ns, sec.Name, err)
			}
		}
	}
	return nil
}

// removeCollector stops the namespace's collector and deletes its config
// and read token. Its stored data is kept (see CollectorRuntime.Remove).
func (r *CollectorReconciler) removeCollector(ctx context.Context, ns string) error {
	if err := r.Runtime.Remove(ctx, ns); err != nil {
		return fmt.Errorf("remove collector: %w", err)
	}
	forgetCollectorMetrics(ns)
	for _, obj := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: CollectorConfigMapName}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ReadTokenSecretName}},
	} {
		if err := r.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete %s/%s: %w", ns, obj.GetName(), err)
		}
	}
	return nil
}

// collectorLabels are the labels of the shared collector objects.
func collectorLabels() map[string]string {
	return map[string]string{
		ManagedByLabel:           ManagedByValue,
		"app.kubernetes.io/name": CollectorName,
	}
}
