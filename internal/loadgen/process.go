// Package loadgen drives a cxop collector over loopback for benchmarks and
// crash tests: it starts, stops and kills the collector as a child
// process, writes its config, generates closed- and open-loop load, runs a
// discard server for the loopback ceiling, samples summary latency and
// recounts what survived a crash.
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Names of the subjects in a config written by WriteConfig.
const (
	Touchpoint = "load"
	Survey     = "load-nps"
)

// Tokens are the bearer tokens of a generated config.
type Tokens struct {
	Touchpoint string // may write events for Touchpoint
	Survey     string // may submit answers to Survey
	Read       string // may read summaries and exports
}

// WriteConfig writes a collector config with one touchpoint (Touchpoint,
// 2m wait threshold) and one NPS survey (Survey), each with a fresh random
// token, and a read token, and returns the tokens.
func WriteConfig(path string) (Tokens, error) { return WriteConfigTriggered(path, false) }

// WriteConfigTriggered is WriteConfig; with triggered, the survey's
// trigger names the touchpoint, so that the survey engine reads every
// interaction (the config has no page URL, so it invites no one).
func WriteConfigTriggered(path string, triggered bool) (Tokens, error) {
	t := Tokens{Touchpoint: randomToken(), Survey: randomToken(), Read: randomToken()}
	cfg := fmt.Sprintf(`readTokenSHA256: ["%s"]
touchpoints:
  - name: %s
    waitThreshold: 2m
    tokenSHA256: ["%s"]
surveys:
  - name: %s
    type: NPS
    tokenSHA256: ["%s"]
`, HashToken(t.Read), Touchpoint, HashToken(t.Touchpoint), Survey, HashToken(t.Survey))
	if triggered {
		cfg += fmt.Sprintf("    trigger: {touchpoints: [%s]}\n", Touchpoint)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return Tokens{}, fmt.Errorf("write collector config: %w", err)
	}
	return t, nil
}

// HashToken is the config's form of a bearer token: lowercase hex SHA-256.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails on Linux; see crypto/rand
	return hex.EncodeToString(b)
}

// FreePort returns a loopback address nobody listens on right now.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is a collector child process. Fill in Binary, DataDir (or
// LogPath and a store flag in Start's extraArgs) and Config; Addr and LogPath are chosen on the first Start when empty and
// kept across restarts, so clients see the same URL.
type Process struct {
	Binary, DataDir, Config string
	LogPath                 string // stdout and stderr, appended across restarts
	Addr                    string // host:port on 127.0.0.1
	MetricsAddr             string // host:port of /metrics on 127.0.0.1

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	exitErr error         // its exit status, once done is closed
}

// URL is the collector's base URL.
func (p *Process) URL() string { return "http://" + p.Addr }

// MetricsURL is the base URL of the collector's /metrics listener.
func (p *Process) MetricsURL() string { return "http://" + p.MetricsAddr }

// Exited reports whether a started process has ended without Stop or
// Kill, and how: a collector that dies on its own is a finding.
func (p *Process) Exited() (bool, error) {
	if p.cmd == nil {
		return false, nil
	}
	select {
	case <-p.done:
		return true, p.exitErr
	default:
		return false, nil
	}
}

// Start launches `cxop collector` and waits until GET /readyz answers 200,
// for at most timeout (and never past ctx). It returns the time from exec
// to ready. A process that is not ready in time is killed.
func (p *Process) Start(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	if p.cmd != nil {
		return 0, errors.New("collector already running")
	}
	if p.Addr == "" {
		addr, err := FreePort()
		if err != nil {
			return 0, err
		}
		p.Addr = addr
	}
	if p.MetricsAddr == "" {
		addr, err := FreePort()
		if err != nil {
			return 0, err
		}
		p.MetricsAddr = addr
	}
	if p.LogPath == "" {
		p.LogPath = filepath.Join(filepath.Dir(p.DataDir), "collector.log")
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open collector log: %w", err)
	}
	args := []string{"collector", "--listen", p.Addr, "--metrics-listen", p.MetricsAddr, "--config", p.Config}
	if p.DataDir != "" { // empty for a collector whose store is a database
		args = append(args, "--data-dir", p.DataDir)
	}
	args = append(args, extraArgs...)
	cmd := exec.Command(p.Binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setDeathSignal(cmd.SysProcAttr)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return 0, fmt.Errorf("start collector: %w", err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.exitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		_ = p.Kill()
		return 0, err
	}
	return time.Since(start), nil
}

// waitReady polls /readyz until it answers 200, the process exits or ctx
// ends.
func (p *Process) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			p.cmd = nil
			return fmt.Errorf("collector exited before it was ready (%v); see %s", p.exitErr, p.LogPath)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("collector not ready (%w); see %s", ctx.Err(), p.LogPath)
		case <-tick.C:
		}
	}
}

// Stop asks the collector to drain and exit (SIGTERM) and waits at most
// timeout, then kills it. A non-zero exit status is an error.
func (p *Process) Stop(timeout time.Duration) error {
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		p.cmd = nil
		if p.exitErr != nil {
			return fmt.Errorf("collector exit after SIGTERM: %w; see %s", p.exitErr, p.LogPath)
		}
		return nil
	case <-time.After(timeout):
		_ = p.Kill()
		return fmt.Errorf("collector did not stop within %s after SIGTERM; see %s", timeout, p.LogPath)
	}
}

// Kill ends the collector with SIGKILL, as a crash or the OOM killer
// would, and reaps it.
func (p *Process) Kill() error {
	if p.cmd == nil {
		return nil
	}
	err := p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill collector: %w", err)
	}
	return nil
}
