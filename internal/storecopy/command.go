package storecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// keepAll is the rollup retention a copy opens stores with: it drops no
// bucket (the collector prunes by its own retention when it next runs).
var keepAll = rollup.Retention{Minute: 100 * 365 * 24 * time.Hour, Hour: 100 * 365 * 24 * time.Hour, Day: 100 * 365 * 24 * time.Hour}

// endpoint is one side of a copy, as --from and --to name it.
type endpoint struct {
	kind string // "embedded" or "postgres"
	path string // the data directory, or the file holding the DSN
}

func parseEndpoint(flag, v string) (endpoint, error) {
	kind, path, ok := strings.Cut(v, ":")
	if !ok || path == "" || (kind != "embedded" && kind != "postgres") {
		return endpoint{}, fmt.Errorf("--%s: %q is not embedded:DATA-DIR or postgres:DSN-FILE", flag, v)
	}
	return endpoint{kind, path}, nil
}

// NewCommand is `cxop store`, with `copy`.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Work on a collector's store offline (no collector running on it)",
	}
	var from, to string
	var batch int
	var statementCache bool
	var busyWait time.Duration
	cp := &cobra.Command{
		Use:   "copy --from embedded:DATA-DIR --to postgres:DSN-FILE",
		Short: "Copy a namespace's data between the embedded store and PostgreSQL",
		Long: `copy moves a namespace's records (ids, fingerprints, contacts), rollups, survey
engine state and erasure audit log from one store to the other: embedded to
postgres, or postgres to embedded. Records go through the target's own ingest:
a record already there is a duplicate, an id stored there with another payload
is reported and left as it is. Running it again after an interruption copies
only what is missing. No collector may run on either store meanwhile: the
embedded store's directory is locked by its collector, and a database a
collector runs on (a lease held) is refused. See docs/postgres.md, "Moving a
namespace".`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := parseEndpoint("from", from)
			if err != nil {
				return err
			}
			dst, err := parseEndpoint("to", to)
			if err != nil {
				return err
			}
			if src.kind == dst.kind {
				return fmt.Errorf("--from and --to are both %s; copy between embedded and postgres", src.kind)
			}
			opts := Options{Batch: batch, Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))}
			return runCopy(cmd.Context(), src, dst, statementCache, busyWait, opts, cmd.OutOrStdout())
		},
	}
	f := cp.Flags()
	f.StringVar(&from, "from", "", "the store to copy from: embedded:DATA-DIR or postgres:DSN-FILE (required)")
	f.StringVar(&to, "to", "", "the store to copy into: embedded:DATA-DIR (a new directory) or postgres:DSN-FILE (required)")
	f.IntVar(&batch, "batch", DefaultBatch, "records per batch (and held in memory at once)")
	f.BoolVar(&statementCache, "postgres-statement-cache", true, "use prepared statements (false behind PgBouncer in transaction mode before 1.21)")
	f.DurationVar(&busyWait, "busy-wait", 30*time.Second, "how long to wait for the leases of a collector just stopped to expire before refusing")
	_ = cp.MarkFlagRequired("from")
	_ = cp.MarkFlagRequired("to")
	cmd.AddCommand(cp)
	return cmd
}

func readDSN(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return "", fmt.Errorf("%s is empty; it must hold the connection string", path)
	}
	return dsn, nil
}

func runCopy(ctx context.Context, src, dst endpoint, statementCache bool, busyWait time.Duration, opts Options, out io.Writer) error {
	pgEnd, embEnd := src, dst
	if src.kind == "embedded" {
		pgEnd, embEnd = dst, src
	}
	dsn, err := readDSN(pgEnd.path)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	pg, err := OpenPostgres(ctx, pgstore.Options{DSN: dsn, NoStatementCache: !statementCache, Retention: keepAll, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("open the PostgreSQL store: %w", err)
	}
	defer pg.Close()
	embOpts := store.Options{Dir: embEnd.path, Retention: keepAll}
	if src.kind == "embedded" {
		if _, err := os.Stat(embEnd.path); err != nil {
			return fmt.Errorf("--from: %w", err)
		}
	}
	var rep Report
	deadline := time.Now().Add(busyWait)
	for {
		if src.kind == "embedded" {
			rep, err = func() (Report, error) {
				st, err := store.Open(embOpts)
				if err != nil {
					return Report{}, fmt.Errorf("open the embedded store (is its collector still running?): %w", err)
				}
				defer st.Close()
				return EmbeddedToPostgres(ctx, st, pg, opts)
			}()
		} else {
			rep, err = PostgresToEmbedded(ctx, pg, embOpts, opts)
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			break
		}
		opts.Logger.Info("waiting for a stopped collector's leases to expire", "reason", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if rep.Records > 0 || err == nil {
		fmt.Fprintf(out, "records=%d new=%d duplicates=%d conflicts=%d engine_keys=%d erasures=%d new_erasures=%d elapsed=%s records_per_sec=%.0f\n",
			rep.Records, rep.New, rep.Duplicates, len(rep.Conflicts), rep.EngineKeys, rep.Erasures, rep.NewErasures,
			rep.Elapsed.Round(time.Millisecond), float64(rep.Records)/max(rep.Elapsed.Seconds(), 1e-9))
		for _, c := range rep.Conflicts {
			fmt.Fprintf(out, "conflict: %s is stored in the target with another payload; the target's record stands\n", c)
		}
		if rep.AuditKeyDiffers {
			fmt.Fprintln(out, "warning: the target had its own audit log hash key and kept it: erasures logged there hash customers differently")
		}
	}
	if err != nil && rep.Records > 0 {
		return fmt.Errorf("copy stopped (run it again to resume): %w", err)
	}
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if len(rep.Conflicts) > 0 {
		return fmt.Errorf("%d records conflict with the target's", len(rep.Conflicts))
	}
	return nil
}
