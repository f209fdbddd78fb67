package collector

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

func TestRetentionConfigErrorsNameTheField(t *testing.T) {
	for cfg, want := range map[string]string{
		"contactRetention: soon":                `contactRetention: "soon" is not a positive duration such as 7d`,
		"contactRetention: 0d":                  `contactRetention: "0d" is not a positive duration`,
		"retention: 5d":                         `contactRetention: 7d is longer than the retention of 5d`,
		"retention: 30d\ncontactRetention: 31d": `contactRetention: 31d is longer than the retention of 30d`,
		"retention: 30d\nsurveys: [{name: s, type: NPS, throttle: 60d}]":       `surveys[0].throttle: 60d is longer than the retention of 30d`,
		"retention: 30d\nsurveys: [{name: s, type: NPS, linkTTL: 31d}]":        `surveys[0].linkTTL: 31d is longer than the retention of 30d`,
		"retention: 5d\ncontactRetention: 1d\nsurveys: [{name: s, type: NPS}]": `surveys[0].linkTTL: 7d (the default) is longer than the retention of 5d`,
	} {
		_, err := parseConfig([]byte(cfg))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", cfg, err, want)
		}
	}
	s, err := parseConfig([]byte("retention: 30d\nsurveys: [{name: s, type: NPS, throttle: 30d, linkTTL: 2d}]"))
	if err != nil {
		t.Fatal(err)
	}
	if s.contactRetention != DefaultContactRetention || s.retention != 30*24*time.Hour {
		t.Errorf("contactRetention %v, retention %v; want the 7d default and 30d", s.contactRetention, s.retention)
	}
	if s, err = parseConfig([]byte("contactRetention: 36h")); err != nil || s.contactRetention != 36*time.Hour {
		t.Errorf("contactRetention: 36h: %v, %v", s, err)
	}
}

func TestEstimateRetention(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	// 1,000,000 records on 1 GB: 1,000 bytes each; 70,000 in the last
	// week: 10,000 a day; 400 days of them: 4 GB.
	recs := store.RecordsPruned{Kept: 1_000_000, Recent: 70_000, Oldest: now.Add(-90 * 24 * time.Hour)}
	e := estimateRetention(1_000_000_000, 10_000_000_000, recs, now, 400*24*time.Hour)
	if !e.known || e.bytesPerRecord != 1000 || e.recordsPerDay != 10_000 || e.projected != 4e9 || !e.fits() {
		t.Errorf("estimate %+v; want 1000 B/record, 10,000 a day, 4e9 bytes, fits", e)
	}
	if e := estimateRetention(1_000_000_000, 3_000_000_000, recs, now, 400*24*time.Hour); e.fits() {
		t.Errorf("4e9 projected bytes fit a 3e9 volume: %+v", e)
	}
	// Two days of history: the rate is over those two days.
	recs = store.RecordsPruned{Kept: 20_000, Recent: 20_000, Oldest: now.Add(-48 * time.Hour)}
	if e := estimateRetention(20_000_000, 1<<40, recs, now, 100*24*time.Hour); e.recordsPerDay != 10_000 || e.projected != 1e9 {
		t.Errorf("two days of history: %+v; want 10,000 a day and 1e9 bytes", e)
	}
	// Less than an hour of history, or nothing kept: no estimate.
	for _, r := range []store.RecordsPruned{{Kept: 10, Recent: 10, Oldest: now.Add(-time.Minute)}, {}} {
		if e := estimateRetention(1<<20, 1<<30, r, now, time.Hour); e.known {
			t.Errorf("estimate from %+v: %+v; want none", r, e)
		}
	}
}

// TestPruneReportsWhetherRetentionFits stores two days of records, prunes,
// and reads the metrics and the log: fits with room to spare, does not
// with a tiny volume (one log line per change, not per prune), and no
// estimate at all on a read-only store.
func TestPruneReportsWhetherRetentionFits(t *testing.T) {
	c := startCollector(t, t.TempDir(), testConfig(t, ""))
	for i := range 48 {
		at := testNow.Add(-time.Duration(i) * time.Hour).UTC().Format(time.RFC3339)
		if code, body, _ := c.post("/v1/events", chatToken, "", fmt.Sprintf(`{"id":"e%d","touchpoint":"chat","customer":"c%d","time":%q}`, i, i, at)); code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("event %d: %d %v", i, code, body)
		}
	}
	var logs bytes.Buffer
	c.srv.log = slog.New(slog.NewTextHandler(&logs, nil))
	capacity := uint64(1 << 40)
	c.srv.dataVolume = func() (uint64, bool) { return capacity, true }
	metric := func(name string) string {
		resp, err := http.Get(c.metricsURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, name+" ") {
				return strings.TrimPrefix(line, name+" ")
			}
		}
		return ""
	}
	if v := metric("cxop_collector_retention_fits"); v != "" {
		t.Errorf("cxop_collector_retention_fits before any estimate: %s, want absent", v)
	}
	ctx := context.Background()
	c.srv.prune(ctx)
	if v := metric("cxop_collector_retention_fits"); v != "1" {
		t.Errorf("cxop_collector_retention_fits with a 1 TiB volume: %q, want 1", v)
	}
	if v := metric("cxop_collector_retention_projected_bytes"); v == "" || v == "0" {
		t.Errorf("cxop_collector_retention_projected_bytes: %q", v)
	}
	capacity = 1 << 10
	c.srv.prune(ctx)
	c.srv.prune(ctx)
	if v := metric("cxop_collector_retention_fits"); v != "0" {
		t.Errorf("cxop_collector_retention_fits with a 1 KiB volume: %q, want 0", v)
	}
	if n := strings.Count(logs.String(), "the retention does not fit the data volume"); n != 1 {
		t.Errorf("%d log lines saying the retention does not fit, want 1 (one per change):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "capacity_bytes=1024") {
		t.Errorf("the log line does not give the capacity:\n%s", logs.String())
	}
	capacity = 1 << 40
	c.srv.prune(ctx)
	if n := strings.Count(logs.String(), "the retention fits the data volume again"); n != 1 {
		t.Errorf("%d log lines saying the retention fits again, want 1:\n%s", n, logs.String())
	}
}

