package pgtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
)

// DataDir is the server's data directory (PGDATA): what a scan of the
// bytes on disk reads.
func (s *Server) DataDir() string { return s.data() }

// Forms are the forms in which s can be stored: as it is, and in base64 (a
// message's body, a link token), standard and URL-safe, at each of the
// three alignments (dropping the quanta whose characters depend on the
// bytes around s).
func Forms(s string) [][]byte {
	out := [][]byte{[]byte(s)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for pad := range 3 {
			e := enc.EncodeToString(append(make([]byte, pad), s...))
			inner := e[4:]
			if pad == 0 {
				inner = e
			}
			out = append(out, []byte(inner[:len(inner)-4]))
		}
	}
	return out
}

// ScanTables reads every column of every row of every table of the
// database's current schema (partitions included; bytea columns as bytes,
// every other column as its text form) and returns, for each of strs found
// in any of its Forms, where: "table.column". It also returns the tables
// it read, so that a caller can check the scan covered them.
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
			for _, f := range Forms(s) {
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

// FilesContaining returns, for each of strs found in any of its Forms in
// the bytes of a file under dir (skipping the directories named in skip,
// relative to dir), the files it was found in, relative to dir.
func FilesContaining(dir string, skip []string, strs ...string) (map[string][]string, error) {
	found := map[string][]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walked
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			for _, s := range skip {
				if rel == s {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // the server's socket and lock files
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, s := range strs {
			for _, f := range Forms(s) {
				if bytes.Contains(data, f) {
					found[s] = append(found[s], rel)
					break
				}
			}
		}
		return nil
	})
	return found, err
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
