// Package localcollector runs one `cxop collector` process per namespace on
// a loopback port, with its config and data under one directory. It is the
// collector runtime of `cxop dev`, where there is no kubelet to run pods:
// the reconciler renders the same config it would put in a ConfigMap and
// hands it here instead of to a StatefulSet.
//
// Each namespace keeps its port in DIR/NAMESPACE/port, so ingest URLs shown
// in status stay valid across restarts of the whole environment.
//
// With UsePostgres, each namespace's collector keeps its records in a
// PostgreSQL database of its own (cxop_NAMESPACE, created on the server the
// given connection string reaches) instead of an embedded store under DIR.
package localcollector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// Runtime supervises the local collectors. Its methods are safe for
// concurrent use.
type Runtime struct {
	dir string
	bin string
	// pgDSN is the connection string collectors' databases are created
	// through; empty: the embedded store.
	pgDSN string
	mu    sync.Mutex
	runs  map[string]*run // by namespace
}

type run struct {
	cmd    *exec.Cmd
	port   int
	exited chan struct{} // closed when the process has exited
}

// New returns a Runtime that keeps everything under dir and runs bin (the
// cxop binary) as `bin collector`.
func New(dir, bin string) (*Runtime, error) {
	if dir == "" {
		return nil, errors.New("local collectors: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local collectors: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("local collectors: %w", err)
	}
	return &Runtime{dir: abs, bin: bin, runs: map[string]*run{}}, nil
}

// Ensure writes config as the namespace's collector config and makes sure
// its process runs, starting it if it is not running. A running collector
// picks up the new config by itself, without a restart. It returns the
// collector's base URL.
func (r *Runtime) Ensure(ctx context.Context, namespace string, files collectorapi.Files) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nsDir := filepath.Join(r.dir, namespace)
	if err := os.MkdirAll(filepath.Join(nsDir, "data"), 0o700); err != nil {
		return "", err
	}
	if r.pgDSN != "" {
		if err := r.ensureDatabase(ctx, namespace, nsDir); err != nil {
			return "", fmt.Errorf("collector for namespace %s: %w", namespace, err)
		}
	}
	if err := WriteFileAtomic(filepath.Join(nsDir, "config.yaml"), files.Config); err != nil {
		return "", err
	}
	if err := WriteFileAtomic(filepath.Join(nsDir, "secrets.yaml"), files.Secrets); err != nil {
		return "", err
	}
	port, err := r.port(nsDir)
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if cur := r.runs[namespace]; cur != nil {
		select {
		case <-cur.exited:
			// It died (or was killed); start it again below.
		default:
			return url, nil
		}
	}
	cur, err := r.start(nsDir, port)
	if err != nil {
		return "", err
	}
	r.runs[namespace] = cur
	if err := WaitAnswering(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), cur.exited); err != nil {
		return "", fmt.Errorf("collector for namespace %s: %w (see %s)", namespace, err, filepath.Join(nsDir, "collector.log"))
	}
	return url, nil
}

// ServesSurveyPages is true: the collector's own URL is the page's.
func (r *Runtime) ServesSurveyPages() bool { return true }

// AllowsInsecureWebhooks is true: local receivers listen on plain http,
// and every local collector runs with --allow-insecure-webhooks.
func (r *Runtime) AllowsInsecureWebhooks() bool { return true }

// PageURL is the collector's own URL: on a laptop customers (and the
// browser of whoever tries the tour) reach the survey page there. The port
// is chosen here the first time, so the config can carry it before the
// collector starts.
func (r *Runtime) PageURL(namespace string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nsDir := filepath.Join(r.dir, namespace)
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return "", err
	}
	port, err := r.port(nsDir)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port), nil
}

// URL returns the base URL of the namespace's collector, or "" when none
// was ever started.
func (r *Runtime) URL(namespace string) string {
	data, err := os.ReadFile(filepath.Join(r.dir, namespace, "port"))
	if err != nil {
		return ""
	}
	return "http://127.0.0.1:" + strings.TrimSpace(string(data))
}

// Remove stops the namespace's collector. Its data stays on disk, as a PVC
// does in a cluster, so a collector started again later keeps its history.
func (r *Runtime) Remove(_ context.Context, namespace string) error {
	r.mu.Lock()
	cur := r.runs[namespace]
	delete(r.runs, namespace)
	r.mu.Unlock()
	if cur != nil {
		stop(cur)
	}
	return nil
}

// Stop stops every collector, for shutdown.
func (r *Runtime) Stop() {
	r.mu.Lock()
	runs := r.runs
	r.runs = map[string]*run{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, cur := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); stop(cur) }()
	}
	wg.Wait()
}

// port returns the namespace's port, choosing a free one the first time.
func (r *Runtime) port(nsDir string) (int, error) {
	path := filepath.Join(nsDir, "port")
	if data, err := os.ReadFile(path); err == nil {
		p, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || p <= 0 || p > 65535 {
			return 0, fmt.Errorf("%s: %q is not a port number", path, data)
		}
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("choose a port: %w", err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	if err := WriteFileAtomic(path, []byte(strconv.Itoa(p)+"\n")); err != nil {
		return 0, err
	}
	return p, nil
}

func (r *Runtime) start(nsDir string, port int) (*run, error) {
	logFile, err := os.OpenFile(filepath.Join(nsDir, "collector.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	store := []string{"--data-dir", filepath.Join(nsDir, "data")}
	if r.pgDSN != "" {
		store = []string{"--store", "postgres", "--postgres-dsn-file", filepath.Join(nsDir, dsnFileName)}
	}
	cmd := exec.Command(r.bin, append([]string{"collector",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port)}, append(store,
		"--config", filepath.Join(nsDir, "config.yaml"),
		"--secrets", filepath.Join(nsDir, "secrets.yaml"),
		// Receivers on a laptop listen on loopback, over plain http.
		"--webhook-allow-loopback",
		"--allow-insecure-webhooks",
		// Each namespace's collector needs a /metrics port of its own; the
		// collector logs the one it got.
		"--metrics-listen", "127.0.0.1:0",
		// Config edits arrive by rename, which inotify sees; the poll is
		// the safety net and may be short on a laptop.
		"--config-poll-interval", "2s")...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The collector must not outlive the manager that supervises it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start collector: %w", err)
	}
	cur := &run{cmd: cmd, port: port, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(cur.exited)
	}()
	return cur, nil
}

// stop asks a collector to stop and kills it if it has not within 10 s; the
// store is crash-safe either way, a clean stop only saves a replay.
func stop(cur *run) {
	_ = cur.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cur.exited:
	case <-time.After(10 * time.Second):
		_ = cur.cmd.Process.Kill()
		<-cur.exited
	}
}

// WaitAnswering waits up to 15 seconds until a collector answers url
// with 200, or until exited is closed. A collector answers /healthz as
// soon as it listens, and /readyz once its store has replayed.
func WaitAnswering(ctx context.Context, url string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the collector exited at start")
		case <-ctx.Done():
			return fmt.Errorf("the collector did not answer %s within 15s", url)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WriteFileAtomic replaces path with data by a rename, so a reader (the
// collector's config watcher) never sees half a file.
func WriteFileAtomic(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
