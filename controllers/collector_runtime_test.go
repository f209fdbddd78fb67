package controllers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cxop-dev/cxop/internal/collector"
	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/localcollector"
)

// inProcessCollectors is the collector runtime of the envtest suite: the
// real collector server and store, run in this process on loopback ports
// with their data on a temporary directory, where `cxop dev` would run
// them as processes and a cluster as pods.
type inProcessCollectors struct {
	dir   string
	mu    sync.Mutex
	runs  map[string]*inProcessRun
	addrs map[string]string // chosen by PageURL or Ensure, kept across restarts
	// stores is the store each namespace was last ensured with. The
	// collectors here keep every namespace embedded: the store choice is
	// the workload's (collector_kube.go), which specs check apart.
	stores map[string]CollectorStore
}

// EnsureStore records store and runs the collector as Ensure does.
func (c *inProcessCollectors) EnsureStore(ctx context.Context, namespace string, files collectorapi.Files, store CollectorStore) (string, error) {
	c.mu.Lock()
	c.stores[namespace] = store
	c.mu.Unlock()
	return c.Ensure(ctx, namespace, files)
}

// storeOf is the store namespace was last ensured with.
func (c *inProcessCollectors) storeOf(namespace string) CollectorStore {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stores[namespace]
}

type inProcessRun struct {
	url    string
	cancel context.CancelFunc
	done   chan struct{}
}

func newInProcessCollectors(dir string) *inProcessCollectors {
	return &inProcessCollectors{dir: dir, runs: map[string]*inProcessRun{}, addrs: map[string]string{}, stores: map[string]CollectorStore{}}
}

// addr returns the namespace's loopback address, choosing it once.
func (c *inProcessCollectors) addr(namespace string) (string, error) {
	if a, ok := c.addrs[namespace]; ok {
		return a, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	a := l.Addr().String()
	_ = l.Close()
	c.addrs[namespace] = a
	return a, nil
}

func (c *inProcessCollectors) ServesSurveyPages() bool { return true }

func (c *inProcessCollectors) AllowsInsecureWebhooks() bool { return true }

func (c *inProcessCollectors) PageURL(namespace string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, err := c.addr(namespace)
	return "http://" + a, err
}

func (c *inProcessCollectors) Ensure(ctx context.Context, namespace string, files collectorapi.Files) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	nsDir := filepath.Join(c.dir, namespace)
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return "", err
	}
	cfgPath := filepath.Join(nsDir, "config.yaml")
	if err := localcollector.WriteFileAtomic(cfgPath, files.Config); err != nil {
		return "", err
	}
	secPath := filepath.Join(nsDir, "secrets.yaml")
	if err := localcollector.WriteFileAtomic(secPath, files.Secrets); err != nil {
		return "", err
	}
	if run := c.runs[namespace]; run != nil {
		return run.url, nil
	}
	addr, err := c.addr(namespace)
	if err != nil {
		return "", err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	run := &inProcessRun{url: "http://" + addr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		err := collector.Run(runCtx, collector.Options{
			Listen: addr, DataDir: filepath.Join(nsDir, "data"), ConfigPath: cfgPath, SecretsPath: secPath, WebhookAllowLoopback: true, AllowInsecureWebhooks: true,
			LogLevel: "warn", ConfigPoll: 200 * time.Millisecond,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "collector for %s: %v\n", namespace, err)
		}
	}()
	if err := localcollector.WaitAnswering(ctx, run.url+"/readyz", run.done); err != nil {
		cancel()
		return "", fmt.Errorf("collector for %s: %w", namespace, err)
	}
	c.runs[namespace] = run
	return run.url, nil
}

func (c *inProcessCollectors) Remove(_ context.Context, namespace string) error {
	c.mu.Lock()
	run := c.runs[namespace]
	delete(c.runs, namespace)
	c.mu.Unlock()
	if run != nil {
		run.cancel()
		<-run.done
	}
	return nil
}

func (c *inProcessCollectors) URL(namespace string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if run := c.runs[namespace]; run != nil {
		return run.url
	}
	return ""
}

func (c *inProcessCollectors) stopAll() {
	c.mu.Lock()
	names := make([]string, 0, len(c.runs))
	for ns := range c.runs {
		names = append(names, ns)
	}
	c.mu.Unlock()
	for _, ns := range names {
		_ = c.Remove(context.Background(), ns)
	}
}

// pause stops the namespace's collector but keeps its address, as a pod
// that crashed does: requests are refused, and Ensure does not start it
// again, until resume.
func (c *inProcessCollectors) pause(namespace string) {
	c.mu.Lock()
	run := c.runs[namespace]
	c.mu.Unlock()
	run.cancel()
	<-run.done
}

// resume starts a paused collector again on the same address and data.
func (c *inProcessCollectors) resume(ctx context.Context, namespace string) error {
	c.mu.Lock()
	delete(c.runs, namespace)
	nsDir := filepath.Join(c.dir, namespace)
	c.mu.Unlock()
	cfg, err := os.ReadFile(filepath.Join(nsDir, "config.yaml"))
	if err != nil {
		return err
	}
	secrets, err := os.ReadFile(filepath.Join(nsDir, "secrets.yaml"))
	if err != nil {
		return err
	}
	_, err = c.Ensure(ctx, namespace, collectorapi.Files{Config: cfg, Secrets: secrets})
	return err
}
