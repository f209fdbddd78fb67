package devenv_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// TestDevEnvironment runs `cxop dev` as a user would: the real binary, a
// control plane from KUBEBUILDER_ASSETS and the manager as a child. It
// checks that the manager reconciles, that Ctrl-C stops every process, and
// that objects survive a restart.
func TestDevEnvironment(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal(`KUBEBUILDER_ASSETS is not set: run "make test"`)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "cxop")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cxop: %v\n%s", err, out)
	}
	dir := t.TempDir()

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "dev", "--dir", dir, "--assets", assets)
		cmd.Dir = root
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		lines := make(chan string, 64)
		go func() {
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				lines <- s.Text()
			}
			close(lines)
		}()
		deadline := time.After(90 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatal("cxop dev exited before it was ready")
				}
				if line == "kubeconfig: "+filepath.Join(dir, "kubeconfig") {
					go func() {
						for range lines {
						}
					}()
					return cmd
				}
			case <-deadline:
				t.Fatal("cxop dev printed no kubeconfig line within 90s")
			}
		}
	}
	stop := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("cxop dev exited with %v after SIGINT", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("cxop dev did not stop within 30s of SIGINT")
		}
	}
	newClient := func() client.Client {
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
		if err != nil {
			t.Fatal(err)
		}
		scheme := runtime.NewScheme()
		if err := cxv1.AddToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		if err := corev1.AddToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	cmd := start()
	c := newClient()
	ctx := context.Background()
	tp := &cxv1.Touchpoint{Spec: cxv1.TouchpointSpec{Channel: cxv1.ChannelChat}}
	tp.Name, tp.Namespace = "support-chat", "default"
	if err := c.Create(ctx, tp); err != nil {
		t.Fatalf("create touchpoint: %v", err)
	}
	waitReady(t, c, tp)
	postEvent(t, c, tp, "e1")
	waitInteractions(t, c, tp, 1)

	stop(cmd)
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); strings.TrimSpace(string(out)) != "" {
		t.Fatalf("etcd left running after SIGINT: %s", out)
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:18080", time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the manager's metrics port still answers after SIGINT")
	}

	cmd = start()
	c = newClient()
	got := &cxv1.Touchpoint{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(tp), got); err != nil {
		t.Fatalf("touchpoint lost across restart: %v", err)
	}
	if got.UID != tp.UID {
		t.Fatalf("touchpoint UID changed across restart: %s != %s", got.UID, tp.UID)
	}
	// The collector's store survived too, at the same URL: the event is
	// still counted, and a retry of it is a duplicate.
	waitInteractions(t, c, tp, 1)
	postEvent(t, c, tp, "e1")
	postEvent(t, c, tp, "e2")
	waitInteractions(t, c, tp, 2)
	stop(cmd)
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); strings.TrimSpace(string(out)) != "" {
		t.Fatalf("processes left running after SIGINT: %s", out)
	}
}

func waitReady(t *testing.T, c client.Client, tp *cxv1.Touchpoint) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		got := &cxv1.Touchpoint{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(tp), got); err == nil {
			if meta.IsStatusConditionTrue(got.Status.Conditions, cxv1.ReadyCondition) && got.Status.ObservedGeneration == got.Generation {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("touchpoint did not become Ready within 60s: is the manager running?")
}

// postEvent posts one interaction to the touchpoint's collector with the
// token from its Secret, as the README's tour does with curl.
// eventTime is the time of every event the test posts: a retry of an id
// sends the same payload, as a client's retry does (another time under the
// same id is a conflict).
var eventTime = time.Now().UTC().Format(time.RFC3339)

func postEvent(t *testing.T, c client.Client, tp *cxv1.Touchpoint, id string) {
	t.Helper()
	got := &cxv1.Touchpoint{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(tp), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Ingest == nil || got.Status.Ingest.TokenSecretRef == nil {
		t.Fatalf("touchpoint status has no ingest URL and token: %+v", got.Status)
	}
	sec := &corev1.Secret{}
	key := client.ObjectKey{Namespace: tp.Namespace, Name: got.Status.Ingest.TokenSecretRef.Name}
	if err := c.Get(context.Background(), key, sec); err != nil {
		t.Fatalf("token secret: %v", err)
	}
	body := fmt.Sprintf(`{"id":%q,"touchpoint":%q,"customer":"c1","time":%q,"waitSeconds":45}`,
		id, tp.Name, eventTime)
	// Right after a restart the manager may not have started the
	// collector yet; a client retries, and so does this test.
	var resp *http.Response
	for deadline := time.Now().Add(30 * time.Second); ; {
		req, _ := http.NewRequest(http.MethodPost, got.Status.Ingest.URL+"/v1/events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+string(sec.Data[got.Status.Ingest.TokenSecretRef.Key]))
		var err error
		if resp, err = http.DefaultClient.Do(req); err == nil && resp.StatusCode != http.StatusServiceUnavailable {
			break
		} else if err == nil {
			_ = resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("post event: the collector did not answer within 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post event: %d %s", resp.StatusCode, answer)
	}
}

func waitInteractions(t *testing.T, c client.Client, tp *cxv1.Touchpoint, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	got := &cxv1.Touchpoint{}
	for time.Now().Before(deadline) {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(tp), got); err == nil && got.Status.Interactions == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("touchpoint shows %d interactions, want %d", got.Status.Interactions, want)
}
