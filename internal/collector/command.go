package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// Options are the collector's flags.
type Options struct {
	// Listen serves the API and the probes, and the survey page unless
	// PageListen is set.
	Listen string
	// MetricsListen serves /metrics alone; empty disables it.
	MetricsListen string
	// PageListen, when set, serves the hosted survey page alone (the one
	// listener to expose to the internet), and Listen no longer does.
	PageListen string
	DataDir    string
	ConfigPath string
	// SecretsPath is the secrets file (link and webhook keys); optional
	// until a survey sends invitations.
	SecretsPath string
	// WebhookAllowHosts may be reached by webhooks although they resolve
	// to internal addresses; WebhookAllowLoopback lets webhooks reach
	// this machine (for `cxop dev`).
	WebhookAllowHosts    []string
	WebhookAllowLoopback bool
	// AllowInsecureWebhooks lets webhooks use plain http; by default
	// only https URLs are sent to.
	AllowInsecureWebhooks bool
	// WebhookDenyCIDRs are ranges webhooks may not reach on top of the
	// built-in ones: the cluster's pod and Service CIDRs.
	WebhookDenyCIDRs []string
	Rebuild          bool
	LogLevel         string
	// ProfilerAddress serves net/http/pprof when set, on its own
	// listener so that the API port never exposes it.
	ProfilerAddress string
	// BlockCacheSize is Pebble's block cache as a quantity ("256Mi"), on
	// top of the memtables; empty means the store's default, 128Mi. It
	// should hold the bloom filters, about 2.5 bytes per stored record.
	BlockCacheSize string
	// ConfigPoll re-reads the config this often even without a file
	// event, because a ConfigMap volume update may not be seen by inotify
	// on every filesystem. Default 10s.
	ConfigPoll time.Duration
	// Delivery and invitation limits of the survey engine.
	Delivery collectorapi.DeliveryOptions
	// MaxInflightBytes caps the request bodies held in memory at once, as
	// a quantity ("64Mi"); empty derives it from GOMEMLIMIT (an eighth),
	// or 64Mi without one.
	MaxInflightBytes string

	// Store is "embedded" (the default: Pebble in DataDir) or "postgres"
	// (replicas over one database; storage.go).
	Store string
	// PostgresDSNFile holds the database's connection string (a mounted
	// Secret); the string is never a flag value and never logged.
	PostgresDSNFile string
	// PostgresStatementCache keeps pgx's prepared statements; off behind
	// PgBouncer in transaction pooling mode before 1.21.
	PostgresStatementCache bool
	// PostgresEngineLeaseTTL is how long the survey engine's lease among
	// replicas lasts without renewal (pgstore.Options.EngineLeaseTTL);
	// 0 takes pgstore's default.
	PostgresEngineLeaseTTL time.Duration

	// logTo is where the log goes; nil is stderr. Tests read it.
	logTo io.Writer
	// minFreeBytes overrides the free space the store needs to write
	// (store.Options.MinFreeBytes); tests set it to open read-only.
	minFreeBytes int64
}

// addDeliveryFlags declares the survey engine's flags.
func addDeliveryFlags(f collectorapi.FlagSet, o *collectorapi.DeliveryOptions) {
	d := collectorapi.DefaultDelivery
	f.DurationVar(&o.RetryFor, "webhook-retry-for", d.RetryFor, "retry a failing webhook message (any answer but 2xx and 410) this long, with exponential backoff, before parking it; parked messages are kept and delivered once the webhook works again")
	f.DurationVar(&o.ProbeInterval, "webhook-probe-interval", d.ProbeInterval, "how often a failing webhook is tried with one parked message")
	f.IntVar(&o.PerTouchpoint, "invitation-rate-per-touchpoint", d.PerTouchpoint, "invitations one touchpoint's interactions (one touchpoint token) may trigger per hour; more are suppressed and counted; 0: no cap")
	f.IntVar(&o.PerNamespace, "invitation-rate-per-namespace", d.PerNamespace, "invitations all touchpoints of the collector may trigger per hour; more are suppressed and counted; 0: no cap")
}

// defaultGCPercent is the collector process's GOGC unless the environment
// sets one or Pebble's caches live on the Go heap (a build without cgo).
const defaultGCPercent = 200

