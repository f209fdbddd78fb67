// Package loadgen drives a real `cxop collector` process over loopback for
// benchmarks and crash tests: it starts and kills the process, writes its
// config, generates load and measures what came back.
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Tokens are the bearer tokens of a generated config.
type Tokens struct {
	Touchpoint string // writes touchpoint "load"
	Survey     string // answers survey "load-nps"
}

// WriteConfig writes a collector config with one touchpoint ("load", 2m
// threshold) and one NPS survey ("load-nps") and returns their tokens.
func WriteConfig(path string) (Tokens, error) {
	t := Tokens{Touchpoint: randomToken(), Survey: randomToken()}
	cfg := fmt.Sprintf(`touchpoints:
  - name: load
    waitThreshold: 2m
    tokenSHA256: [%s]
surveys:
  - name: load-nps
    type: NPS
    tokenSHA256: [%s]
`, hashToken(t.Touchpoint), hashToken(t.Survey))
	return t, os.WriteFile(path, []byte(cfg), 0o600)
}

// hashToken is the config's form of a token, as collector.HashToken.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Process is a collector child process.
type Process struct {
	Binary, DataDir, Config, LogPath string
	Addr                             string // host:port, chosen on first Start
	cmd                              *exec.Cmd
	exited                           chan error
}

// FreePort returns a loopback address nobody listens on right now.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// URL is the collector's base URL.
func (p *Process) URL() string { return "http://" + p.Addr }

// Start launches the collector and waits until /readyz answers 200. It
// returns how long that took.
func (p *Process) Start(ctx context.Context, timeout time.Duration, extraArgs ...string) (time.Duration, error) {
	if p.Addr == "" {
		addr, err := FreePort()
		if err != nil {
			return 0, err
		}
		p.Addr = addr
	}
	if p.LogPath == "" {
		p.LogPath = filepath.Join(filepath.Dir(p.DataDir), "collector.log")
	}
	log, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	args := append([]string{"collector", "--listen", p.Addr, "--data-dir", p.DataDir, "--config", p.Config}, extraArgs...)
	p.cmd = exec.Command(p.Binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	// Nothing outlives the driver, even if it is killed itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return 0, fmt.Errorf("start collector: %w", err)
	}
	p.exited = make(chan error, 1)
	go func() { err := p.cmd.Wait(); log.Close(); p.exited <- err }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-p.exited:
			p.cmd = nil
			return 0, fmt.Errorf("collector exited before it was ready (%v); see %s", err, p.LogPath)
		case <-ctx.Done():
			_ = p.Kill()
			return 0, ctx.Err()
		default:
		}
		if resp, err := client.Get(p.URL() + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start), nil
			}
		}
		if time.Now().After(deadline) {
			_ = p.Kill()
			return 0, fmt.Errorf("collector not ready within %s; see %s", timeout, p.LogPath)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop asks the collector to drain and exit (SIGTERM) and waits.
func (p *Process) Stop(timeout time.Duration) error {
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.cmd = nil
		return err
	case <-time.After(timeout):
		_ = p.Kill()
		return fmt.Errorf("collector did not stop within %s after SIGTERM", timeout)
	}
}

// Kill ends the collector with SIGKILL, as a crash or an OOM kill would.
func (p *Process) Kill() error {
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd = nil
	return nil
}
