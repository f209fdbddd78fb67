package localcollector

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// dsnFileName is the file in a namespace's directory holding its
// collector's connection string (mode 0600: it may carry a password).
const dsnFileName = "postgres.dsn"

// UsePostgres makes the collectors keep their records in PostgreSQL: the
// connection string in dsnFile reaches a server on which each namespace's
// collector gets a database of its own, created when missing. Call it
// before the first Ensure.
func (r *Runtime) UsePostgres(dsnFile string) error {
	b, err := os.ReadFile(dsnFile)
	if err != nil {
		return fmt.Errorf("postgres connection string: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return fmt.Errorf("postgres connection string: %s is empty", dsnFile)
	}
	if _, err := pgx.ParseConfig(dsn); err != nil {
		// pgx's message may quote the string, password and all.
		return fmt.Errorf("postgres connection string in %s: not a valid URL or key=value list", dsnFile)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pgDSN = dsn
	return nil
}

// DatabaseName is the database a namespace's collector keeps its records in.
func DatabaseName(namespace string) string {
	return "cxop_" + strings.ReplaceAll(namespace, "-", "_")
}

// withDatabase returns dsn naming database db instead of its own.
func withDatabase(dsn, db string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("the postgres connection string is not a valid URL")
		}
		u.Path = "/" + db
		return u.String(), nil
	}
	// In a key=value list a later key wins.
	return dsn + " dbname=" + db, nil
}

// ensureDatabase creates the namespace's database when missing and writes
// the connection string its collector reads.
func (r *Runtime) ensureDatabase(ctx context.Context, namespace, nsDir string) error {
	db := DatabaseName(namespace)
	dsn, err := withDatabase(r.pgDSN, db)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.pgDSN)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL to create database %s: %w", db, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", db, err)
	}
	if !exists {
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "42P04") { // created meanwhile
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	return WriteFileAtomic(filepath.Join(nsDir, dsnFileName), []byte(dsn+"\n"))
}
