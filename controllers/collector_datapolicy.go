package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	"sigs.k8s.io/yaml"
)

// Namespace annotations that set a namespace's data policy, overriding the
// manager's defaults (--collector-retention and friends). Platform teams
// own namespaces, and GitOps tools set their annotations, so a policy set
// there applies to every Touchpoint and Survey the namespace will hold.
const (
	// RetentionAnnotation: how long the collector keeps records and every
	// other class of stored customer data (Prometheus duration).
	RetentionAnnotation = "cx.cxop.dev/retention"
	// ContactRetentionAnnotation: how long an invitation's contact fields
	// are kept after its delivery ended (Prometheus duration).
	ContactRetentionAnnotation = "cx.cxop.dev/contact-retention"
	// PseudonymizeCustomersAnnotation: "true" stores a keyed hash of each
	// customer id instead of the id; "false" the id.
	PseudonymizeCustomersAnnotation = "cx.cxop.dev/pseudonymize-customers"
)

// Names of the namespace-level Secrets of the customer data API and of
// pseudonymous ids.
const (
	// CustomerDataTokenSecretName holds (under TokenKey) the token that may
	// read and erase one customer's data through the collector.
	CustomerDataTokenSecretName = "cxop-customer-data-token"
	// CustomerIDKeySecretName holds the key pseudonymous customer ids are
	// made with. It is made once and never replaced by the manager: ids
	// stored under one key do not match ids made under another.
	CustomerIDKeySecretName = "cxop-customer-id-key"
	// CustomerIDKeyKey is the key of the HMAC key in that Secret.
	CustomerIDKeyKey = "key"
	// CustomerIDKeyPrevious is the key of the key CustomerIDKeyKey
	// replaced: collectors still look customers up under its pseudonyms
	// (erasure, access, per-customer exports), and store none under it.
	// The manager sets it when the key changes (customerIDKeysOf).
	CustomerIDKeyPrevious = "previous"
	// customerIDKeySize is the size of a new key and the least a kept one
	// may hold: HMAC-SHA256 is as strong as its key up to 32 bytes.
	customerIDKeySize = 32
)

// DataPolicy is how a namespace's collector keeps customer data.
type DataPolicy struct {
	// Retention is how long records and every other class of stored
	// customer data are kept (Prometheus duration).
	Retention string
	// ContactRetention is how long an invitation's contact fields are
	// kept after its delivery succeeded or was given up.
	ContactRetention string
	// PseudonymizeCustomers stores HMAC-SHA256(customer id key, customer
	// id) instead of the customer id.
	PseudonymizeCustomers bool
	// Store is where records are kept: StoreEmbedded (empty means it) or
	// StorePostgres.
	Store string
	// PostgresSecret names the Secret in the namespace that holds the
	// connection string when Store is StorePostgres.
	PostgresSecret string
}

// DefaultDataPolicy is the policy of a namespace without annotations when
// the manager is given none (the flags' defaults).
var DefaultDataPolicy = DataPolicy{Retention: "400d", ContactRetention: "7d", Store: StoreEmbedded}

// Check reports the first setting that is not usable, naming it by the
// manager flag that sets it.
func (p DataPolicy) Check() error {
	if err := checkPositiveDuration(p.Retention); err != nil {
		return fmt.Errorf("--collector-retention: %w", err)
	}
	if err := checkPositiveDuration(p.ContactRetention); err != nil {
		return fmt.Errorf("--collector-contact-retention: %w", err)
	}
	retention, _ := model.ParseDuration(p.Retention)
	contact, _ := model.ParseDuration(p.ContactRetention)
	if contact > retention {
		return fmt.Errorf("--collector-contact-retention: %s is longer than --collector-retention %s", p.ContactRetention, p.Retention)
	}
	if p.Store != "" {
		if err := checkStore(p.Store); err != nil {
			return fmt.Errorf("--collector-store: %w", err)
		}
	}
	if p.Store == StorePostgres && p.PostgresSecret == "" {
		return fmt.Errorf("--collector-postgres-secret: must name the Secret with the connection string when --collector-store=%s", StorePostgres)
	}
	return nil
}

