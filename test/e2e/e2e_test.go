//go:build e2e

// Package e2e runs cxop as a newcomer does: `cxop dev`, `kubectl apply -f
// config/samples`, interactions and answers posted over HTTP with the
// tokens from the Secrets, and the numbers read back with `kubectl get -o
// json`. Run it with `make test-e2e`.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/test/internal/tour"
)

var root, bin, assets string

func TestMain(m *testing.M) {
	assets = os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		fmt.Fprintln(os.Stderr, `KUBEBUILDER_ASSETS is not set: run "make test-e2e"`)
		os.Exit(1)
	}
	var err error
	if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		panic(err)
	}
	tmp, err := os.MkdirTemp("", "cxop-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(tmp, "cxop")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cxop: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(tmp)
	os.Exit(code)
}

// kubectl runs kubectl from the control plane's assets against the dev
// environment and returns its standard output.
func kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(assets, "kubectl"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestSamplesEndToEnd(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	dev := exec.Command(bin, "dev", "--dir", dir, "--assets", assets)
	dev.Dir = root
	stdout, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dev.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = dev.Process.Kill()
		}
	})
	ready := make(chan struct{})
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if s.Text() == "kubeconfig: "+kubeconfig {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(90 * time.Second):
		t.Fatal("cxop dev printed no kubeconfig line within 90s")
	}

	kubectl(t, kubeconfig, "apply", "-f", "config/samples/")
	url := ""
	for deadline := time.Now().Add(60 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		url = kubectl(t, kubeconfig, "get", "tp", "support-chat", "-o", "jsonpath={.status.ingest.url}")
	}
	if url == "" {
		t.Fatal("support-chat shows no ingest URL within 60s")
	}
	token := func(secret string) string {
		out := kubectl(t, kubeconfig, "get", "secret", secret, "-o", "jsonpath={.data.token}")
		b, err := base64.StdEncoding.DecodeString(out)
		if err != nil {
			t.Fatalf("secret %s: %v", secret, err)
		}
		return string(b)
	}
	now := time.Now().UTC()
	at, err := tour.InBusinessHours(now)
	if err != nil {
		t.Fatal(err)
	}

	post := func(path, secret string, lines []string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(strings.Join(lines, "\n")))
		req.Header.Set("Authorization", "Bearer "+token(secret))
		for attempt := 0; ; attempt++ {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return
				}
				// The collector answers 401 for a token until it has
				// loaded the config that holds its hash.
				if resp.StatusCode != 401 && resp.StatusCode != 503 || attempt > 60 {
					t.Fatalf("POST %s: %d", path, resp.StatusCode)
				}
			} else if attempt > 60 {
				t.Fatalf("POST %s: %v", path, err)
			}
			time.Sleep(500 * time.Millisecond)
			req, _ = http.NewRequest(http.MethodPost, url+path, strings.NewReader(strings.Join(lines, "\n")))
			req.Header.Set("Authorization", "Bearer "+token(secret))
		}
	}

	for _, b := range tour.Batches(at) {
		post(b.Path, b.Secret, b.Lines)
	}
	want := tour.Targets(now, at)

	var last string
	deadline := time.Now().Add(90 * time.Second)
	for {
		got, err := tour.ReadTargets([]byte(kubectl(t, kubeconfig, "get", "cxt", "-o", "json")))
		if err != nil {
			t.Fatal(err)
		}
		last = fmt.Sprintf("%+v", got)
		if last == fmt.Sprintf("%+v", want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("targets never reached\n want %+v\n  got %s", want, last)
		}
		time.Sleep(time.Second)
	}

	// The Touchpoint and the Survey refresh their numbers on their own
	// schedule, not when the targets do: wait for them as for the targets.
	var tp struct {
		Status struct {
			Interactions   int
			WaitCompliance string
		}
	}
	var svy struct {
		Status struct {
			Score                           string
			Promoters, Passives, Detractors int
		}
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
		if err := json.Unmarshal([]byte(kubectl(t, kubeconfig, "get", "tp", "support-chat", "-o", "json")), &tp); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(kubectl(t, kubeconfig, "get", "svy", "support-nps", "-o", "json")), &svy); err != nil {
			t.Fatal(err)
		}
		s := svy.Status
		tpDone := tp.Status.Interactions == 120 && tp.Status.WaitCompliance == "95"
		svyDone := s.Score == "85" && s.Promoters == 54 && s.Passives == 3 && s.Detractors == 3
		if tpDone && svyDone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("support-chat: %d interactions at %s%%, want 120 at 95%%; support-nps: %+v, want NPS 85 from 54/3/3",
				tp.Status.Interactions, tp.Status.WaitCompliance, s)
		}
	}
	var jny struct {
		Status struct {
			NPS, WaitCompliance string
			Targets             map[string]int
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		if err := json.Unmarshal([]byte(kubectl(t, kubeconfig, "get", "jny", "buy-online-get-help", "-o", "json")), &jny); err != nil {
			t.Fatal(err)
		}
		s := jny.Status
		if s.NPS == "85" && s.WaitCompliance == "95" && s.Targets["met"] == 1 && s.Targets["atRisk"] == 1 && s.Targets["breached"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journey: %+v, want NPS 85, compliance 95, one target met, one at risk, one breached", s)
		}
	}
}
