// Package pgtest starts a real, throwaway PostgreSQL server for tests: initdb
// in a temporary directory, a server on a free loopback port with its unix
// socket in that directory and fsync on, and removal of everything when the
// test ends. Nothing is skipped when the server binaries are missing: the
// test fails and says how to install them.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint says how to get the server binaries.
const InstallHint = "install the PostgreSQL server (Debian/Ubuntu: apt-get install -y postgresql; " +
	"Fedora: dnf install postgresql-server; macOS: brew install postgresql) or set PG_BIN to the directory holding initdb and pg_ctl"

// Server is one running test server. Its superuser is "postgres", trusted
// on loopback and on its socket.
type Server struct {
	bin     string
	dir     string // owned by the server's user; removed by Close
	port    int
	cred    *syscall.Credential // nil when not running as root
	dbs     atomic.Int64
	stopped bool
	// settings are extra "name=value" server settings, after (and so
	// over) the defaults.
	settings []string
}

// Start starts a server for the test and stops and removes it when the test
// ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := New()
	if err != nil {
		tb.Fatalf("start a test PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("stop the test PostgreSQL: %v", err)
		}
	})
	return s
}

// Shared is one server for the tests of a package that need one, started
// by the first test that asks (Server) and stopped by the package's
// TestMain (Main), so that a run of tests that need none starts none.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Server starts the shared server on first use; a server that cannot
// start fails the test.
func (s *Shared) Server(tb testing.TB) *Server {
	tb.Helper()
	s.once.Do(func() { s.srv, s.err = New() })
	if s.err != nil {
		tb.Fatalf("start a test PostgreSQL: %v", s.err)
	}
	return s.srv
}

// Main runs the package's tests and stops the server if one started: the
// body of a TestMain, whose exit code it returns.
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if s.srv != nil {
		if err := s.srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the test PostgreSQL:", err)
			code = 1
		}
	}
	return code
}

// New starts a server; the caller must Close it. TestMain uses it to share
// one server between the tests of a package.
func New() (*Server, error) { return NewWith() }

// NewWith is New with extra server settings, each "name=value" as
// postgres -c takes it; they override the test defaults (a benchmark sizes
// shared_buffers as a deployment would).
func NewWith(settings ...string) (*Server, error) {
	bin, err := FindBin()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, settings: settings}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as the package's
		// system user, or nobody.
		if s.cred, err = unprivileged(); err != nil {
			return nil, err
		}
	}
	// Not t.TempDir: its parent is private to root, and the server's user
	// must reach its data directory. A short path keeps the socket's path
	// under the 107 bytes a unix socket address allows.
	parent := os.TempDir()
	if s.cred != nil && !traversable(parent) {
		parent = "/tmp"
	}
	if s.dir, err = os.MkdirTemp(parent, "pgtest-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return nil, s.cleanupAfter(err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, s.cleanupAfter(err)
		}
	}
	if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-instructions"); err != nil {
		return nil, s.cleanupAfter(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	// A port free now may be taken before the server binds it: try a few.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, s.cleanupAfter(err)
		}
		if err = s.Start(); err == nil {
			return s, nil
		}
		if attempt == 4 {
			return nil, s.cleanupAfter(err)
		}
	}
}

// FindBin returns the directory holding initdb and pg_ctl: $PG_BIN, then the
// PATH, then the newest /usr/lib/postgresql/<version>/bin (where Debian puts
// them, off the PATH).
func FindBin() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("PG_BIN"); d != "" {
		if has(d) {
			return d, nil
		}
		return "", fmt.Errorf("PG_BIN=%s holds no initdb, pg_ctl and postgres; %s", d, InstallHint)
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Debian links initdb into the PATH from its versioned directory.
		if r, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(r)) {
			return filepath.Dir(r), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, pg_ctl, postgres) in $PG_BIN, the PATH or /usr/lib/postgresql/*/bin: %s", InstallHint)
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as (it refuses to run as root)")
}

// traversable reports whether every directory from dir up to the root lets
// other users through, as the server's user must be to reach its data.
func traversable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// run runs one of the server's programs as the server's user.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

// Start starts the server again after Stop (New starts it the first time),
// on the same port and data directory.
func (s *Server) Start() error {
	opts := strings.Join([]string{
		"-p", strconv.Itoa(s.port),
		"-k", s.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
		"-c", "max_connections=200",
		// Tests start several servers on a small machine.
		"-c", "shared_buffers=32MB",
		// A checkpoint removes old WAL segments instead of renaming them
		// for reuse with their bytes: what lets Forget clear the WAL.
		"-c", "wal_recycle=off",
	}, " ")
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	out, err := s.run("pg_ctl", "-D", s.data(), "-l", filepath.Join(s.dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		return fmt.Errorf("pg_ctl start on port %d: %w\n%s\n%s", s.port, err, out, tail(log))
	}
	s.stopped = false
	return nil
}

// Stop stops the server the way an operator's fast shutdown does: open
// transactions are rolled back and clients are disconnected.
func (s *Server) Stop() error {
	out, err := s.run("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	s.stopped = true
	return nil
}

// Restart is Stop then Start.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start()
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	var err error
	if !s.stopped {
		err = s.Stop()
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

func (s *Server) cleanupAfter(err error) error {
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Port is the server's loopback port.
func (s *Server) Port() int { return s.port }

// DSN is the connection string of one of the server's databases.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", s.port, db)
}

// NewDatabase creates an empty database and returns its connection string.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	return s.DSN(s.CreateDatabase(tb))
}

// CreateDatabase creates an empty database and returns its name.
func (s *Server) CreateDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		tb.Fatalf("connect to the test PostgreSQL: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	return name
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
