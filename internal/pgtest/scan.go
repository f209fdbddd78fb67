package pgtest

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/canaryscan"
)

// DataDir is the server's data directory (PGDATA): what a scan of the
// bytes on disk (canaryscan.Files) reads.
func (s *Server) DataDir() string { return s.data() }

// ScanTables reads every column of every row of every table of the
// database's current schema (partitions included; bytea columns as bytes,
// every other column as its text form) and returns, for each of strs found
// in any of its forms (canaryscan.Forms), where: "table.column". It also
// returns the tables it read, so that a caller can check the scan covered
// them.
func ScanTables(ctx context.Context, dsn string, strs ...string) (found map[string]string, tables []string, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, `SELECT c.relname, a.attname, a.atttypid = 'bytea'::regtype
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum`)
	if err != nil {
		return nil, nil, err
	}
	type column struct {
		table, name string
		bytea       bool
	}
	var cols []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.table, &c.name, &c.bytea); err != nil {
			return nil, nil, err
		}
		cols = append(cols, c)
		if len(tables) == 0 || tables[len(tables)-1] != c.table {
			tables = append(tables, c.table)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	found = map[string]string{}
	for _, s := range strs {
	next:
		for _, c := range cols {
			expr := fmt.Sprintf("%s::text", pgx.Identifier{c.name}.Sanitize())
			if c.bytea {
				expr = pgx.Identifier{c.name}.Sanitize()
			}
			q := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM ONLY %s WHERE position($1 IN %s) > 0)", pgx.Identifier{c.table}.Sanitize(), expr)
			for _, f := range canaryscan.Forms(s) {
				var arg any = string(f)
				if c.bytea {
					arg = f
				}
				var hit bool
				if err := conn.QueryRow(ctx, q, arg).Scan(&hit); err != nil {
					return nil, nil, fmt.Errorf("scan %s.%s: %w", c.table, c.name, err)
				}
				if hit {
					found[s] = c.table + "." + c.name
					break next
				}
			}
		}
	}
	return found, tables, nil
}

// Forget makes the server forget what was deleted from the database dsn,
// as far as it can: fresh statistics (ANALYZE keeps sample values of
// columns in pg_statistic), every table of the database rewritten without
// its dead rows (VACUUM FULL, system catalogs included: a plain VACUUM
// leaves the bytes of dead rows in the pages' free space), the buffers
// written to the table files (CHECKPOINT), then, twice, a switch to a new
// write-ahead log segment and a checkpoint, which removes every segment
// before it. That needs wal_recycle off, as the test servers run: a
// recycled segment is renamed for reuse and keeps its old bytes until
// overwritten. (Turned off at run time, by ALTER SYSTEM and a reload, it
// may reach the checkpointer only after a checkpoint has recycled a
// segment, and that segment then becomes the current one.)
func Forget(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	var recycle string
	if err := conn.QueryRow(ctx, "SHOW wal_recycle").Scan(&recycle); err != nil {
		return err
	}
	if recycle != "off" {
		return fmt.Errorf("wal_recycle is %s: recycled WAL segments keep deleted rows' bytes; start the server with wal_recycle=off", recycle)
	}
	for _, s := range []string{"ANALYZE", "VACUUM FULL", "CHECKPOINT",
		"SELECT pg_switch_wal()", "CHECKPOINT", "SELECT pg_switch_wal()", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}
