package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestServerLifecycle starts a server, writes through it, restarts it and
// reads the write back, then checks that closing removes its directory.
func TestServerLifecycle(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	dir := s.dir
	dsn := s.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Fatalf("fsync = %q (%v), want on", fsync, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart read %d (%v), want 42", v, err)
	}
	_ = conn.Close(ctx)
	if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(s.Port()))); err != nil {
		t.Errorf("no unix socket in the server's directory: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory %s still there after Close: %v", dir, err)
	}
}

// TestMissingBinariesSayHowToInstall points PG_BIN at an empty directory.
func TestMissingBinariesSayHowToInstall(t *testing.T) {
	t.Setenv("PG_BIN", t.TempDir())
	_, err := FindBin()
	if err == nil {
		t.Fatal("FindBin found binaries in an empty directory")
	}
	if got := err.Error(); !strings.Contains(got, "apt-get install -y postgresql") {
		t.Errorf("error %q does not say how to install PostgreSQL", got)
	}
}
