package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

// replica is one `cxop collector --store=postgres` process. loadgen.Process
// always passes --data-dir, which the collector refuses with a database
// store (it keeps nothing on disk).
type replica struct {
	bin, config, dsnFile, logPath string
	addr, metricsAddr             string
	extraArgs                     []string

	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

func (r *replica) URL() string { return "http://" + r.addr }

// start launches the collector and waits until /readyz answers 200.
func (r *replica) start(ctx context.Context, timeout time.Duration) error {
	var err error
	if r.addr, err = loadgen.FreePort(); err != nil {
		return err
	}
	if r.metricsAddr, err = loadgen.FreePort(); err != nil {
		return err
	}
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := append([]string{"collector", "--listen", r.addr, "--metrics-listen", r.metricsAddr, "--config", r.config,
		"--store=postgres", "--postgres-dsn-file=" + r.dsnFile}, r.extraArgs...)
	r.cmd = exec.Command(r.bin, args...)
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	// The collector dies with the bench.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start collector: %w", err)
	}
	r.done = make(chan struct{})
	go func() {
		r.exitErr = r.cmd.Wait()
		logFile.Close()
		close(r.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-r.done:
			return fmt.Errorf("collector exited before it was ready (%v); see %s", r.exitErr, r.logPath)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			r.kill()
			return fmt.Errorf("collector not ready (%w); see %s", ctx.Err(), r.logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits at most timeout, then kills.
func (r *replica) stop(timeout time.Duration) error {
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		r.cmd = nil
		if r.exitErr != nil {
			return fmt.Errorf("collector exit after SIGTERM: %w; see %s", r.exitErr, r.logPath)
		}
		return nil
	case <-time.After(timeout):
		r.kill()
		return fmt.Errorf("collector did not stop within %s after SIGTERM; see %s", timeout, r.logPath)
	}
}

func (r *replica) kill() {
	if r.cmd == nil {
		return
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		fmt.Fprintln(os.Stderr, "kill collector:", err)
	}
	<-r.done
	r.cmd = nil
}
