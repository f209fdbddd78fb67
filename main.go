// Command cxop is the customer-experience operator: the Kubernetes manager
// that reconciles Journeys, Touchpoints, Surveys and CXTargets, and the
// collector that receives interaction events and survey answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	// Time zones of business hours and schedules are checked against the
	// IANA database; embed it so minimal images without /usr/share/zoneinfo
	// behave the same.
	_ "time/tzdata"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/controllers"
	"github.com/cxop-dev/cxop/internal/collector"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/localcollector"
	"github.com/cxop-dev/cxop/internal/storecopy"
	"github.com/cxop-dev/cxop/internal/version"
	"github.com/cxop-dev/cxop/internal/webhook"
)

func main() {
	ctx := ctrl.SetupSignalHandler()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cxop:", err)
		os.Exit(1)
	}
}

// newRootCommand returns the cxop command; running it without a subcommand
// runs the manager, so a container's entrypoint needs no arguments.
func newRootCommand() *cobra.Command {
	manager := newManagerCommand()
	root := &cobra.Command{
		Use:           "cxop",
		Short:         "Kubernetes-native customer-experience operator",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          manager.RunE,
	}
	root.Flags().AddFlagSet(manager.Flags())
	root.AddCommand(manager, collector.NewCommand(), collector.NewWaveCommand(), newDevCommand())
	root.AddCommand(collector.NewCustomerCommand())
	root.AddCommand(storecopy.NewCommand())
	return root
}

// managerOptions are the manager's command-line flags.
type managerOptions struct {
	metricsAddr    string
	probeAddr      string
	profilerAddr   string
	concurrency    int
	leaderElection bool
	zap            zap.Options

	refreshInterval time.Duration
	kubeQPS         float64
	kubeBurst       int
	// localCollectors, when set, runs collectors as local processes
	// with their data under this directory (cxop dev) instead of as
	// StatefulSets.
	localCollectors string
	collector       controllers.KubeCollectorRuntime
	collectorCPU    string
	collectorMemory string
	collectorMemMax string
	collectorDisk   string
	collectorCache  string

	// localCollectorsDSNFile puts the local collectors on PostgreSQL.
	localCollectorsDSNFile string
	// postgresStatementCache is --collector-postgres-statement-cache.
	postgresStatementCache bool

	// watchNamespaces, when set, limits the manager to these namespaces
	// (the chart's namespaced mode, with Roles instead of ClusterRoles).
	watchNamespaces []string
	// dataPolicy is the collectors' data policy where a namespace's
	// annotations set none.
	dataPolicy controllers.DataPolicy
}

