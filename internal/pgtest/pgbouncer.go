package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PgBouncerInstallHint says how to get PgBouncer.
const PgBouncerInstallHint = "install PgBouncer (Debian/Ubuntu: apt-get install -y pgbouncer) or set PGBOUNCER to its binary"

// PgBouncer is a PgBouncer in transaction pooling mode in front of a
// Server: a client's transactions go to whichever server connection is
// free, so nothing that lives in a session (prepared statements, advisory
// locks, SET) survives from one transaction to the next.
type PgBouncer struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan error
}

// StartPgBouncer starts a PgBouncer with at most poolSize server
// connections per database in front of s, and stops it when the test ends.
func StartPgBouncer(tb testing.TB, s *Server, poolSize int) *PgBouncer {
	tb.Helper()
	b, err := startPgBouncer(s, poolSize)
	if err != nil {
		tb.Fatalf("start a test PgBouncer: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("stop the test PgBouncer: %v", err)
		}
	})
	return b
}

// NewPgBouncer starts a PgBouncer like StartPgBouncer, for a program that
// is not a test; the caller must Close it.
func NewPgBouncer(s *Server, poolSize int) (*PgBouncer, error) {
	return startPgBouncer(s, poolSize)
}

// FindPgBouncer returns PgBouncer's binary: $PGBOUNCER, the PATH, or
// /usr/sbin/pgbouncer (Debian's place, off a user's PATH).
func FindPgBouncer() (string, error) {
	if p := os.Getenv("PGBOUNCER"); p != "" {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
		return "", fmt.Errorf("PGBOUNCER=%s is not a file; %s", p, PgBouncerInstallHint)
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if fi, err := os.Stat("/usr/sbin/pgbouncer"); err == nil && !fi.IsDir() {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", fmt.Errorf("no pgbouncer in $PGBOUNCER, the PATH or /usr/sbin: %s", PgBouncerInstallHint)
}

func startPgBouncer(s *Server, poolSize int) (*PgBouncer, error) {
	bin, err := FindPgBouncer()
	if err != nil {
		return nil, err
	}
	b := &PgBouncer{done: make(chan error, 1)}
	if b.dir, err = os.MkdirTemp(s.dir, "pgbouncer-"); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(b.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, err
		}
	}
	if b.port, err = freePort(); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = %d
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
`, s.port, b.port, poolSize, filepath.Join(b.dir, "pgbouncer.log"), filepath.Join(b.dir, "pgbouncer.pid"))
	path := filepath.Join(b.dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// In the foreground, as this process's child: stopped by its own pid.
	b.cmd = exec.Command(bin, path)
	b.cmd.Dir = b.dir
	if s.cred != nil {
		b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)))
		if err == nil {
			_ = c.Close()
			return b, nil
		}
		select {
		case werr := <-b.done:
			log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
			return nil, fmt.Errorf("pgbouncer exited: %v\n%s", werr, tail(log))
		default:
		}
		if time.Now().After(deadline) {
			_ = b.Close()
			return nil, fmt.Errorf("pgbouncer did not listen on port %d in 30s", b.port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DSN is the connection string of one of the server's databases through
// PgBouncer.
func (b *PgBouncer) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", b.port, db)
}

// Close stops PgBouncer (SIGINT: at once, dropping its connections).
func (b *PgBouncer) Close() error {
	if b.cmd.Process == nil {
		return nil
	}
	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-b.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		return errors.New("pgbouncer did not stop in 30s after SIGINT; killed")
	}
}
