package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"k8s.io/apimachinery/pkg/api/resource"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// Options are the collector's flags.
type Options struct {
	Listen     string
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
	Rebuild              bool
	LogLevel             string
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

	// minFreeBytes overrides the free space the store needs to write
	// (store.Options.MinFreeBytes); tests set it to open read-only.
	minFreeBytes int64
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
	f.StringVar(&o.Listen, "listen", ":8080", "address to serve the API, metrics and probes on")
	f.StringVar(&o.DataDir, "data-dir", "", "directory of the embedded store (required)")
	f.StringVar(&o.ConfigPath, "config", "", "collector config file; reloaded when it changes (required)")
	f.StringVar(&o.SecretsPath, "secrets", "", "secrets file with the keys that sign survey links and webhooks; reloaded when it changes")
	f.StringSliceVar(&o.WebhookAllowHosts, "webhook-allow-hosts", nil, "hosts webhooks may reach although they resolve to loopback, private or link-local addresses")
	f.BoolVar(&o.WebhookAllowLoopback, "webhook-allow-loopback", false, "let webhooks reach loopback addresses (a receiver on this machine)")
	f.BoolVar(&o.Rebuild, "rebuild", false, "recount every stored record instead of loading the checkpointed rollups")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.ProfilerAddress, "profiler-address", "", `address net/http/pprof binds to (e.g. "127.0.0.1:6060"); empty disables it`)
	f.StringVar(&o.BlockCacheSize, "block-cache-size", "128Mi", "the store's block cache, besides 128Mi of memtables; about 2.5 bytes per stored record keep every id lookup in memory")
	f.DurationVar(&o.ConfigPoll, "config-poll-interval", 10*time.Second, "re-read the config at least this often")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var cacheBytes int64
	if o.BlockCacheSize != "" {
		q, err := resource.ParseQuantity(o.BlockCacheSize)
		if err != nil || q.Sign() <= 0 {
			return fmt.Errorf("--block-cache-size: %q is not a positive size such as 256Mi", o.BlockCacheSize)
		}
		cacheBytes = q.Value()
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg, data, err := readConfigFile(o.ConfigPath)
	if err != nil {
		return err
	}
	sec, secData, err := readSecretsFile(o.SecretsPath)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	srv := NewServer(log, cfg, reg, time.Now)
	srv.metrics.configSuccess.Set(1)

	httpSrv := &http.Server{
		Addr:              o.Listen,
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Listen first so probes answer while the store replays.
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, httpSrv, log) }()

	if o.ProfilerAddress != "" {
		go func() {
			if err := Serve(ctx, &http.Server{Addr: o.ProfilerAddress, Handler: profilerMux(), ReadHeaderTimeout: 5 * time.Second}, log); err != nil {
				log.Error("profiler", "err", err)
			}
		}()
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
	st, err := store.Open(storeOpts)
	if err != nil {
		cancel()
		<-served
		return err
	}
	srv.store.Store(st)
	srv.secrets.Store(sec)
	guard := &webhook.Guard{AllowHosts: o.WebhookAllowHosts, AllowLoopback: o.WebhookAllowLoopback}
	hooks := webhook.NewClient(guard, 10*time.Second)
	var engines sync.WaitGroup
	// startSurveys gives the survey engine the store. A read-only store
	// gets an engine that only reads (the survey page answers from it),
	// which the writable store's engine replaces.
	startSurveys := func(st *store.Store) error {
		surveys, err := engine.New(st.DB(), st, hooks, engine.Options{Logger: log.With("component", "surveys")})
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
			cancel()
			<-served
			return errors.Join(err, st.Close())
		}
		log.Warn("the survey page waits until the store can write", "err", err)
	}
	var resumed sync.WaitGroup
	if st.ReadOnly() != nil {
		resumed.Go(func() {
			srv.resumeWhenRoom(ctx, storeOpts, func(st *store.Store) {
				if err := startSurveys(st); err != nil {
					log.Error("start the survey engine", "err", err)
				}
				// Records past retention are the space to win back first.
				srv.prune()
			})
		})
	}
	log.Info("collector ready", "listen", o.Listen, "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys),
		"read_only", st.ReadOnly() != nil)

	go srv.watchConfig(ctx, configFiles{config: o.ConfigPath, secrets: o.SecretsPath}, data, secData, o.ConfigPoll)
	go srv.pruneLoop(ctx)

	err = <-served
	cancel()
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
	c, problems := engineConfig(cfg, sec)
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
		changed := false
		if next, ok := reloadFile(s, "config", files.config, &last, parseConfig); ok {
			cfg, changed = next, true
			s.cfg.Store(cfg)
			s.metrics.declare(cfg)
			s.log.Info("config reloaded", "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys))
		}
		if files.secrets != "" {
			if next, ok := reloadFile(s, "secrets", files.secrets, &lastSecrets, parseSecrets); ok {
				sec, changed = next, true
				s.log.Info("secrets reloaded")
			}
		}
		if changed {
			s.applySurveys(cfg, sec)
			s.metrics.reloads.WithLabelValues("success").Inc()
			s.metrics.configSuccess.Set(1)
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

// pruneLoop deletes raw records past retention a minute after start (not
// at once, so that it does not compete with a restart's first requests)
// and then once an hour, on whichever store is open then.
func (s *Server) pruneLoop(ctx context.Context) {
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s.prune()
		timer.Reset(time.Hour)
	}
}

// prune deletes raw records past retention, unless the store cannot write
// (it said why when it stopped).
func (s *Server) prune() {
	st := s.store.Load()
	if st == nil || st.Err() != nil {
		return
	}
	n, err := st.PruneRecords(s.now().Add(-s.cfg.Load().retention))
	if err != nil {
		s.log.Error("prune records", "err", err)
		return
	}
	if n > 0 {
		s.log.Info("pruned records past retention", "records", n)
	}
}
