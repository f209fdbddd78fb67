package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// Options are the collector's flags.
type Options struct {
	Listen     string
	DataDir    string
	ConfigPath string
	Rebuild    bool
	LogLevel   string
	// ConfigPoll re-reads the config this often even without a file
	// event, because a ConfigMap volume update may not be seen by inotify
	// on every filesystem. Default 10s.
	ConfigPoll time.Duration
}

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
		RunE: func(cmd *cobra.Command, _ []string) error { return Run(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", ":8080", "address to serve the API, metrics and probes on")
	f.StringVar(&o.DataDir, "data-dir", "", "directory of the embedded store (required)")
	f.StringVar(&o.ConfigPath, "config", "", "collector config file; reloaded when it changes (required)")
	f.BoolVar(&o.Rebuild, "rebuild", false, "recount every stored record instead of loading the checkpointed rollups")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
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
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg, data, err := readConfigFile(o.ConfigPath)
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

	st, err := store.Open(store.Options{
		Dir:        o.DataDir,
		Retention:  rollup.Retention{Minute: rollup.DefaultRetention.Minute, Hour: rollup.DefaultRetention.Hour, Day: cfg.retention},
		Rebuild:    o.Rebuild,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		cancel()
		<-served
		return err
	}
	srv.store.Store(st)
	log.Info("collector ready", "listen", o.Listen, "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys))

	go srv.watchConfig(ctx, o.ConfigPath, data, o.ConfigPoll)
	go srv.pruneLoop(ctx, st)

	err = <-served
	cancel()
	if cerr := st.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
	}
	log.Info("collector stopped")
	return err
}

// watchConfig reloads the config when its file (or the ConfigMap
// symlinks around it) changes. A bad config is logged and counted; the
// last good one stays in force.
func (s *Server) watchConfig(ctx context.Context, path string, last []byte, poll time.Duration) {
	if poll <= 0 {
		poll = 10 * time.Second
	}
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("watch config; polling only", "err", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			s.log.Warn("watch config directory; polling only", "err", err)
		}
		events = w.Events
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			s.log.Error("reload config", "path", path, "err", err)
			s.metrics.reloads.WithLabelValues("failure").Inc()
			s.metrics.configSuccess.Set(0)
			continue
		}
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		cfg, err := parseConfig(data)
		if err != nil {
			s.log.Error("reload config; keeping the previous one", "path", path, "err", err)
			s.metrics.reloads.WithLabelValues("failure").Inc()
			s.metrics.configSuccess.Set(0)
			continue
		}
		s.cfg.Store(cfg)
		s.metrics.reloads.WithLabelValues("success").Inc()
		s.metrics.configSuccess.Set(1)
		s.log.Info("config reloaded", "touchpoints", len(cfg.touchpoints), "surveys", len(cfg.surveys))
	}
}

// pruneLoop deletes raw records past retention once an hour.
func (s *Server) pruneLoop(ctx context.Context, st *store.Store) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n, err := st.PruneRecords(s.now().Add(-s.cfg.Load().retention))
			if err != nil {
				s.log.Error("prune records", "err", err)
				continue
			}
			if n > 0 {
				s.log.Info("pruned records past retention", "records", n)
			}
		}
	}
}
