package controllers

import (
	"context"
	"errors"
	"sync"

	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// apiFaults makes the manager's client fail chosen calls, for the specs
// that inject failures a real API server cannot be made to produce on
// demand (a refused create, a failing list). Rules match by verb, the
// object's Go type, namespace and (optionally) name, so each spec only
// touches its own namespace.
type apiFaults struct {
	mu    sync.Mutex
	rules map[int]faultRule
	next  int
}

type faultRule struct {
	verb      string // "create", "get", "list"
	namespace string
	match     func(any) bool
	name      string // "": any
	err       error
}

// faults is the suite manager's; see managerClient.
var faults = &apiFaults{rules: map[int]faultRule{}}

// inject makes calls of verb on objects match accepts in namespace (and
// of that name, unless "") fail with err, until the returned func runs.
func (f *apiFaults) inject(verb, namespace, name string, match func(any) bool, err error) (lift func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.rules[id] = faultRule{verb: verb, namespace: namespace, name: name, match: match, err: err}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.rules, id)
	}
}

func (f *apiFaults) check(verb, namespace, name string, obj any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.verb == verb && r.namespace == namespace && (r.name == "" || r.name == name) && r.match(obj) {
			return r.err
		}
	}
	return nil
}

func (f *apiFaults) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := f.check("create", obj.GetNamespace(), obj.GetName(), obj); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := f.check("get", key.Namespace, key.Name, obj); err != nil {
				return err
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			lo := (&client.ListOptions{}).ApplyOptions(opts)
			if err := f.check("list", lo.Namespace, "", list); err != nil {
				return err
			}
			return c.List(ctx, list, opts...)
		},
	}
}

// isA matches objects of T's Go type.
func isA[T any](obj any) bool {
	_, ok := obj.(T)
	return ok
}

// managerClient is the suite manager's client: the default one, through
// faults.
func managerClient(config *rest.Config, options client.Options) (client.Client, error) {
	c, err := client.New(config, options)
	if err != nil {
		return nil, err
	}
	return interceptor.NewClient(noWatch{c}, faults.funcs()), nil
}

// noWatch lets a client.Client be intercepted; the manager never watches
// through its client (its informers do).
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("watch through the manager's client is not supported")
}