// withDefaults fills in what a zero DataPolicy leaves empty.
func (p DataPolicy) withDefaults() DataPolicy {
	if p.Retention == "" {
		p.Retention = DefaultDataPolicy.Retention
	}
	if p.ContactRetention == "" {
		p.ContactRetention = DefaultDataPolicy.ContactRetention
	}
	if p.Store == "" {
		p.Store = StoreEmbedded
	}
	return p
}

func checkPositiveDuration(v string) error {
	d, err := model.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration such as 400d, 72h or 30m", v)
	}
	return nil
}

// invalidDataPolicy is a namespace whose data policy annotations cannot be
// used. The collector keeps its last config until they are fixed: falling
// back to the defaults would keep customer data longer, or store it in the
// clear, against what the namespace asks for.
type invalidDataPolicy struct {
	namespace string
	// problems name each unusable annotation and why.
	problems []string
}

func (e *invalidDataPolicy) Error() string {
	return fmt.Sprintf("namespace %s: %s; the collector keeps its last config until this is fixed", e.namespace, strings.Join(e.problems, "; "))
}

// dataPolicyFor is ns's data policy: defaults, overridden by the
// namespace's annotations. An unusable annotation is an *invalidDataPolicy
// naming every one.
func dataPolicyFor(ns *corev1.Namespace, defaults DataPolicy) (DataPolicy, error) {
	p := defaults
	var problems []string
	a := ns.GetAnnotations()
	if v, ok := a[RetentionAnnotation]; ok {
		if err := checkPositiveDuration(v); err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %v", RetentionAnnotation, err))
		}
		p.Retention = v
	}
	if v, ok := a[ContactRetentionAnnotation]; ok {
		if err := checkPositiveDuration(v); err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %v", ContactRetentionAnnotation, err))
		}
		p.ContactRetention = v
	}
	if v, ok := a[PseudonymizeCustomersAnnotation]; ok {
		switch v {
		case "true":
			p.PseudonymizeCustomers = true
		case "false":
			p.PseudonymizeCustomers = false
		default:
			problems = append(problems, fmt.Sprintf("annotation %s: %q is neither \"true\" nor \"false\"", PseudonymizeCustomersAnnotation, v))
		}
	}
	if v, ok := a[StoreAnnotation]; ok {
		if err := checkStore(v); err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %v", StoreAnnotation, err))
		}
		p.Store = v
	}
	if v, ok := a[PostgresSecretAnnotation]; ok {
		if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("annotation %s: %q is not a Secret name: %s", PostgresSecretAnnotation, v, strings.Join(errs, "; ")))
		}
		p.PostgresSecret = v
	}
	if p.Store == StorePostgres && p.PostgresSecret == "" {
		problems = append(problems, fmt.Sprintf("the namespace keeps its records in PostgreSQL and no Secret holds the connection string: set annotation %s, or the manager's --collector-postgres-secret (chart value collector.postgres.secretName)", PostgresSecretAnnotation))
	}
	if len(problems) == 0 {
		// Contacts are part of what the retention keeps: the collector
		// refuses a contact retention beyond it.
		retention, _ := model.ParseDuration(p.Retention)
		contact, _ := model.ParseDuration(p.ContactRetention)
		if contact > retention {
			from := func(annotation, flag string) string {
				if _, ok := a[annotation]; ok {
					return "annotation " + annotation
				}
				return flag
			}
			problems = append(problems, fmt.Sprintf("contact retention %s (%s) is longer than the retention %s (%s): set annotation %s to %s or less",
				p.ContactRetention, from(ContactRetentionAnnotation, "--collector-contact-retention"),
				p.Retention, from(RetentionAnnotation, "--collector-retention"), ContactRetentionAnnotation, p.Retention))
		}
	}
	if len(problems) > 0 {
		return DataPolicy{}, &invalidDataPolicy{namespace: ns.Name, problems: problems}
	}
	return p, nil
}

