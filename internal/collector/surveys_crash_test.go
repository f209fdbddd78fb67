package collector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// childEnv, when set, makes TestCollectorChildProcess run a collector with
// the options it names (JSON), until it is killed: the crash test below
// runs the collector in a process of its own so that it can SIGKILL it.
const childEnv = "CXOP_COLLECTOR_CHILD"

func TestCollectorChildProcess(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return // only meaningful as the child of the crash test
	}
	var o Options
	if err := json.Unmarshal([]byte(spec), &o); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
}

// TestSIGKILLDuringDeliveriesLosesNoInvitation kills the collector with
// SIGKILL while it delivers invitations to a slow receiver, starts it again
// on the same data, and checks that every invitation arrives (at least
// once, a repeat keeping its webhook-id) and none is made twice.
func TestSIGKILLDuringDeliveriesLosesNoInvitation(t *testing.T) {
	const customers = 400
	var mu sync.Mutex
	seen := map[string]int{} // webhook-id -> deliveries
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // keep deliveries in flight
		mu.Lock()
		seen[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	counts := func() (distinct, total int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range seen {
			distinct++
			total += n
		}
		return
	}

	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	base := "http://" + addr
	writeFile(t, filepath.Join(dir, "config.yaml"), fmt.Sprintf(`pageURL: %s
readTokenSHA256: [%s]
touchpoints: [{name: chat, tokenSHA256: [%s]}]
surveys:
  - name: nps
    type: NPS
    trigger: {touchpoints: [chat]}
    webhook: {url: %q, key: hook}
`, base, collectorapi.HashToken(readToken), collectorapi.HashToken(chatToken), rcv.URL))
	writeFile(t, filepath.Join(dir, "secrets.yaml"), fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {hook: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("h", 32)))))
	spec, _ := json.Marshal(Options{Listen: addr, DataDir: filepath.Join(dir, "data"), ConfigPath: filepath.Join(dir, "config.yaml"),
		SecretsPath: filepath.Join(dir, "secrets.yaml"), WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "error", ConfigPoll: time.Second})
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCollectorChildProcess$")
		cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			resp, err := http.Get(base + "/readyz")
			return err == nil && resp.Body.Close() == nil && resp.StatusCode == 200
		})
		return cmd
	}

	child := start()
	var events []string
	now := time.Now().UTC().Format(time.RFC3339)
	for i := range customers {
		events = append(events, fmt.Sprintf(`{"id":"e%d","touchpoint":"chat","customer":"c%d","time":%q}`, i, i, now))
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(strings.Join(events, "\n")))
	req.Header.Set("Authorization", "Bearer "+chatToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("post events: %v %v", resp, err)
	}
	resp.Body.Close()

	// Kill it once a part of the invitations has arrived.
	waitFor(t, func() bool { d, _ := counts(); return d >= customers/4 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	before, _ := counts()
	if before >= customers {
		t.Fatalf("all %d invitations arrived before the kill; the test did not kill mid-delivery", customers)
	}

	child = start()
	defer func() { _ = child.Process.Signal(syscall.SIGTERM); _ = child.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, _ := counts(); d == customers {
			break
		}
		if time.Now().After(deadline) {
			d, _ := counts()
			t.Fatalf("%d of %d invitations arrived after the restart", d, customers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	distinct, total := counts()
	mu.Lock()
	for id := range seen {
		if !strings.HasPrefix(id, "msg_inv_") {
			t.Errorf("webhook-id %q", id)
		}
	}
	mu.Unlock()
	var sum collectorapi.SurveySummary
	waitFor(t, func() bool {
		r, _ := http.NewRequest(http.MethodGet, base+"/v1/summary?survey=nps&window=1d", nil)
		r.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&sum) == nil && sum.Invitations != nil && sum.Invitations.Sent == customers
	})
	if sum.Invitations.Invited != customers {
		t.Errorf("%d invitations made for %d customers: the restart invited someone twice or lost someone", sum.Invitations.Invited, customers)
	}
	t.Logf("killed after %d of %d invitations had arrived; after the restart all %d arrived, %d repeated with the same webhook-id",
		before, customers, distinct, total-distinct)
}