// TestPruneNeverWritesToAReadOnlyStore: a store opened read-only is
// neither pruned nor estimated.
func TestPruneNeverWritesToAReadOnlyStore(t *testing.T) {
	dir := t.TempDir()
	c := startCollector(t, dir, testConfig(t, ""))
	old := testNow.Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	c.post("/v1/events", chatToken, "", fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c1","time":%q}`, old))
	c.stop()
	st, err := store.Open(store.Options{Dir: dir, ReadOnly: true, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg, err := parseConfig([]byte("retention: 1h\ncontactRetention: 1h"))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), func() time.Time { return testNow })
	srv.store.Store(st)
	srv.dataVolume = func() (uint64, bool) { return 1, true }
	srv.prune(context.Background())
	if ok, err := st.Has(rollup.KindTouchpoint, "chat", "e1"); err != nil || !ok {
		t.Errorf("the read-only store lost a record past retention: %v, %v", ok, err)
	}
	if srv.retention.last.known {
		t.Errorf("a read-only store was estimated: %+v", srv.retention.last)
	}
}

// TestPruneExpiresSurveyData: the collector's hourly prune reaches the
// survey engine with the config's retention: an invitation parked for want
// of a webhook is kept at 29 days and gone, with its record, at 31.
func TestPruneExpiresSurveyData(t *testing.T) { forEachEngine(t, testPruneExpiresSurveyData) }

func testPruneExpiresSurveyData(t *testing.T, eng testEngine) {
	now := testNow
	cfg := testConfig(t, "  - name: mail\n    type: NPS\n    trigger: {touchpoints: [chat]}\nretention: 30d\npageURL: https://cx.example.com\n")
	c := eng.start(t, eng.fresh(t), cfg, func() time.Time { return now })
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c.srv.log = log
	e := c.newSurveyEngine(nil, engine.Options{Now: func() time.Time { return now }, Logger: log})
	sec, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, sec)
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"secret-customer","contact":{"email":"secret@example.com","phone":"+49301234567"}}`); code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("event: %d %v", code, body)
	}
	ctx := context.Background()
	if err := e.Step(ctx); err != nil {
		t.Fatal(err)
	}
	outbox := func() int {
		n, err := e.Outbox()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := outbox(); n != 1 {
		t.Fatalf("outbox: %d messages, want the parked invitation", n)
	}
	now = testNow.Add(29 * 24 * time.Hour)
	c.srv.prune(ctx)
	if n := outbox(); n != 1 {
		t.Errorf("outbox after a prune inside the retention: %d, want 1", n)
	}
	now = testNow.Add(31 * 24 * time.Hour)
	c.srv.prune(ctx)
	if n := outbox(); n != 0 {
		t.Errorf("outbox after a prune past the retention: %d, want 0", n)
	}
	if ok, err := c.srv.storage().Has(ctx, rollup.KindTouchpoint, "chat", "e1"); err != nil || ok {
		t.Errorf("record past the retention: %v, %v; want it pruned", ok, err)
	}
	if !strings.Contains(logs.String(), "pruned survey data past retention") {
		t.Errorf("the prune was not logged:\n%s", logs.String())
	}
	resp, err := http.Get(c.metricsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{"secret", "+49301234567"} {
		if strings.Contains(logs.String(), secret) || strings.Contains(string(metrics), secret) {
			t.Errorf("a log line or metric carries %q:\n%s", secret, logs.String())
		}
	}
}

// recordPruneFails is a store whose record prune fails, as a partition drop
// that keeps timing out behind a long reader would.
type recordPruneFails struct{ Storage }

func (recordPruneFails) PruneExpired(context.Context, time.Time, time.Time) (store.RecordsPruned, error) {
	return store.RecordsPruned{}, errors.New("lock timeout")
}

// A record prune that fails does not hold up the survey engine's prune:
// contacts and every other class still expire on their own clocks.
func TestFailedRecordPruneStillPrunesSurveyData(t *testing.T) {
	forEachEngine(t, testFailedRecordPruneStillPrunesSurveyData)
}

func testFailedRecordPruneStillPrunesSurveyData(t *testing.T, eng testEngine) {
	now := testNow
	cfg := testConfig(t, "  - name: mail\n    type: NPS\n    trigger: {touchpoints: [chat]}\nretention: 30d\npageURL: https://cx.example.com\n")
	c := eng.start(t, eng.fresh(t), cfg, func() time.Time { return now })
	e := c.newSurveyEngine(nil, engine.Options{Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	sec, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, sec)
	if code, body, _ := c.post("/v1/events", chatToken, "", `{"id":"e1","touchpoint":"chat","customer":"c-1","contact":{"email":"c1@example.com"}}`); code != http.StatusOK {
		t.Fatalf("event: %d %v", code, body)
	}
	ctx := context.Background()
	if err := e.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Outbox(); err != nil || n != 1 {
		t.Fatalf("outbox: %d, %v; want the parked invitation", n, err)
	}
	var failing Storage = recordPruneFails{c.srv.storage()}
	c.srv.external.Store(&failing)
	now = testNow.Add(31 * 24 * time.Hour)
	c.srv.prune(ctx)
	if n, err := e.Outbox(); err != nil || n != 0 {
		t.Errorf("outbox after a prune past the retention whose record prune failed: %d, %v; want 0", n, err)
	}
}