// fits names every Survey that needs to remember longer than the policy
// keeps data: a throttle needs each customer's contact history, a link the
// invitation it answers. The collector refuses such a config as a whole, so
// the manager reports the conflicts (on every object of the namespace, as
// for an unusable annotation) instead of rendering it.
func (p DataPolicy) fits(namespace string, surveys []cxv1.Survey) error {
	retention, err := model.ParseDuration(p.Retention)
	if err != nil {
		return nil // dataPolicyFor and Check refuse it
	}
	var problems []string
	for i := range surveys {
		spec := &surveys[i].Spec
		if th := spec.Throttle; th != nil {
			if d, err := model.ParseDuration(string(th.PerCustomer)); err == nil && d > retention {
				problems = append(problems, fmt.Sprintf("Survey %s: spec.throttle.perCustomer %s is longer than the namespace's retention %s, which keeps the contact history it needs",
					surveys[i].Name, th.PerCustomer, p.Retention))
			}
		}
		if ttl := spec.GetLinkTTL(); ttl != "" {
			if d, err := model.ParseDuration(string(ttl)); err == nil && d > retention {
				problems = append(problems, fmt.Sprintf("Survey %s: spec.linkTTL %s is longer than the namespace's retention %s, which keeps the invitations its links answer",
					surveys[i].Name, ttl, p.Retention))
			}
		}
	}
	if len(problems) > 0 {
		return &invalidDataPolicy{namespace: namespace, problems: problems}
	}
	return nil
}

