package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/rollup"
)

// Values of --store.
const (
	StoreEmbedded = "embedded"
	StorePostgres = "postgres"
)

// storeFlags checks the store flags together and returns the connection
// string read from --postgres-dsn-file (empty for the embedded store).
// Errors name the flag and the file, never the file's contents.
func (o Options) storeFlags() (string, error) {
	switch o.Store {
	case "", StoreEmbedded:
		if o.DataDir == "" {
			return "", errors.New("--data-dir: required with --store=embedded (the directory of the embedded store)")
		}
		if o.PostgresDSNFile != "" {
			return "", errors.New("--postgres-dsn-file: only with --store=postgres")
		}
		return "", nil
	case StorePostgres:
	default:
		return "", fmt.Errorf("--store: %q is not embedded or postgres", o.Store)
	}
	if o.DataDir != "" {
		return "", errors.New("--data-dir: not used with --store=postgres (the records are in the database); remove it")
	}
	if err := collectorapi.CheckPostgresEngineLeaseTTL(o.PostgresEngineLeaseTTL); err != nil {
		return "", fmt.Errorf("--postgres-engine-lease-ttl: %w", err)
	}
	if o.PostgresDSNFile == "" {
		return "", errors.New("--postgres-dsn-file: required with --store=postgres (a file holding the connection string, such as a mounted Secret key)")
	}
	b, err := os.ReadFile(o.PostgresDSNFile)
	if err != nil {
		return "", fmt.Errorf("--postgres-dsn-file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return "", fmt.Errorf("--postgres-dsn-file: %s is empty; it must hold the connection string", o.PostgresDSNFile)
	}
	return dsn, nil
}

// Backoff of the connection attempts at start.
const (
	minConnectWait = time.Second
	maxConnectWait = 30 * time.Second
)

// openPostgres opens the database store, trying again with a backoff while
// the database is unavailable (not started yet, restarting, failing over):
// meanwhile the probes answer, /readyz with 503 and the reason. Other
// errors (a malformed connection string, a refused password, a schema from
// a newer build) stop the collector. Nothing logged carries the connection
// string: pgstore's errors name the host, the user and the database, never
// the password.
func (s *Server) openPostgres(ctx context.Context, o Options, dsn string, cfg *settings, log *slog.Logger) (*pgstore.Store, error) {
	opts := pgstore.Options{
		DSN:              dsn,
		NoStatementCache: !o.PostgresStatementCache,
		EngineLeaseTTL:   o.PostgresEngineLeaseTTL,
		Retention:        rollup.Retention{Minute: rollup.DefaultRetention.Minute, Hour: rollup.DefaultRetention.Hour, Day: cfg.retention},
		Logger:           log.With("component", "postgres"),
		Now:              s.now,
	}
	wait := minConnectWait
	for {
		octx, cancel := context.WithTimeout(ctx, time.Minute)
		st, err := pgstore.Open(octx, opts)
		cancel()
		if err == nil {
			s.opening.Store(nil)
			return st, nil
		}
		if !errors.Is(err, pgstore.ErrUnavailable) || ctx.Err() != nil {
			return nil, fmt.Errorf("open the PostgreSQL store: %w", err)
		}
		why := err.Error()
		s.opening.Store(&why)
		log.Warn("the database is unavailable; trying again", "err", err, "retry_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("open the PostgreSQL store: %w", err)
		case <-t.C:
		}
		wait = min(2*wait, maxConnectWait)
	}
}