// NewCommand returns `cxop collector`.
func NewCommand() *cobra.Command {
	o := Options{}
	cmd := &cobra.Command{
		Use:   "collector",
		Short: "Receive interaction events and survey answers, store them durably and answer CX summaries",
		Long: `collector serves the cxop collector HTTP API (docs/collector.md):
POST /v1/events and /v1/responses store records durably (fsync'd, exactly
once per id); GET /v1/summary answers NPS, CSAT, effort and wait-time
compliance over a window from time-bucketed rollups.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv("GOGC") == "" && pebbleCachesOffHeap {
				// The Go heap is small next to Pebble's memtables and block
				// cache (allocated outside it); collecting at twice the live
				// heap instead of once halves the GC work of a busy ingest
				// path and halved its ack p99 on two cores (31 ms to 16 ms).
				debug.SetGCPercent(defaultGCPercent)
			}
			return Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", ":8080", "address to serve the API and the probes on (and the survey page, unless --page-listen is set)")
	f.StringVar(&o.MetricsListen, "metrics-listen", ":9090", `address to serve /metrics on, apart from the API; "" disables it`)
	f.StringVar(&o.PageListen, "page-listen", "", "address to serve the hosted survey page (/s/) on alone, the one port to expose to the internet; empty serves it on --listen")
	f.StringVar(&o.DataDir, "data-dir", "", "directory of the embedded store (required with --store=embedded)")
	f.StringVar(&o.Store, "store", StoreEmbedded, "where records are kept: embedded (Pebble in --data-dir, one replica) or postgres (replicas over one PostgreSQL, --postgres-dsn-file)")
	f.StringVar(&o.PostgresDSNFile, "postgres-dsn-file", "", "file holding the PostgreSQL connection string, such as a mounted Secret key (required with --store=postgres; the string itself is never a flag, an environment variable or logged)")
	f.BoolVar(&o.PostgresStatementCache, "postgres-statement-cache", true, "cache prepared statements on each database connection; set false behind PgBouncer in transaction pooling mode before 1.21")
	f.DurationVar(&o.PostgresEngineLeaseTTL, "postgres-engine-lease-ttl", 0, "how long the survey engine's lease among replicas lasts unless its holder renews it (every third of it): how soon another replica's engine takes over from one that died (at least 3s; 0 is the default, 20s)")
	f.StringVar(&o.ConfigPath, "config", "", "collector config file; reloaded when it changes (required)")
	f.StringVar(&o.SecretsPath, "secrets", "", "secrets file with the keys that sign survey links and webhooks; reloaded when it changes")
	f.StringSliceVar(&o.WebhookAllowHosts, "webhook-allow-hosts", nil, "hosts webhooks may reach although they resolve to loopback, private or link-local addresses")
	f.BoolVar(&o.WebhookAllowLoopback, "webhook-allow-loopback", false, "let webhooks reach loopback addresses (a receiver on this machine)")
	f.BoolVar(&o.AllowInsecureWebhooks, "allow-insecure-webhooks", false, "let webhooks use plain http URLs; by default a webhook is sent over https only")
	f.StringSliceVar(&o.WebhookDenyCIDRs, "webhook-deny-cidrs", nil, "CIDR ranges webhooks may not reach besides the built-in ones, such as the cluster's pod and Service ranges (hosts in --webhook-allow-hosts still may)")
	f.BoolVar(&o.Rebuild, "rebuild", false, "recount every stored record instead of loading the checkpointed rollups")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.ProfilerAddress, "profiler-address", "", `address net/http/pprof binds to (e.g. "127.0.0.1:6060"); empty disables it`)
	f.StringVar(&o.BlockCacheSize, "block-cache-size", "128Mi", "the store's block cache, besides 128Mi of memtables; about 2.5 bytes per stored record keep every id lookup in memory")
	f.DurationVar(&o.ConfigPoll, "config-poll-interval", 10*time.Second, "re-read the config at least this often")
	addDeliveryFlags(f, &o.Delivery)
	f.StringVar(&o.MaxInflightBytes, "max-inflight-bytes", "", "request body bytes held in memory at once, such as 64Mi; beyond it requests get 503 with Retry-After; empty: an eighth of GOMEMLIMIT, or 64Mi without one")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var maxInflight int64 // 0: derived from GOMEMLIMIT
	if o.MaxInflightBytes != "" {
		q, err := resource.ParseQuantity(o.MaxInflightBytes)
		if err != nil || q.Value() < minInflightBytes {
			return fmt.Errorf("--max-inflight-bytes: %q is not a size of at least %d bytes (two bodies of the largest size) such as 64Mi", o.MaxInflightBytes, minInflightBytes)
		}
		maxInflight = q.Value()
	}
	var cacheBytes int64
	if o.BlockCacheSize != "" {
		q, err := resource.ParseQuantity(o.BlockCacheSize)
		if err != nil || q.Sign() <= 0 {
			return fmt.Errorf("--block-cache-size: %q is not a positive size such as 256Mi", o.BlockCacheSize)
		}
		cacheBytes = q.Value()
	}
	if o.Delivery == (collectorapi.DeliveryOptions{}) {
		o.Delivery = collectorapi.DefaultDelivery
	}
	if err := o.Delivery.Check(""); err != nil {
		return err
	}
	guard, err := o.webhookGuard()
	if err != nil {
		return err
	}
	dsn, err := o.storeFlags()
	if err != nil {
		return err
	}
	logTo := o.logTo
	if logTo == nil {
		logTo = os.Stderr
	}
	log := slog.New(slog.NewJSONHandler(logTo, &slog.HandlerOptions{Level: level}))
	cfg, data, err := readConfigFile(o.ConfigPath)
	if err != nil {
		return err
	}
	if len(cfg.readTokens) == 0 {
		return fmt.Errorf("config %s: %w", o.ConfigPath, errNoReadToken)
	}
	sec, secData, err := readSecretsFile(o.SecretsPath)
	if err != nil {
		return err
	}
	if cfg, err = withCustomerKey(cfg, sec); err != nil {
		return fmt.Errorf("config %s: %w", o.ConfigPath, err)
	}
	reg := prometheus.NewRegistry()
	srv := NewServer(log, cfg, reg, time.Now)
	if maxInflight > 0 {
		srv.SetMaxInflightBytes(maxInflight)
	}
	srv.metrics.configSuccess.Set(1)
	srv.allowHTTPWebhooks = o.AllowInsecureWebhooks
	srv.storeKind = o.Store

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Bind every listener first: a taken or malformed address is a clear
	// error at start, and the probes answer while the store replays.
	apiHandler := srv.Handler()
	servers := []listener{{flag: "--listen", addr: o.Listen}}
	if o.PageListen != "" {
		apiHandler = srv.APIHandler()
		servers = append(servers, listener{flag: "--page-listen", addr: o.PageListen, srv: newHTTPServer(srv.PageHandler(), log)})
	}
	servers[0].srv = newHTTPServer(apiHandler, log)
	if o.MetricsListen != "" {
		servers = append(servers, listener{flag: "--metrics-listen", addr: o.MetricsListen, srv: newHTTPServer(srv.MetricsHandler(), log)})
	}
	if o.ProfilerAddress != "" {
		servers = append(servers, listener{flag: "--profiler-address", addr: o.ProfilerAddress, srv: &http.Server{Handler: profilerMux(), ReadHeaderTimeout: 5 * time.Second}})
	}
	served, err := serveAll(ctx, servers, log)
	if err != nil {
		return err
	}
	// stopServing ends every listener and waits for each to drain.
	stopServing := func() error {
		cancel()
		var errs []error
		for range servers {
			errs = append(errs, <-served)
		}
		return errors.Join(errs...)
	}

	hooks := webhook.NewClient(guard, 10*time.Second)
	engineOptions := func() engine.Options {
		return engine.Options{
			Logger:   log.With("component", "surveys"),
			RetryFor: o.Delivery.RetryFor, ProbeInterval: o.Delivery.ProbeInterval,
			TouchpointRate: o.Delivery.PerTouchpoint, NamespaceRate: o.Delivery.PerNamespace,
		}
	}
	if o.Store == StorePostgres {
		pg, err := srv.openPostgres(ctx, o, dsn, cfg, log)
		if err != nil {
			return errors.Join(err, stopServing())
		}
		srv.secrets.Store(sec)
		// The config's revision is in the database before any record is
		// accepted under it (the survey engine's guard, docs/postgres.md).
		if err := pg.RecordConfigRevision(ctx, cfg.revision); err != nil {
			return errors.Join(err, pg.Close(), stopServing())
		}
		srv.recordRevision = pg.RecordConfigRevision
		// One survey engine per replica over the database; a fenced lease
		// lets one of them work at a time (docs/postgres.md), and the
		// records reach it through the feed each append writes.
		opts := engineOptions()
		opts.Registerer = reg
		surveys, err := engine.NewOn(pg.EngineKV(), nil, hooks, opts)
		if err != nil {
			return errors.Join(err, pg.Close(), stopServing())
		}
		srv.surveys.Store(surveys)
		srv.applySurveys(cfg, sec)
		engineCtx, stopEngine := context.WithCancel(context.Background())
		engineDone := make(chan struct{})
		go func() { defer close(engineDone); _ = surveys.Run(engineCtx) }()
		// Ready only now: the survey page needs the engine.
		var st Storage = pg
		srv.external.Store(&st)
		log.Info("collector ready", "store", StorePostgres, "listen", o.Listen, "page_listen", o.PageListen, "metrics_listen", o.MetricsListen, "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys))
		go srv.watchConfig(ctx, configFiles{config: o.ConfigPath, secrets: o.SecretsPath}, data, secData, o.ConfigPoll)
		go srv.pruneLoop(ctx)
		err = <-served
		cancel()
		for range servers[1:] {
			err = errors.Join(err, <-served)
		}
		// The engine stops before the store closes, so it hands its lease
		// back instead of leaving the other replicas to wait it out.
		stopEngine()
		<-engineDone
		if cerr := pg.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
		log.Info("collector stopped")
		return err
	}

	storeOpts := store.Options{
		Dir:          o.DataDir,
		Retention:    rollup.Retention{Minute: rollup.DefaultRetention.Minute, Hour: rollup.DefaultRetention.Hour, Day: cfg.retention},
		Rebuild:      o.Rebuild,
		CacheBytes:   cacheBytes,
		Logger:       log,
		Registerer:   reg,
		FaultMetrics: store.NewFaultMetrics(reg),
		MinFreeBytes: o.minFreeBytes,
	}
	reg.MustRegister(newVolumeCollector(o.DataDir, vfs.Default, srv.store.Load))
	srv.dataVolume = func() (uint64, bool) {
		u, ok := store.DiskUsage(vfs.Default, o.DataDir)
		reserve := uint64(max(o.minFreeBytes, 0))
		if o.minFreeBytes == 0 {
			reserve = store.DefaultMinFreeBytes
		}
		if !ok || u.TotalBytes <= reserve {
			return 0, ok
		}
		return u.TotalBytes - reserve, true
	}
	st, err := store.Open(storeOpts)
	if err != nil {
		return errors.Join(err, stopServing())
	}
	srv.secrets.Store(sec)
	var engines sync.WaitGroup
	// startSurveys gives the survey engine the store. A read-only store
	// gets an engine that only reads (the survey page answers from it),
	// which the writable store's engine replaces.
	startSurveys := func(st *store.Store) error {
		opts := engineOptions()
		if st.ReadOnly() == nil {
			// Only the engine that writes parks and limits; the read-only
			// one is replaced by it, and metrics register once.
			opts.Registerer = reg
		}
		surveys, err := engine.New(st.DB(), st, hooks, opts)
		if err != nil {
			return err
		}
		srv.surveys.Store(surveys)
		srv.applySurveys(srv.cfg.Load(), srv.secrets.Load())
		if st.Err() == nil {
			engines.Go(func() { _ = surveys.Run(ctx) })
		}
		return nil
	}
	if err := startSurveys(st); err != nil {
		if st.ReadOnly() == nil {
			return errors.Join(err, st.Close(), stopServing())
		}
		log.Warn("the survey page waits until the store can write", "err", err)
	}
	// Ready (/readyz answers from the store) only once the survey engine
	// runs, so that no request routed here finds the survey page missing.
	srv.store.Store(st)
	var resumed sync.WaitGroup
	if st.ReadOnly() != nil {
		resumed.Go(func() {
			srv.resumeWhenRoom(ctx, storeOpts, func(st *store.Store) {
				if err := startSurveys(st); err != nil {
					log.Error("start the survey engine", "err", err)
				}
				if st.ReadOnly() == nil {
					// Records past retention are the space to win back first.
					srv.prune(ctx)
				}
			})
		})
	}
	log.Info("collector ready", "listen", o.Listen, "page_listen", o.PageListen, "metrics_listen", o.MetricsListen, "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys),
		"read_only", st.ReadOnly() != nil)

	go srv.watchConfig(ctx, configFiles{config: o.ConfigPath, secrets: o.SecretsPath}, data, secData, o.ConfigPoll)
	go srv.pruneLoop(ctx)

	// The first listener to stop (ctx ended, or a serve error) stops all.
	err = <-served
	cancel()
	for range servers[1:] {
		err = errors.Join(err, <-served)
	}
	resumed.Wait()
	engines.Wait()
	if st := srv.store.Load(); st != nil {
		if cerr := st.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
	}
	log.Info("collector stopped")
	return err
}

// webhookGuard is the guard every webhook is dialled through, from the
// webhook flags.
func (o Options) webhookGuard() (*webhook.Guard, error) {
	deny, err := webhook.ParseDenyCIDRs(o.WebhookDenyCIDRs)
	if err != nil {
		return nil, fmt.Errorf("--webhook-deny-cidrs: %w", err)
	}
	return &webhook.Guard{AllowHosts: o.WebhookAllowHosts, AllowLoopback: o.WebhookAllowLoopback, AllowHTTP: o.AllowInsecureWebhooks, Deny: deny}, nil
}

// errNoReadToken: summaries and exports hold customers' comments and
// contacts, so a collector never serves them without a read token.
var errNoReadToken = errors.New("readTokenSHA256 is empty; /v1/summary and /v1/export need a read token, so the collector does not start without one (the operator and `cxop dev` provision it; by hand, put the SHA-256 of a random token there)")

// parseServedConfig is parseConfig for a reload: a config that drops the
// read token is refused like an invalid one, and the last good one stays.
func (srv *Server) parseServedConfig(data []byte) (*settings, error) {
	s, err := parseConfig(data)
	if err != nil {
		return nil, err
	}
	if len(s.readTokens) == 0 {
		return nil, errNoReadToken
	}
	return s, nil
}

// listener is one HTTP server of the collector and the flag naming its
// address.
type listener struct {
	flag, addr string
	srv        *http.Server
}

// newHTTPServer bounds how long a client may hold a connection.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// serveAll binds every listener, or none (the error names the flag), then
// serves each until ctx ends. Each reports on the channel once drained.
func serveAll(ctx context.Context, servers []listener, log *slog.Logger) (<-chan error, error) {
	ls := make([]net.Listener, 0, len(servers))
	for _, s := range servers {
		l, err := net.Listen("tcp", s.addr)
		if err != nil {
			for _, prev := range ls {
				_ = prev.Close()
			}
			return nil, fmt.Errorf("%s %s: %w", s.flag, s.addr, err)
		}
		ls = append(ls, l)
	}
	served := make(chan error, len(servers))
	for i, s := range servers {
		log.Info("listening", "flag", s.flag, "address", ls[i].Addr().String())
		go func() { served <- Serve(ctx, s.srv, ls[i], log) }()
	}
	return served, nil
}

// profilerMux serves the Go runtime's profiles under /debug/pprof/.
func profilerMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// configFiles are the files the collector reloads.
type configFiles struct{ config, secrets string }

// applySurveys hands the survey engine its part of the config, and logs
// what it had to leave out.
func (s *Server) applySurveys(cfg *settings, sec *secrets) {
	s.secrets.Store(sec)
	if sec != nil {
		keys := sec.linkKeys
		s.linkKeys.Store(&keys)
	}
	e := s.surveys.Load()
	if e == nil {
		return
	}
	c, problems := engineConfig(cfg, sec, s.allowHTTPWebhooks)
	for _, p := range problems {
		s.log.Warn("surveys: " + p)
	}
	e.SetConfig(c)
}

// watchConfig reloads the config and the secrets when their files (or the
// ConfigMap and Secret symlinks around them) change. A bad file is logged
// and counted; the last good one stays in force.
func (s *Server) watchConfig(ctx context.Context, files configFiles, last, lastSecrets []byte, poll time.Duration) {
	if poll <= 0 {
		poll = 10 * time.Second
	}
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("watch config; polling only", "err", err)
	} else {
		defer w.Close()
		for _, p := range []string{files.config, files.secrets} {
			if p == "" {
				continue
			}
			if err := w.Add(filepath.Dir(p)); err != nil {
				s.log.Warn("watch config directory; polling only", "path", p, "err", err)
			}
		}
		events = w.Events
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	cfg := s.cfg.Load()
	sec, _ := parseSecretsOrNil(lastSecrets)
	// Files read and valid alone, waiting for the other file to agree
	// with them (pairReload).
	var nextCfg *settings
	var nextSec *secrets
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
		read := false
		if next, ok := reloadFile(s, "config", files.config, &last, s.parseServedConfig); ok {
			nextCfg, read = next, true
		}
		if files.secrets != "" {
			if next, ok := reloadFile(s, "secrets", files.secrets, &lastSecrets, parseSecrets); ok {
				nextSec, read = next, true
			}
		}
		if nextCfg == nil && nextSec == nil {
			continue
		}
		keyed, nextSecrets, cfgIn, secIn, err := pairReload(cfg, sec, nextCfg, nextSec)
		if err != nil && read {
			what, path := "config", files.config
			if nextCfg == nil {
				what, path = "secrets", files.secrets
			}
			s.reloadFailed(what, path, err)
		}
		if keyed != cfg && keyed.revision > cfg.revision && s.recordRevision != nil {
			// Recorded before records are accepted under it; on failure
			// the new files stay pending and are tried again.
			if err := s.recordRevision(ctx, keyed.revision); err != nil {
				s.reloadFailed("config", files.config, err)
				continue
			}
		}
		if keyed != cfg {
			cfg = keyed
			s.cfg.Store(cfg)
			s.metrics.declare(cfg)
		}
		if cfgIn {
			nextCfg = nil
			s.log.Info("config reloaded", "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys))
		}
		if secIn {
			if customerKeyChanged(sec, nextSecrets) {
				s.log.Warn("secrets: customerIDKey changed; every customer's pseudonym changes from now on, so each customer counts twice until the records stored under the old key pass the retention")
				if !sec.customerKey.Equal(nextSecrets.customerKeyPrevious) {
					s.log.Warn("secrets: the replaced customerIDKey is not customerIDKeyPrevious: erasure and access requests no longer find what was stored under it")
				}
			}
			sec, nextSec = nextSecrets, nil
			s.log.Info("secrets reloaded")
		}
		if cfgIn || secIn {
			s.applySurveys(cfg, sec)
			s.metrics.reloads.WithLabelValues("success").Inc()
			if nextCfg == nil && nextSec == nil {
				s.metrics.configSuccess.Set(1)
			}
		}
	}
}

// reloadFile re-reads path and parses it when its bytes differ from
// *last. It reports the new value, or false when the file is unchanged or
// cannot be read or parsed (then counted and logged as a failed reload).
func reloadFile[T any](s *Server, what, path string, last *[]byte, parse func([]byte) (T, error)) (T, bool) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		s.reloadFailed(what, path, err)
		return zero, false
	}
	if bytes.Equal(data, *last) {
		return zero, false
	}
	*last = data
	next, err := parse(data)
	if err != nil {
		s.reloadFailed(what, path, err)
		return zero, false
	}
	return next, true
}

func (s *Server) reloadFailed(what, path string, err error) {
	// The error names a field, never a value, so key material is not
	// logged.
	s.log.Error("reload "+what+"; keeping the previous one", "path", path, "err", err)
	s.metrics.reloads.WithLabelValues("failure").Inc()
	s.metrics.configSuccess.Set(0)
}

func parseSecretsOrNil(data []byte) (*secrets, error) {
	if data == nil {
		return nil, nil
	}
	return parseSecrets(data)
}

// pruneLoop deletes what is past retention (retention.go) a minute after
// start (not at once, so that it does not compete with a restart's first
// requests) and then once an hour, on whichever store is open then.
func (s *Server) pruneLoop(ctx context.Context) {
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.prune(ctx)
		timer.Reset(time.Hour)
	}
}
