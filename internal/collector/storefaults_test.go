package collector

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/store"
)

// faultCollector is a collector on an in-memory volume whose usage the
// test sets and whose log fsyncs it can fail.
type faultCollector struct {
	*testCollector
	mem     *vfs.MemFS
	failing atomic.Bool
	reg     *prometheus.Registry
	opts    store.Options
}

const faultDir = "/data"

func newFaultCollector(t *testing.T) *faultCollector {
	fc := &faultCollector{mem: vfs.NewMem(), reg: prometheus.NewRegistry()}
	fc.setFree(1<<30, 4<<30)
	fs := errorfs.Wrap(fc.mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if fc.failing.Load() && strings.HasSuffix(op.Path, ".log") &&
			(op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo) {
			return fmt.Errorf("%s: %w", op.Path, syscall.EIO)
		}
		return nil
	}))
	fc.opts = store.Options{Dir: faultDir, FS: fs, Now: func() time.Time { return testNow },
		MemTableBytes: 256 << 10, CacheBytes: 1 << 20, CheckpointInterval: time.Hour, Registerer: fc.reg}
	srv := NewServer(slog.New(slog.DiscardHandler), testConfig(t, ""), fc.reg, func() time.Time { return testNow })
	srv.roomPoll = time.Millisecond
	fc.reg.MustRegister(newVolumeCollector(faultDir, fs, srv.store.Load))
	ts := httptest.NewServer(srv.Handler())
	fc.testCollector = &testCollector{t: t, srv: srv, url: ts.URL}
	t.Cleanup(func() {
		ts.Close()
		if st := srv.store.Load(); st != nil {
			_ = st.Close()
		}
	})
	return fc
}

func (fc *faultCollector) setFree(avail, total uint64) {
	fc.mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: avail, TotalBytes: total, UsedBytes: total - avail})
}

func (fc *faultCollector) open(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(fc.opts)
	if err != nil {
		t.Fatal(err)
	}
	fc.srv.store.Store(st)
	return st
}

