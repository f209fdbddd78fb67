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

// TestPgBouncerTransactionMode connects two clients to a PgBouncer with
// one server connection: a query in pgx's exec mode works, and a session
// setting one client makes is what the other client's next transaction
// sees, since they share the server connection; which is why nothing that
// runs through PgBouncer may keep state in a session.
func TestPgBouncerTransactionMode(t *testing.T) {
	s := Start(t)
	db := s.CreateDatabase(t)
	b := StartPgBouncer(t, s, 1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var mode string
	if err := conn.QueryRow(ctx, "SELECT 'through pgbouncer'", pgx.QueryExecModeExec).Scan(&mode); err != nil || mode != "through pgbouncer" {
		t.Fatalf("query through PgBouncer: %q, %v", mode, err)
	}
	other, err := pgx.Connect(ctx, b.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close(ctx) }()
	// With one server connection, the other client's next transaction runs
	// on the connection this one set a session variable on.
	if _, err := conn.Exec(ctx, "SET application_name = 'leaked'"); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := other.QueryRow(ctx, "SHOW application_name", pgx.QueryExecModeExec).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "leaked" {
		t.Fatalf("application_name on the shared server connection is %q: PgBouncer is not pooling transactions", name)
	}
}

// TestMissingPgBouncerSaysHowToInstall points PGBOUNCER at nothing.
func TestMissingPgBouncerSaysHowToInstall(t *testing.T) {
	t.Setenv("PGBOUNCER", filepath.Join(t.TempDir(), "none"))
	if _, err := FindPgBouncer(); err == nil || !strings.Contains(err.Error(), "apt-get install -y pgbouncer") {
		t.Fatalf("FindPgBouncer: %v, want how to install it", err)
	}
}

// TestSettingsOverrideDefaults starts a server with shared_buffers (a test
// default) and work_mem set, and reads both back, also after a restart.
func TestSettingsOverrideDefaults(t *testing.T) {
	s, err := NewWith("shared_buffers=48MB", "work_mem=7MB")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	check := func(when string) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		for name, want := range map[string]string{"shared_buffers": "48MB", "work_mem": "7MB", "synchronous_commit": "on"} {
			var got string
			if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil || got != want {
				t.Errorf("%s: %s = %q (%v), want %q", when, name, got, err, want)
			}
		}
	}
	check("at start")
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	check("after restart")
}