// dataPolicy reads the namespace and returns its data policy. An unusable
// annotation is a terminal error: retrying cannot help, and the change of
// the annotation that fixes it wakes the namespace (watchNamespaces).
func (r *CollectorReconciler) dataPolicy(ctx context.Context, namespace string) (DataPolicy, error) {
	reader := r.namespaces
	if reader == nil {
		reader = r.Client
	}
	var ns corev1.Namespace
	if err := reader.Get(ctx, types.NamespacedName{Name: namespace}, &ns); err != nil {
		return DataPolicy{}, fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	defaults := r.DataPolicy.withDefaults()
	var refused []string
	if _, ok := r.Runtime.(StoreRuntime); !ok {
		// The runtime keeps every collector's records in one store of its
		// own choosing (`cxop dev --store`): a namespace's choice cannot
		// be honoured, and ignoring it while requiring its Secret, or in
		// silence, would mislead.
		defaults.Store, defaults.PostgresSecret = StoreEmbedded, ""
		var stripped *corev1.Namespace
		stripped, refused = withoutStoreAnnotations(&ns)
		ns = *stripped
	}
	p, err := dataPolicyFor(&ns, defaults)
	if len(refused) > 0 {
		all := &invalidDataPolicy{namespace: namespace, problems: refused}
		if bad := (*invalidDataPolicy)(nil); errors.As(err, &bad) {
			all.problems = append(all.problems, bad.problems...)
		}
		return DataPolicy{}, reconcile.TerminalError(all)
	}
	if err != nil {
		return DataPolicy{}, reconcile.TerminalError(err)
	}
	return p, nil
}

// withoutStoreAnnotations is ns without the annotations that choose its
// store, and a problem naming each one it had, for a runtime that chooses
// the store of every collector itself.
func withoutStoreAnnotations(ns *corev1.Namespace) (*corev1.Namespace, []string) {
	var problems []string
	out := ns.DeepCopy()
	for _, a := range []string{StoreAnnotation, PostgresSecretAnnotation} {
		if _, ok := out.Annotations[a]; !ok {
			continue
		}
		delete(out.Annotations, a)
		problems = append(problems, fmt.Sprintf("annotation %s: `cxop dev` keeps every namespace's records in the store its --store flag chose (with --store postgres, in a database it makes for the namespace), so a namespace cannot choose its store or Secret here; remove the annotation to run this namespace under `cxop dev`", a))
	}
	return out, problems
}

// customerIDKeys are the secrets file's customer id keys, base64; ""
// for none.
type customerIDKeys struct{ current, previous string }

// customerIDKeysOf returns the customer id keys of the namespace's
// secrets file for policy. With pseudonymization on, the key Secret is
// made with 32 random bytes the first time; off, a key made while it was
// on keeps travelling to the collector, since the data stored under
// pseudonyms stays until it expires, and erasure and access must still
// find it.
//
// A key is never replaced by the manager: pseudonymous ids already stored
// were made with it. Someone may replace it (a new value under "key", or
// the Secret deleted, after which a new one is made): the key the
// collector had until then, read from its secrets file, is kept in the
// Secret as "previous", so that erasure and access still find the
// customers stored under it. A key (or previous key) someone shortened is
// an error that names the way out, not a reason to make a new one.
func (r *CollectorReconciler) customerIDKeysOf(ctx context.Context, ns string, policy DataPolicy) (customerIDKeys, error) {
	rendered, err := r.renderedCustomerIDKey(ctx, ns)
	if err != nil {
		return customerIDKeys{}, err
	}
	var sec corev1.Secret
	key := types.NamespacedName{Namespace: ns, Name: CustomerIDKeySecretName}
	err = r.Get(ctx, key, &sec)
	switch {
	case apierrors.IsNotFound(err):
		if !policy.PseudonymizeCustomers {
			return customerIDKeys{}, nil
		}
		return r.createCustomerIDKey(ctx, key, rendered)
	case err != nil:
		return customerIDKeys{}, fmt.Errorf("get secret %s: %w", key, err)
	}
	current, previous := sec.Data[CustomerIDKeyKey], sec.Data[CustomerIDKeyPrevious]
	if len(current) < customerIDKeySize {
		if !policy.PseudonymizeCustomers {
			return customerIDKeys{}, nil // unusable; nothing is stored under it while off
		}
		return customerIDKeys{}, needsAction(fmt.Errorf("secret %s: %q holds %d bytes, must hold at least %d; put back the key it held (the pseudonymous ids stored were made with it), or delete the Secret to have a new key made (the key it held stays as %q)",
			key, CustomerIDKeyKey, len(current), customerIDKeySize, CustomerIDKeyPrevious))
	}
	if len(previous) > 0 && len(previous) < customerIDKeySize {
		return customerIDKeys{}, needsAction(fmt.Errorf("secret %s: %q holds %d bytes, must hold at least %d; put back the key it held, or remove it (the pseudonymous ids made with it are then no longer found by erasure and access requests)",
			key, CustomerIDKeyPrevious, len(previous), customerIDKeySize))
	}
	if len(rendered) >= customerIDKeySize && !bytes.Equal(rendered, current) && !bytes.Equal(rendered, previous) {
		// The key changed since the collector last got it.
		previous = rendered
		sec.Data[CustomerIDKeyPrevious] = rendered
		if err := r.Update(ctx, &sec); err != nil {
			return customerIDKeys{}, fmt.Errorf("keep the replaced customer id key in secret %s: %w", key, err)
		}
	}
	keys := customerIDKeys{current: base64.StdEncoding.EncodeToString(current)}
	if len(previous) > 0 {
		keys.previous = base64.StdEncoding.EncodeToString(previous)
	}
	return keys, nil
}

// createCustomerIDKey makes the namespace's key Secret with 32 random
// bytes, and previous, when the collector had a key, as the previous one.
func (r *CollectorReconciler) createCustomerIDKey(ctx context.Context, key types.NamespacedName, previous []byte) (customerIDKeys, error) {
	k := make([]byte, customerIDKeySize)
	if _, err := rand.Read(k); err != nil {
		return customerIDKeys{}, fmt.Errorf("make customer id key: %w", err)
	}
	sec := corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: collectorLabels()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{CustomerIDKeyKey: k},
	}
	keys := customerIDKeys{current: base64.StdEncoding.EncodeToString(k)}
	if len(previous) >= customerIDKeySize {
		sec.Data[CustomerIDKeyPrevious] = previous
		keys.previous = base64.StdEncoding.EncodeToString(previous)
	}
	if err := r.Create(ctx, &sec); err != nil {
		// AlreadyExists: made meanwhile; the next reconcile reads it.
		return customerIDKeys{}, fmt.Errorf("create secret %s: %w", key, err)
	}
	return keys, nil
}

