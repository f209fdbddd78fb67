package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Migrations are embedded SQL files named NNNN_what.sql, applied in order,
// each in its own transaction with its row in cxop_schema_migrations, by
// one replica holding the migration lease. They only go forward: a schema
// is never rolled back, and a database migrated by a newer build than this
// one is refused rather than written in a layout this build does not know.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and _", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: versions must run 1, 2, 3… without gaps", m.name)
		}
	}
	return out, nil
}

// bootstrapSQL makes the two tables migrations need to run at all. Two
// replicas may run it at once: CREATE TABLE IF NOT EXISTS can still fail
// on the catalog's unique index then, and is run again.
const bootstrapSQL = `
CREATE TABLE IF NOT EXISTS cxop_schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cxop_leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO cxop_leases (name, holder, expires_at)
VALUES ('migrate', '', TIMESTAMPTZ '1970-01-01 00:00:00+00')
ON CONFLICT (name) DO NOTHING;`

// migrate brings the schema to this build's version.
func (s *Store) migrate(ctx context.Context) error {
	return s.migrateTo(ctx, 0)
}

// migrateTo migrates up to version last (0: this build's newest).
func (s *Store) migrateTo(ctx context.Context, last int) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if last > 0 && last < len(ms) {
		ms = ms[:last]
	}
	for attempt := 0; ; attempt++ {
		_, err = s.pool.Exec(ctx, bootstrapSQL)
		if err == nil || !alreadyExists(err) || attempt == 3 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create the migration tables: %w", err)
	}
	current, err := s.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if current > len(ms) {
		return fmt.Errorf("the database schema is at version %d, newer than this build's %d: run a newer cxop (schemas only go forward)", current, len(ms))
	}
	if current == len(ms) {
		return nil
	}
	if err := s.waitLease(ctx, "migrate"); err != nil {
		return fmt.Errorf("take the migration lease: %w", err)
	}
	defer func() { _ = s.releaseLease(context.WithoutCancel(ctx), "migrate") }()
	for _, m := range ms {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if held, err := s.claimLease(ctx, tx, "migrate"); err != nil {
				return err
			} else if !held {
				return fmt.Errorf("lost the migration lease before %s", m.name)
			}
			// Another replica may have applied it before this one took the
			// lease.
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM cxop_schema_migrations WHERE version = $1)`, m.version).Scan(&done); err != nil || done {
				return err
			}
			if step := migrationSteps[m.version]; step != nil {
				if err := step(ctx, tx); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO cxop_schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		s.opts.Logger.Info("schema migrated", "version", m.version, "name", m.name)
	}
	return nil
}

// schemaVersion is the highest migration applied.
func (s *Store) schemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM cxop_schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}

// migrationSteps are what a migration needs done in Go, in its
// transaction, before its SQL runs.
var migrationSteps = map[int]func(context.Context, pgx.Tx) error{
	6: drainTail,
}

// drainTail folds what cxop_tail still holds into the rollups before
// migration 0006 drops it. Records, tail and the fold's row are locked
// first, records first as appends take them: replicas of an older build
// finish the appends and folds they are in, then wait; once this commits,
// their appends fail (the tail is gone) and their clients retry on
// replicas of this build. So every record committed before the migration
// is folded when 0006 moves the watermark to the last of them.
func drainTail(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `LOCK TABLE cxop_records, cxop_tail, cxop_fold IN ACCESS EXCLUSIVE MODE`); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT seq, kind, subject, event_time, customer_hash, wait_seconds, flags, score FROM cxop_tail ORDER BY seq`)
	if err != nil {
		return err
	}
	recs, err := collectSeqRecords(rows)
	if err != nil {
		return err
	}
	for chunk := range slices.Chunk(recs, 10000) {
		if err := foldRecords(ctx, tx, chunk); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `UPDATE cxop_fold SET folded = folded + $1, folded_at = now() WHERE name = 'rollups'`, len(recs))
	return err
}