func newManagerCommand() *cobra.Command {
	opts := &managerOptions{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the controller manager (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runManager(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8080", `Address the Prometheus metrics endpoint binds to; "0" disables it.`)
	f.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	f.StringVar(&opts.profilerAddr, "profiler-address", "", `Address net/http/pprof binds to (e.g. "127.0.0.1:6060"); empty disables it.`)
	f.BoolVar(&opts.leaderElection, "leader-elect", false, "Elect a leader so that only one of several replicas reconciles.")
	f.Float64Var(&opts.kubeQPS, "kube-api-qps", 500, "Queries per second the manager may send to the API server, on average; the API server's priority and fairness still applies.")
	f.IntVar(&opts.kubeBurst, "kube-api-burst", 1000, "Queries the manager may send to the API server in a burst above kube-api-qps.")
	f.IntVar(&opts.concurrency, "concurrent", 10, "How many objects of each kind are reconciled at once.")
	f.DurationVar(&opts.refreshInterval, "status-refresh-interval", 30*time.Second,
		"How often each object's status numbers are refreshed from its collector (jittered by 10%).")
	f.StringVar(&opts.collector.Image, "collector-image", version.Image(), "Image of the collector pods and the scheduled wave jobs (the cxop image; the default is the image this binary was built into).")
	f.StringVar(&opts.collectorCPU, "collector-cpu-request", "100m", "CPU request of a collector pod.")
	f.StringVar(&opts.collectorMemory, "collector-memory-request", "128Mi", "Memory request of a collector pod.")
	f.StringVar(&opts.collectorMemMax, "collector-memory-limit", "512Mi", "Memory limit of a collector pod.")
	f.StringVar(&opts.collectorDisk, "collector-storage-size", "4Gi", "Size of a collector's data PersistentVolumeClaim; 4Gi holds about 40,000 records a day for the default 400d retention (docs/design-notes.md).")
	f.StringVar(&opts.collectorCache, "collector-block-cache-size", "128Mi", "A collector's block cache, besides its 128Mi of memtables; about 2.5 bytes per stored record keep its id lookups in memory. Cache and memtables must fit under --collector-memory-limit.")
	f.StringSliceVar(&opts.collector.ImagePullSecrets, "collector-image-pull-secrets", nil, "Secrets, by name, that the kubelet pulls the collector and wave job image with; each must exist in every namespace that has a collector.")
	f.StringVar(&opts.collector.StorageClass, "collector-storage-class", "", "StorageClass of a collector's data PVC (default: the cluster's default).")
	f.BoolVar(&opts.collector.DeletePVC, "collector-delete-pvc", false,
		"Delete a collector's data PVC when the last Touchpoint of its namespace is deleted (default: keep it).")
	f.StringVar(&opts.collector.PageURLTemplate, "survey-page-url", "",
		`Where customers reach a namespace's survey page, with "{namespace}" for the namespace, such as "https://cx.example.com/{namespace}" (routed to the namespace's collector Service by your Ingress or Gateway). Empty: surveys send no invitations.`)
	f.StringSliceVar(&opts.collector.WebhookAllowHosts, "webhook-allow-hosts", nil,
		"Hosts survey webhooks may reach although they resolve to internal addresses (an in-cluster mailer); all others inside are refused.")
	f.BoolVar(&opts.collector.AllowInsecureWebhooks, "allow-insecure-webhooks", false,
		"Let survey webhooks use plain http URLs; by default collectors send webhooks over https only, and an http webhook's messages wait.")
	f.StringSliceVar(&opts.collector.WebhookDenyCIDRs, "webhook-deny-cidrs", nil,
		"CIDR ranges survey webhooks may not reach besides the built-in internal ones, such as the cluster's pod and Service CIDRs when they are public addresses (hosts in --webhook-allow-hosts still may).")
	collectorapi.AddManagerDeliveryFlags(f, &opts.collector.Delivery)
	f.StringVar(&opts.dataPolicy.Retention, "collector-retention", controllers.DefaultDataPolicy.Retention,
		"How long collectors keep records and every other class of stored customer data (Prometheus duration); a namespace's "+controllers.RetentionAnnotation+" annotation overrides it.")
	f.StringVar(&opts.dataPolicy.ContactRetention, "collector-contact-retention", controllers.DefaultDataPolicy.ContactRetention,
		"How long collectors keep an invitation's contact fields (e-mail, phone) after its delivery succeeded or was given up (Prometheus duration); a namespace's "+controllers.ContactRetentionAnnotation+" annotation overrides it.")
	f.BoolVar(&opts.dataPolicy.PseudonymizeCustomers, "collector-pseudonymize-customers", controllers.DefaultDataPolicy.PseudonymizeCustomers,
		"Have collectors store a keyed hash of each customer id (HMAC-SHA256 with the namespace's Secret "+controllers.CustomerIDKeySecretName+") instead of the id; a namespace's "+controllers.PseudonymizeCustomersAnnotation+" annotation overrides it.")
	f.StringVar(&opts.dataPolicy.Store, "collector-store", controllers.StoreEmbedded,
		"Where collectors keep records: embedded (a one-replica StatefulSet with a PVC per namespace) or postgres (a Deployment of stateless replicas over the PostgreSQL in --collector-postgres-secret); a namespace's "+controllers.StoreAnnotation+" annotation overrides it.")
	f.StringVar(&opts.dataPolicy.PostgresSecret, "collector-postgres-secret", "",
		"Secret, in each namespace on PostgreSQL, that holds the connection string its collectors use (required with --collector-store=postgres); a namespace's "+controllers.PostgresSecretAnnotation+" annotation names another.")
	f.StringVar(&opts.collector.Postgres.SecretKey, "collector-postgres-secret-key", controllers.DefaultPostgresSecretKey,
		"Key of the connection string in that Secret.")
	f.Int32Var(&opts.collector.Postgres.Replicas, "collector-postgres-replicas", controllers.DefaultPostgresReplicas,
		"Collector replicas of each namespace on PostgreSQL.")
	f.BoolVar(&opts.postgresStatementCache, "collector-postgres-statement-cache", true,
		"Let collectors on PostgreSQL cache prepared statements; false behind PgBouncer in transaction pooling mode before 1.21.")
	f.DurationVar(&opts.collector.Postgres.EngineLeaseTTL, "collector-postgres-engine-lease-ttl", 0,
		"How long the survey engine lease among a namespace's collectors on PostgreSQL lasts unless its holder renews it (every third of it): how soon another replica takes over from one that died; at least 3s; 0 leaves the collectors' default (20s).")
	f.StringVar(&opts.localCollectors, "local-collectors-dir", "",
		"Run collectors as local processes on loopback ports with their data under this directory, instead of as pods (used by `cxop dev`).")
	f.StringVar(&opts.localCollectorsDSNFile, "local-collectors-postgres-dsn-file", "",
		"With --local-collectors-dir: keep each namespace's records in a PostgreSQL database of its own (cxop_NAMESPACE), created through the connection string in this file, instead of an embedded store (used by `cxop dev --store postgres`).")
	f.StringSliceVar(&opts.watchNamespaces, "watch-namespaces", nil,
		"Namespaces the manager watches and acts in, comma-separated; empty: every namespace. With a list, Roles in those namespaces are all the RBAC it needs.")
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	opts.zap.BindFlags(zapFlags)
	f.AddGoFlagSet(zapFlags)
	return cmd
}

func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := cxv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return scheme, nil
}

func runManager(ctx context.Context, opts *managerOptions) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.zap)))
	scheme, err := newScheme()
	utilruntime.Must(err)

	if err := opts.dataPolicy.Check(); err != nil {
		return err
	}
	if err := opts.checkPostgres(); err != nil {
		return err
	}
	if opts.localCollectors != "" && opts.dataPolicy.Store == controllers.StorePostgres {
		return errors.New("--collector-store: local collectors (--local-collectors-dir, as `cxop dev` runs them) keep every namespace's records where --local-collectors-postgres-dsn-file says, not in a Secret's database; leave it at embedded")
	}
	runtime, cleanup, err := opts.collectorRuntime()
	if err != nil {
		return err
	}
	defer cleanup()

	namespaces, err := cacheNamespaces(opts.watchNamespaces)
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(opts.kubeQPS), opts.kubeBurst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: opts.metricsAddr},
		HealthProbeBindAddress: opts.probeAddr,
		PprofBindAddress:       opts.profilerAddr,
		LeaderElection:         opts.leaderElection,
		LeaderElectionID:       "manager.cxop.dev",
		// A replica that is shutting down (a rollout, a drained node) hands
		// the lease over at once instead of making the next leader wait out
		// its lease duration; Run returns only after the manager stopped.
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			ByObject:          managedObjectsOnly(),
			DefaultNamespaces: namespaces,
			// managedFields is bookkeeping for server-side apply that the
			// reconcilers never read; dropping it from the informer caches
			// saves a good share of the manager's memory at 10,000 objects.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	var waves controllers.WaveScheduler = controllers.ManagerWaves{}
	if kube, ok := runtime.(*controllers.KubeCollectorRuntime); ok {
		kube.Client = mgr.GetClient()
		kube.APIReader = mgr.GetAPIReader()
		kube.ServiceMonitors = controllers.HasKind(mgr.GetRESTMapper(), controllers.ServiceMonitorGVK)
		kube.PrometheusRules = controllers.HasKind(mgr.GetRESTMapper(), controllers.PrometheusRuleGVK)
		waves = &controllers.CronJobWaves{Image: kube.Image, ImagePullSecrets: kube.ImagePullSecrets}
	}
	if err := controllers.SetupWithManager(ctx, mgr, controllers.Options{
		Runtime: runtime, RefreshInterval: opts.refreshInterval, Concurrency: opts.concurrency, Waves: waves,
		DataPolicy: opts.dataPolicy, WatchNamespaces: opts.watchNamespaces, PostgresSecretKey: opts.collector.Postgres.SecretKey,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// checkPostgres refuses PostgreSQL collector flags that cannot work.
func (o *managerOptions) checkPostgres() error {
	if o.collector.Postgres.Replicas < 1 {
		return fmt.Errorf("--collector-postgres-replicas: %d is not a positive count", o.collector.Postgres.Replicas)
	}
	if o.collector.Postgres.SecretKey == "" {
		return errors.New("--collector-postgres-secret-key: must not be empty")
	}
	if err := collectorapi.CheckPostgresEngineLeaseTTL(o.collector.Postgres.EngineLeaseTTL); err != nil {
		return fmt.Errorf("--collector-postgres-engine-lease-ttl: %w; 0 leaves the collectors' default", err)
	}
	return nil
}

// collectorRuntime returns where collectors run, and what to do at exit.
func (o *managerOptions) collectorRuntime() (controllers.CollectorRuntime, func(), error) {
	if o.localCollectors != "" {
		self, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("find own executable: %w", err)
		}
		rt, err := localcollector.New(o.localCollectors, self)
		if err != nil {
			return nil, nil, fmt.Errorf("--local-collectors-dir: %w", err)
		}
		if o.localCollectorsDSNFile != "" {
			if err := rt.UsePostgres(o.localCollectorsDSNFile); err != nil {
				return nil, nil, fmt.Errorf("--local-collectors-postgres-dsn-file: %w", err)
			}
		}
		return rt, rt.Stop, nil
	}
	k := o.collector
	k.Postgres.NoStatementCache = !o.postgresStatementCache
	var err error
	parse := func(flag, v string) resource.Quantity {
		q, perr := resource.ParseQuantity(v)
		if perr != nil && err == nil {
			err = fmt.Errorf("--%s: %q is not a quantity such as 128Mi: %w", flag, v, perr)
		}
		return q
	}
	k.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    parse("collector-cpu-request", o.collectorCPU),
			corev1.ResourceMemory: parse("collector-memory-request", o.collectorMemory),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: parse("collector-memory-limit", o.collectorMemMax)},
	}
	k.StorageSize = parse("collector-storage-size", o.collectorDisk)
	k.BlockCacheSize = parse("collector-block-cache-size", o.collectorCache)
	if err != nil {
		return nil, nil, err
	}
	if err := k.Delivery.Check("collector-"); err != nil {
		return nil, nil, err
	}
	if err := checkCollectorMemory(k.BlockCacheSize, k.Resources.Limits[corev1.ResourceMemory]); err != nil {
		return nil, nil, err
	}
	if k.Image == "" {
		return nil, nil, errors.New("--collector-image: must not be empty")
	}
	deny, err := webhook.ParseDenyCIDRs(k.WebhookDenyCIDRs)
	if err != nil {
		return nil, nil, fmt.Errorf("--webhook-deny-cidrs: %w", err)
	}
	k.WebhookDenyCIDRs = nil
	for _, p := range deny {
		k.WebhookDenyCIDRs = append(k.WebhookDenyCIDRs, p.String())
	}
	return &k, func() {}, nil
}