// probe answers a GET with its code and body; it sends the read token,
// which only /v1/summary and /v1/export look at.
func (fc *faultCollector) probe(path string) (int, string) {
	fc.t.Helper()
	req, err := http.NewRequest(http.MethodGet, fc.url+path, nil)
	if err != nil {
		fc.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fc.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (fc *faultCollector) gauge(name string) (float64, bool) {
	fc.t.Helper()
	mfs, err := fc.reg.Gather()
	if err != nil {
		fc.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var m *dto.Metric = mf.GetMetric()[0]
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func chatEvent(id string) string {
	return fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"c1","waitSeconds":10}`, id)
}

// TestStoreFailureFailsLivenessAndReadiness fails the log's fsync (EIO)
// under a request: it is answered 503 with Retry-After, the liveness and
// readiness probes fail so that the kubelet restarts the collector, and
// reads go on meanwhile.
func TestStoreFailureFailsLivenessAndReadiness(t *testing.T) {
	fc := newFaultCollector(t)
	fc.open(t)
	if code, body, _ := fc.post("/v1/events", chatToken, "", chatEvent("e1")); code != 200 {
		t.Fatalf("first event: %d %v", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := fc.probe(p); code != 200 {
			t.Fatalf("%s before the failure: %d %s", p, code, body)
		}
	}
	if v, _ := fc.gauge("cxop_collector_store_writable"); v != 1 {
		t.Errorf("cxop_collector_store_writable = %v before the failure, want 1", v)
	}

	fc.failing.Store(true)
	code, body, h := fc.post("/v1/events", chatToken, "", chatEvent("e2"))
	if code != 503 || h.Get("Retry-After") != "5" || body["error"] != "records not stored: the store cannot write; retry with the same ids" {
		t.Errorf("event whose fsync failed: %d, Retry-After %q, %v; want 503, 5 and why", code, h.Get("Retry-After"), body)
	}
	fc.failing.Store(false)
	code, body, h = fc.post("/v1/events", chatToken, "", chatEvent("e3"))
	if code != 503 || h.Get("Retry-After") == "" {
		t.Errorf("event after the failure: %d %v, want 503 with Retry-After until a restart", code, body)
	}
	if code, body := fc.probe("/healthz"); code != 503 || !strings.Contains(body, "store cannot write") || !strings.Contains(body, "input/output error") {
		t.Errorf("/healthz after the failure: %d %q, want 503 saying the store cannot write and why", code, body)
	}
	if code, body := fc.probe("/readyz"); code != 503 || !strings.Contains(body, "store failed") {
		t.Errorf("/readyz after the failure: %d %q, want 503", code, body)
	}
	var sum collectorapi.TouchpointSummary
	if code := fc.get("/v1/summary?touchpoint=chat&window=1d", &sum); code != 200 || sum.Interactions != 1 {
		t.Errorf("summary after the failure: %d, %d interactions; want 200 and the 1 acknowledged", code, sum.Interactions)
	}
	if v, _ := fc.gauge("cxop_collector_store_writable"); v != 0 {
		t.Errorf("cxop_collector_store_writable = %v after the failure, want 0", v)
	}
}

// TestFullVolumeServesReadOnlyAndResumes starts on a volume with less
// free space than the store needs: the collector is live and ready, serves
// summaries and exports, refuses records with 503 and Retry-After, and
// goes back to writing by itself once space is freed.
func TestFullVolumeServesReadOnlyAndResumes(t *testing.T) {
	fc := newFaultCollector(t)
	st := fc.open(t)
	if code, body, _ := fc.post("/v1/events", chatToken, "", chatEvent("e1")); code != 200 {
		t.Fatalf("first event: %d %v", code, body)
	}
	fc.srv.store.Store(nil)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	fc.setFree(1<<20, 4<<30)
	ro := fc.open(t)
	if ro.ReadOnly() == nil {
		t.Fatal("the store opened for writing on a full volume")
	}
	if code, body := fc.probe("/healthz"); code != 200 {
		t.Errorf("/healthz read-only: %d %q, want 200 (a restart frees no space)", code, body)
	}
	if code, body := fc.probe("/readyz"); code != 200 || !strings.Contains(body, "read-only") || !strings.Contains(body, "1048576 bytes free") {
		t.Errorf("/readyz read-only: %d %q, want 200 saying read-only and why", code, body)
	}
	code, body, h := fc.post("/v1/events", chatToken, "", chatEvent("e2"))
	if code != 503 || h.Get("Retry-After") != "30" || body["error"] != "records not stored: the data volume is full; retry with the same ids" {
		t.Errorf("event on a full volume: %d, Retry-After %q, %v", code, h.Get("Retry-After"), body)
	}
	var sum collectorapi.TouchpointSummary
	if code := fc.get("/v1/summary?touchpoint=chat&window=1d", &sum); code != 200 || sum.Interactions != 1 {
		t.Errorf("read-only summary: %d, %d interactions; want 200 and 1", code, sum.Interactions)
	}
	if code, body := fc.probe("/v1/export?touchpoint=chat"); code != 200 || strings.Count(body, `"id":"e1"`) != 1 {
		t.Errorf("read-only export: %d %q", code, body)
	}
	if v, _ := fc.gauge("cxop_collector_store_writable"); v != 0 {
		t.Errorf("cxop_collector_store_writable = %v read-only, want 0", v)
	}
	if v, ok := fc.gauge("cxop_collector_data_volume_free_bytes"); !ok || v != 1<<20 {
		t.Errorf("cxop_collector_data_volume_free_bytes = %v (%v), want %d", v, ok, 1<<20)
	}
	if v, ok := fc.gauge("cxop_collector_data_volume_size_bytes"); !ok || v != 4<<30 {
		t.Errorf("cxop_collector_data_volume_size_bytes = %v (%v), want %d", v, ok, 4<<30)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resumed := make(chan *store.Store, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fc.srv.resumeWhenRoom(ctx, fc.opts, func(st *store.Store) { resumed <- st })
	}()
	fc.setFree(1<<30, 4<<30)
	select {
	case st := <-resumed:
		if st.Err() != nil {
			t.Fatalf("resumed store: %v", st.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the store did not go back to writing after space was freed")
	}
	<-done
	if code, body, _ := fc.post("/v1/events", chatToken, "", chatEvent("e2")); code != 200 || body["accepted"] != 1.0 {
		t.Errorf("event after space was freed: %d %v, want 200 and 1 accepted", code, body)
	}
	if code := fc.get("/v1/summary?touchpoint=chat&window=1d", &sum); code != 200 || sum.Interactions != 2 {
		t.Errorf("summary after resuming: %d, %d interactions; want 2", code, sum.Interactions)
	}
	if code, body := fc.probe("/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz after resuming: %d %q", code, body)
	}
	if v, _ := fc.gauge("cxop_collector_store_writable"); v != 1 {
		t.Errorf("cxop_collector_store_writable = %v after resuming, want 1", v)
	}
}

// TestSurveyPageOnAFullVolume answers one invitation, then restarts the
// collector on a volume without room to write: the page still says the
// answered invitation is answered and shows the other one's question, and
// an answer to it is refused with 503 and kept nowhere.
func TestSurveyPageOnAFullVolume(t *testing.T) {
	var mu sync.Mutex
	var links []string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		if b["type"] == "survey.invitation" {
			mu.Lock()
			links = append(links, b["link"].(string))
			mu.Unlock()
		}
	}))
	defer rcv.Close()
	invited := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), links...)
	}

	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	base := "http://" + addr
	cfgPath, secPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "secrets.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`
pageURL: http://%s
readTokenSHA256: [%s]
touchpoints:
  - name: chat
    tokenSHA256: [%s]
surveys:
  - name: nps
    type: NPS
    trigger: {touchpoints: [chat]}
    tokenSHA256: [%s]
    webhook: {url: %q, key: nps-delivery}
`, addr, collectorapi.HashToken(readToken), collectorapi.HashToken(chatToken), collectorapi.HashToken(npsToken), rcv.URL))
	writeFile(t, secPath, fmt.Sprintf("linkKeys: {current: %s}\nwebhookKeys: {nps-delivery: %s}\n",
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 32)))))
	run := func(minFree int64) (stop func()) {
		return runCollector(t, Options{Listen: addr, DataDir: filepath.Join(dir, "data"), ConfigPath: cfgPath, SecretsPath: secPath,
			WebhookAllowLoopback: true, AllowInsecureWebhooks: true, LogLevel: "error", ConfigPoll: time.Hour, minFreeBytes: minFree})
	}

	stop := run(0)
	for _, customer := range []string{"c-1", "c-2"} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(fmt.Sprintf(`{"id":"e-%s","touchpoint":"chat","customer":%q}`, customer, customer)))
		req.Header.Set("Authorization", "Bearer "+chatToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("post event: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	waitFor(t, func() bool { return len(invited()) == 2 })
	answered, open := invited()[0], invited()[1]
	page := getPage(t, answered)
	form := formTokenRE.FindStringSubmatch(page.body)
	if form == nil {
		t.Fatalf("no form on the survey page: %d", page.status)
	}
	if got := postPage(t, answered, url.Values{"form": {form[1]}, "score": {"9"}}, nil); got.status != 200 {
		t.Fatalf("answer: %d", got.status)
	}
	page = getPage(t, open)
	form = formTokenRE.FindStringSubmatch(page.body)
	if form == nil {
		t.Fatalf("no form on the second survey page: %d", page.status)
	}
	stop()

	// Restart without room to write: a huge floor makes any volume full.
	stop = run(1 << 62)
	defer stop()
	if code, body := getText(t, base+"/readyz"); code != 200 || !strings.Contains(body, "read-only") {
		t.Errorf("/readyz on a full volume: %d %q", code, body)
	}
	if got := getPage(t, answered); got.status != 200 || !strings.Contains(got.body, "You have already answered") {
		t.Errorf("answered link on a full volume: %d\n%s", got.status, got.body)
	}
	if got := getPage(t, open); got.status != 200 || !strings.Contains(got.body, `name="score"`) {
		t.Errorf("open link on a full volume: %d", got.status)
	}
	got := postPage(t, open, url.Values{"form": {form[1]}, "score": {"2"}}, nil)
	if got.status != 503 || got.header.Get("Retry-After") == "" || !strings.Contains(got.body, "Your answer was not saved") {
		t.Errorf("answer on a full volume: %d, Retry-After %q", got.status, got.header.Get("Retry-After"))
	}
	if code, body := getText(t, base+"/v1/export?survey=nps", "Authorization", "Bearer "+readToken); code != 200 || strings.Count(body, "\n") != 1 {
		t.Errorf("export on a full volume: %d, want the one stored answer:\n%s", code, body)
	}
}

func getText(t *testing.T, u string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
