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
	ms, err := migrations()
	if err != nil {
		return err
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
			if held, err := s.renewLease(ctx, tx, "migrate"); err != nil {
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
