package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// DiscardEnv names the address a re-executed harness binary serves
// DiscardHandler on (see ServeDiscardIfAsked).
const DiscardEnv = "CXOP_LOADGEN_DISCARD_ADDR"

// DiscardHandler reads each body whole, counts its records and answers
// 200 {"accepted":N,"duplicates":0} as the collector would, storing
// nothing: the loopback HTTP ceiling for the same load.
func DiscardHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		b := make([]byte, 0, 48)
		b = append(b, `{"accepted":`...)
		b = strconv.AppendInt(b, int64(CountRecords(body)), 10)
		b = append(b, `,"duplicates":0}`+"\n"...)
		_, _ = w.Write(b)
	})
}

// CountRecords counts the records of a body the collector accepts: the
// elements of a JSON array, or the top-level objects of one object or of
// NDJSON. It does not validate; it only tracks strings and nesting.
func CountRecords(body []byte) int {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return 0
	}
	array := body[0] == '['
	n, depth := 0, 0
	inString, escaped := false, false
	for _, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if array && depth == 1 && n == 0 && c > ' ' && c != ']' {
			n = 1 // the first element
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			if !array && depth == 0 && c == '{' {
				n++
			}
			depth++
		case '}', ']':
			depth--
		case ',':
			if array && depth == 1 {
				n++
			}
		}
	}
	return n
}

// ServeDiscardIfAsked serves DiscardHandler and exits when DiscardEnv is
// set; otherwise it returns at once. Call it first in main of a harness
// binary so StartDiscard can re-execute that binary.
func ServeDiscardIfAsked() {
	addr := os.Getenv(DiscardEnv)
	if addr == "" {
		return
	}
	srv := &http.Server{Addr: addr, Handler: DiscardHandler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	fmt.Fprintln(os.Stderr, "discard server:", srv.ListenAndServe())
	os.Exit(1)
}

// DiscardServer is DiscardHandler in a child process: the current
// executable run again with DiscardEnv set, so the ceiling is measured
// across a process boundary exactly as the collector is.
type DiscardServer struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the server's base URL.
func (d *DiscardServer) URL() string { return "http://" + d.Addr }

// StartDiscard re-executes the running binary as a discard server and
// waits until it answers.
func StartDiscard(ctx context.Context, timeout time.Duration) (*DiscardServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("discard server: %w", err)
	}
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), DiscardEnv+"="+addr)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start discard server: %w", err)
	}
	d := &DiscardServer{Addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var dialer net.Dialer
	for {
		if c, err := dialer.DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("discard server exited before listening on %s", addr)
		case <-ctx.Done():
			d.Stop()
			return nil, fmt.Errorf("discard server not listening on %s: %w", addr, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Stop kills the discard server and reaps it.
func (d *DiscardServer) Stop() {
	_ = d.cmd.Process.Kill()
	<-d.done
}
