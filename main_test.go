package main

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cxop-dev/cxop/controllers"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

func TestCollectorBlockCacheMustFitTheMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		cache, limit, err string
	}{
		{"128Mi", "512Mi", ""},
		{"256Mi", "512Mi", ""},
		{"1Gi", "", ""}, // no limit, nothing to fit under
		{"257Mi", "512Mi", "--collector-block-cache-size: 257Mi plus 128Mi of memtables and 128Mi of heap does not fit under --collector-memory-limit 512Mi"},
		{"0", "512Mi", "--collector-block-cache-size: 0 is not a positive size"},
	} {
		var limit resource.Quantity
		if c.limit != "" {
			limit = resource.MustParse(c.limit)
		}
		err := checkCollectorMemory(resource.MustParse(c.cache), limit)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s under %q: %v", c.cache, c.limit, err)
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%s under %q: %v, want %q", c.cache, c.limit, err, c.err)
		}
	}
}

func TestWatchNamespacesBecomeTheCacheNamespaces(t *testing.T) {
	got, err := cacheNamespaces(nil)
	if err != nil || got != nil {
		t.Fatalf("no list: %v, %v; want every namespace (nil)", got, err)
	}
	got, err = cacheNamespaces([]string{"shop", "support"})
	if err != nil || len(got) != 2 {
		t.Fatalf("two namespaces: %v, %v", got, err)
	}
	for _, ns := range []string{"shop", "support"} {
		if _, ok := got[ns]; !ok {
			t.Errorf("namespace %q missing from %v", ns, got)
		}
	}
	_, err = cacheNamespaces([]string{"shop", "Bad_NS"})
	want := `--watch-namespaces: "Bad_NS" is not a namespace name: `
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("invalid name: %v, want prefix %q", err, want)
	}
}

// TestWebhookDenyCIDRsReachTheCollectors: the manager refuses a range that
// does not parse, naming the flag, and hands the collectors the ranges in
// their canonical form.
func TestWebhookDenyCIDRsReachTheCollectors(t *testing.T) {
	opts := func(cidrs ...string) *managerOptions {
		o := &managerOptions{collectorCPU: "100m", collectorMemory: "128Mi", collectorMemMax: "512Mi", collectorDisk: "1Gi", collectorCache: "128Mi"}
		o.collector.Delivery = collectorapi.DefaultDelivery
		o.collector.Image = "example.com/cxop:test"
		o.collector.WebhookDenyCIDRs = cidrs
		return o
	}
	rt, _, err := opts("10.244.1.0/16", "34.118.224.0/20").collectorRuntime()
	if err != nil {
		t.Fatal(err)
	}
	k := rt.(*controllers.KubeCollectorRuntime)
	if got := strings.Join(k.WebhookDenyCIDRs, ","); got != "10.244.0.0/16,34.118.224.0/20" {
		t.Errorf("deny ranges handed to collectors: %s", got)
	}
	_, _, err = opts("10.96.0.0/12", "pods").collectorRuntime()
	if want := `--webhook-deny-cidrs: "pods" is neither a CIDR range such as 10.96.0.0/12 nor an IP address`; err == nil || err.Error() != want {
		t.Errorf("bad range: %v, want %q", err, want)
	}
}

// TestDataPolicyFlags: the data policy flags default to 400d, 7d and
// pseudonymization off, and the manager refuses to start on an unusable
// duration, naming the flag, before it contacts any cluster.
func TestDataPolicyFlags(t *testing.T) {
	f := newManagerCommand().Flags()
	for flag, want := range map[string]string{
		"collector-retention": "400d", "collector-contact-retention": "7d", "collector-pseudonymize-customers": "false",
		"collector-store": "embedded", "collector-postgres-secret": "", "collector-postgres-secret-key": "dsn",
		"collector-postgres-replicas": "2", "collector-postgres-statement-cache": "true", "collector-postgres-engine-lease-ttl": "0s",
	} {
		if got := f.Lookup(flag); got == nil || got.DefValue != want {
			t.Errorf("--%s default: %+v; want %s", flag, got, want)
		}
	}
	cmd := newManagerCommand()
	cmd.SetArgs([]string{"--collector-contact-retention=soon", "--metrics-bind-address=0", "--health-probe-bind-address=0"})
	err := cmd.ExecuteContext(t.Context())
	want := `--collector-contact-retention: "soon" is not a positive duration such as 400d, 72h or 30m`
	if err == nil || err.Error() != want {
		t.Errorf("unusable contact retention: %v; want %s", err, want)
	}
}

// TestCollectorStoreFlags: the manager refuses unusable store flags before
// it contacts any cluster, naming the flag, and hands the PostgreSQL
// collector options to the pod runtime.
func TestCollectorStoreFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--collector-store=pg"}, `--collector-store: "pg" is neither "embedded" nor "postgres"`},
		{[]string{"--collector-store=postgres"}, "--collector-postgres-secret: must name the Secret with the connection string when --collector-store=postgres"},
		{[]string{"--collector-postgres-replicas=0"}, "--collector-postgres-replicas: 0 is not a positive count"},
		{[]string{"--collector-postgres-secret-key="}, "--collector-postgres-secret-key: must not be empty"},
		{[]string{"--collector-postgres-engine-lease-ttl=2s"}, "--collector-postgres-engine-lease-ttl: 2s is shorter than 3s (its holder renews it every third of it, and a renewal must fit in that); 0 leaves the collectors' default"},
		{[]string{"--local-collectors-dir=" + t.TempDir(), "--collector-store=postgres", "--collector-postgres-secret=db"},
			"--collector-store: local collectors (--local-collectors-dir, as `cxop dev` runs them) keep every namespace's records where --local-collectors-postgres-dsn-file says, not in a Secret's database; leave it at embedded"},
	} {
		cmd := newManagerCommand()
		cmd.SetArgs(append(tc.args, "--metrics-bind-address=0", "--health-probe-bind-address=0"))
		err := cmd.ExecuteContext(t.Context())
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: %v; want %s", tc.args, err, tc.want)
		}
	}

	opts := &managerOptions{collector: controllers.KubeCollectorRuntime{Image: "example.com/cxop:test"},
		collectorCPU: "100m", collectorMemory: "128Mi", collectorMemMax: "512Mi", collectorDisk: "1Gi", collectorCache: "128Mi"}
	opts.collector.Delivery = collectorapi.DefaultDelivery
	opts.collector.Postgres = controllers.PostgresCollectors{SecretKey: "uri", Replicas: 3}
	rt, _, err := opts.collectorRuntime()
	if err != nil {
		t.Fatal(err)
	}
	got := rt.(*controllers.KubeCollectorRuntime).Postgres
	if want := (controllers.PostgresCollectors{SecretKey: "uri", Replicas: 3, NoStatementCache: true}); got != want {
		t.Errorf("collectors on PostgreSQL: %+v; want %+v (statement cache off unless --collector-postgres-statement-cache)", got, want)
	}
}