// renderedCustomerIDKey is the customer id key of the collector's secrets
// file as last written (nil when there is none).
func (r *CollectorReconciler) renderedCustomerIDKey(ctx context.Context, ns string) ([]byte, error) {
	var sec corev1.Secret
	err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: CollectorSecretsName}, &sec)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get secret %s/%s: %w", ns, CollectorSecretsName, err)
	}
	var f collectorapi.Secrets
	if yaml.Unmarshal(sec.Data[CollectorSecretsKey], &f) != nil || f.CustomerIDKey == "" {
		return nil, nil // rewritten from scratch below
	}
	k, err := base64.StdEncoding.DecodeString(f.CustomerIDKey)
	if err != nil {
		return nil, nil
	}
	return k, nil
}

// dataPolicyChanged passes only updates of a Namespace that change one of
// its data policy annotations. A Namespace's creation (including the
// initial list of every Namespace when the manager starts) is no reason to
// render its collector: its Touchpoints' own events are.
var dataPolicyChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		was, now := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
		for _, a := range []string{RetentionAnnotation, ContactRetentionAnnotation, PseudonymizeCustomersAnnotation, StoreAnnotation, PostgresSecretAnnotation} {
			v1, ok1 := was[a]
			v2, ok2 := now[a]
			if v1 != v2 || ok1 != ok2 {
				return true
			}
		}
		return false
	},
}

// namespaceToCollector maps a Namespace to the collector reconcile of the
// namespace it is.
var namespaceToCollector = handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetName(), Name: CollectorName}}}
})

// watchNamespaces makes a change of a Namespace's data policy annotations
// reach its collector at once, and sets where the reconciler reads
// Namespaces from.
//
// Cluster-wide, the manager's cache holds every Namespace (its ClusterRole
// may list and watch them). In namespaced mode (WatchNamespaces) the
// manager may not list Namespaces: the chart grants get, list and watch of
// the watched Namespaces only, by resourceNames, which the API server
// applies to a list or watch that selects one object by metadata.name. So
// each watched Namespace has a cache of its own, whose informer lists and
// watches with that field selector.
func (r *CollectorReconciler) watchNamespaces(mgr ctrl.Manager, b *builder.Builder) error {
	if len(r.WatchNamespaces) == 0 {
		r.namespaces = mgr.GetClient()
		b.Watches(&corev1.Namespace{}, namespaceToCollector, builder.WithPredicates(dataPolicyChanged))
		return nil
	}
	caches := make(namespaceCaches, len(r.WatchNamespaces))
	for _, name := range r.WatchNamespaces {
		c, err := cache.New(mgr.GetConfig(), cache.Options{
			Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
			DefaultFieldSelector: fields.OneTermEqualSelector("metadata.name", name),
			DefaultTransform:     cache.TransformStripManagedFields(),
		})
		if err != nil {
			return fmt.Errorf("cache of namespace %s: %w", name, err)
		}
		if err := mgr.Add(c); err != nil {
			return fmt.Errorf("run cache of namespace %s: %w", name, err)
		}
		caches[name] = c
		b.WatchesRawSource(source.Kind(c, client.Object(&corev1.Namespace{}), namespaceToCollector, dataPolicyChanged))
	}
	r.namespaces = caches
	return nil
}

// namespaceCaches reads each watched Namespace from its own cache.
type namespaceCaches map[string]cache.Cache

func (c namespaceCaches) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	nc, ok := c[key.Name]
	if !ok {
		return fmt.Errorf("namespace %s is not watched (--watch-namespaces)", key.Name)
	}
	return nc.Get(ctx, key, obj, opts...)
}

func (c namespaceCaches) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("namespaces are read one by one in namespaced mode")
}