// checkCollectorMemory refuses a block cache that, with the store's 128Mi
// of memtables, would leave a collector pod less than 128Mi for its Go
// heap under the memory limit: it would be OOM-killed under load.
func checkCollectorMemory(cache, limit resource.Quantity) error {
	if limit.IsZero() {
		return nil
	}
	if cache.Sign() <= 0 {
		return fmt.Errorf("--collector-block-cache-size: %s is not a positive size", cache.String())
	}
	const memtables, heap = 128 << 20, 128 << 20
	if cache.Value()+memtables+heap > limit.Value() {
		return fmt.Errorf("--collector-block-cache-size: %s plus 128Mi of memtables and 128Mi of heap does not fit under --collector-memory-limit %s",
			cache.String(), limit.String())
	}
	return nil
}

// cacheNamespaces turns --watch-namespaces into the cache's namespaces:
// nil (every namespace) for an empty list.
func cacheNamespaces(names []string) (map[string]cache.Config, error) {
	if len(names) == 0 {
		return nil, nil
	}
	out := make(map[string]cache.Config, len(names))
	for _, n := range names {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			return nil, fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", n, strings.Join(errs, "; "))
		}
		out[n] = cache.Config{}
	}
	return out, nil
}

// managedObjectsOnly limits the informer caches of Secrets, ConfigMaps and
// the collectors' workloads to objects cxop made, so that a cluster's
// thousands of unrelated Secrets are neither cached nor listed by the
// manager. This is not a permission: its RBAC cannot be limited by label
// (docs/design-notes.md, Permissions).
func managedObjectsOnly() map[client.Object]cache.ByObject {
	managed := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{controllers.ManagedByLabel: controllers.ManagedByValue})}
	return map[client.Object]cache.ByObject{
		&corev1.Secret{}:                managed,
		&corev1.ConfigMap{}:             managed,
		&corev1.Service{}:               managed,
		&corev1.ServiceAccount{}:        managed,
		&appsv1.StatefulSet{}:           managed,
		&appsv1.Deployment{}:            managed,
		&policyv1.PodDisruptionBudget{}: managed,
		&batchv1.CronJob{}:              managed,
	}
}
