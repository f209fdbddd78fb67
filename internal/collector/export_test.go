package collector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cxop-dev/cxop/internal/store"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// exportBody GETs path with the read token and returns the status and body.
func (c *testCollector) exportBody(path string, header ...string) (int, string) {
	c.t.Helper()
	code, body, _ := c.exportAnswer(path, header...)
	return code, body
}

// exportAnswer is exportBody with the answer's headers; header is pairs
// of request header names and values.
func (c *testCollector) exportAnswer(path string, header ...string) (int, string, http.Header) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// Cells a spreadsheet would run as formulas are neutralised, and the rest
// is RFC 4180 CSV, byte for byte.
func TestCSVExportNeutralisesFormulas(t *testing.T) {
	forEachEngine(t, testCSVExportNeutralisesFormulas)
}

func testCSVExportNeutralisesFormulas(t *testing.T, e testEngine) {
	c := e.start(t, e.fresh(t), testConfig(t, ""), func() time.Time { return testNow })
	events := `{"id":"=HYPERLINK(\"http://x.example/?a\",\"click\")","touchpoint":"chat","customer":"+1","time":"2026-11-23T11:00:00Z","waitSeconds":30.5,"resolved":false,"handleSeconds":120,"segment":"-2","contact":{"email":"@SUM(1+1)@example.com","phone":"+49 30 1234"}}
{"id":"plain","touchpoint":"chat","customer":"Zoë, \"the\" customer","time":"2026-11-23T11:30:00Z","waitSeconds":0.000001,"resolved":true}
{"id":"e3","touchpoint":"chat","customer":" =1","time":"2026-11-23T11:45:00Z","segment":"a;b","contact":{"email":"x@example.com"}}`
	if code, body, _ := c.post("/v1/events", chatToken, "", events); code != 200 {
		t.Fatalf("events: %d %v", code, body)
	}
	responses := `{"id":"r1","survey":"nps","customer":"@admin","score":3,"comment":"\t=1+1","time":"2026-11-23T11:00:00Z"}
{"id":"r2","survey":"nps","customer":"-5","score":0,"comment":"\r=cmd|' /C calc'!A0","time":"2026-11-23T11:01:00Z"}
{"id":"r3","survey":"nps","customer":"Jürgen Groß 東京","score":10,"comment":"Line one\nline \"two\", and more","time":"2026-11-23T11:02:00Z"}
{"id":"r4","survey":"nps","customer":"c","score":7,"time":"2026-11-23T11:03:00Z"}`
	if code, body, _ := c.post("/v1/responses", npsToken, "", responses); code != 200 {
		t.Fatalf("responses: %d %v", code, body)
	}
	// Contacts are not part of the records, nor of their export.
	wantEvents := "id,time,customer,touchpoint,waitSeconds,handleSeconds,resolved,segment\n" +
		`"'=HYPERLINK(""http://x.example/?a"",""click"")",2026-11-23T11:00:00Z,'+1,chat,30.5,120,false,'-2` + "\n" +
		`plain,2026-11-23T11:30:00Z,"Zoë, ""the"" customer",chat,0.000001,,true,` + "\n" +
		`e3,2026-11-23T11:45:00Z," =1",chat,,,,a;b` + "\n"
	wantAnswers := "id,time,customer,survey,score,comment\n" +
		"r1,2026-11-23T11:00:00Z,'@admin,nps,3,'\t=1+1\n" +
		"r2,2026-11-23T11:01:00Z,'-5,nps,0,\"'\r=cmd|' /C calc'!A0\"\n" +
		"r3,2026-11-23T11:02:00Z,Jürgen Groß 東京,nps,10,\"Line one\nline \"\"two\"\", and more\"\n" +
		"r4,2026-11-23T11:03:00Z,c,nps,7,\n"
	for _, tc := range []struct {
		path, accept, want, filename string
	}{
		{"/v1/export?touchpoint=chat&format=csv", "", wantEvents, "touchpoint-chat.csv"},
		{"/v1/export?survey=nps&format=csv", "", wantAnswers, "survey-nps.csv"},
		{"/v1/export?survey=nps", "text/csv", wantAnswers, "survey-nps.csv"},
		{"/v1/export?survey=nps&format=CSV", "application/x-ndjson", wantAnswers, "survey-nps.csv"},
	} {
		code, body, h := c.exportAnswer(tc.path, "Accept", tc.accept)
		if code != 200 || body != tc.want {
			t.Errorf("GET %s (Accept %q): %d\n%q\nwant\n%q", tc.path, tc.accept, code, body, tc.want)
		}
		if ct, cd := h.Get("Content-Type"), h.Get("Content-Disposition"); ct != "text/csv; charset=utf-8; header=present" || cd != `attachment; filename="`+tc.filename+`"` {
			t.Errorf("GET %s: Content-Type %q, Content-Disposition %q", tc.path, ct, cd)
		}
	}
	// Per customer, the same rows of that customer alone; none is a
	// header alone.
	if code, body := c.exportBody("/v1/export?survey=nps&format=csv&customer=" + urlEscape("Jürgen Groß 東京")); code != 200 ||
		body != "id,time,customer,survey,score,comment\nr3,2026-11-23T11:02:00Z,Jürgen Groß 東京,nps,10,\"Line one\nline \"\"two\"\", and more\"\n" {
		t.Errorf("one customer's answers: %d %q", code, body)
	}
	if code, body := c.exportBody("/v1/export?touchpoint=chat&format=csv&customer=nobody"); code != 200 ||
		body != "id,time,customer,touchpoint,waitSeconds,handleSeconds,resolved,segment\n" {
		t.Errorf("no such customer: %d %q", code, body)
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "+", "%2B", " ", "%20", "&", "%26", "=", "%3D").Replace(s)
}

// NDJSON stays the default; Accept and format choose; a bad format or
// customer is 400 naming it.
func TestExportFormatsAndParameters(t *testing.T) { forEachEngine(t, testExportFormatsAndParameters) }

func testExportFormatsAndParameters(t *testing.T, e testEngine) {
	c := e.start(t, e.fresh(t), testConfig(t, ""), func() time.Time { return testNow })
	c.post("/v1/responses", npsToken, "", `{"id":"r1","survey":"nps","customer":"c-1","score":9,"time":"2026-11-23T11:00:00Z"}
{"id":"r2","survey":"nps","customer":"c-2","score":8,"time":"2026-11-23T11:01:00Z"}`)
	ndjson := `{"id":"r1","survey":"nps","customer":"c-1","score":9,"time":"2026-11-23T11:00:00Z"}` + "\n" +
		`{"id":"r2","survey":"nps","customer":"c-2","score":8,"time":"2026-11-23T11:01:00Z"}` + "\n"
	csvBody := "id,time,customer,survey,score,comment\nr1,2026-11-23T11:00:00Z,c-1,nps,9,\nr2,2026-11-23T11:01:00Z,c-2,nps,8,\n"
	for _, tc := range []struct{ query, accept, want string }{
		{"", "", ndjson},
		{"", "*/*", ndjson},
		{"", "text/html,application/xhtml+xml", ndjson},
		{"", "application/x-ndjson", ndjson},
		{"", "text/csv", csvBody},
		{"", "text/csv;q=0.5, application/x-ndjson", ndjson},
		{"", "application/x-ndjson;q=0.1, text/csv", csvBody},
		{"", "text/csv, */*;q=0.1", csvBody},
		{"&format=ndjson", "text/csv", ndjson},
		{"&format=csv", "", csvBody},
		{"&customer=c-2", "", `{"id":"r2","survey":"nps","customer":"c-2","score":8,"time":"2026-11-23T11:01:00Z"}` + "\n"},
	} {
		code, body, h := c.exportAnswer("/v1/export?survey=nps"+tc.query, "Accept", tc.accept)
		wantType := "application/x-ndjson"
		if tc.want == csvBody {
			wantType = "text/csv; charset=utf-8; header=present"
		}
		if code != 200 || body != tc.want || h.Get("Content-Type") != wantType {
			t.Errorf("%s with Accept %q: %d %s %q", tc.query, tc.accept, code, h.Get("Content-Type"), body)
		}
	}
	for _, tc := range []struct{ query, field, reason string }{
		{"&format=xlsx", "format", `"xlsx" is not one of ndjson, csv`},
		{"&format=", "format", `"" is not one of ndjson, csv`},
		{"&format=csv&format=ndjson", "format", "given more than once"},
		{"&customer=", "customer", "must not be empty"},
		{"&customer=a&customer=b", "customer", "given more than once"},
		{"&customer=a%07", "customer", "contains a control character"},
		{"&customer=" + strings.Repeat("x", 257), "customer", "longer than 256 bytes"},
		{"&fromat=csv", "fromat", "unknown parameter"},
	} {
		code, e, body := c.getAnswer("/v1/export?survey=nps" + tc.query)
		if code != 400 || e.Field != tc.field || !strings.Contains(e.Reason, tc.reason) || !strings.HasPrefix(e.Error, tc.field+": ") {
			t.Errorf("%s: %d %s, want 400 naming %s: %s", tc.query, code, body, tc.field, tc.reason)
		}
	}
}

// A CSV export of 200,000 records is streamed: the live heap while the
// client reads it stays within a small bound, far below the export's size.
func TestCSVExportStreamsInBoundedMemory(t *testing.T) {
	const n, batch = 200_000, 10_000
	now := func() time.Time { return testNow }
	srv := NewServer(slog.New(slog.DiscardHandler), testConfig(t, ""), prometheus.NewRegistry(), now)
	// A small block cache, so that Pebble's cache (Go memory in a build
	// without cgo) cannot pass for the export's.
	st, err := store.Open(store.Options{Dir: t.TempDir(), Now: now, CacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv.store.Store(st)
	for b := range n / batch {
		v := &validator{cfg: srv.cfg.Load(), now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
		records := make([]store.Record, batch)
		for i := range records {
			k := b*batch + i
			id, tp, customer, email, wait := fmt.Sprintf("e-%07d", k), "chat", fmt.Sprintf("=c-%d", k%5000), fmt.Sprintf("c%d@example.com", k%5000), float64(k%600)
			rec, ierr := v.event(i, &eventIn{ID: &id, Touchpoint: &tp, Customer: &customer, WaitSeconds: &wait, Contact: &contactIn{Email: &email}})
			if ierr != nil {
				t.Fatal(ierr)
			}
			records[i] = rec
		}
		if _, err := st.Submit(context.Background(), records); err != nil {
			t.Fatal(err)
		}
	}
	// Background compactions of what was just written hold memory of
	// their own: let them finish first.
	waitFor(t, func() bool { return st.DB().Metrics().Compact.NumInProgress == 0 })

	req := httptest.NewRequest(http.MethodGet, "/v1/export?touchpoint=chat&format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	// A first export opens what any read of the store opens (its tables'
	// readers and indexes): memory that stays and is not the export's.
	srv.Handler().ServeHTTP(&heapSampler{}, req)
	// The export writes to a response writer that samples the live heap
	// every 2 MiB, in the handler's own goroutine: the export is paused
	// while it is measured, so no garbage it makes meanwhile is counted.
	w := &heapSampler{live: liveHeap, every: 2 << 20}
	w.base = liveHeap()
	w.peak = w.base
	srv.Handler().ServeHTTP(w, req)
	growth := int64(w.peak) - int64(w.base)
	t.Logf("CSV export of %d records: %d bytes; live heap grew by at most %d KiB over %d samples", n, w.total, growth>>10, w.samples)
	if w.code != 200 || w.rows != n+1 || !bytes.HasPrefix(w.first, []byte("id,time,customer,touchpoint,waitSeconds,handleSeconds,resolved,segment\ne-0000000,2026-11-23T12:00:30Z,'=c-0,chat,0,,,\n")) {
		t.Fatalf("export: %d, %d lines, starting %q", w.code, w.rows, w.first)
	}
	const bound = 1 << 20
	if growth > bound {
		t.Errorf("live heap grew by %d bytes during the export, more than %d: the export is held in memory", growth, bound)
	}
	if w.total < 3*bound || w.samples < 5 {
		t.Errorf("the export is %d bytes in %d samples: too few to tell streaming from buffering", w.total, w.samples)
	}
}

// liveHeap is the heap that survives collection. Two collections: the
// first moves sync.Pool's buffers (the store's log writer keeps some) to a
// victim cache, the second frees them.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heapSampler is a ResponseWriter that counts what it is sent and, with
// live set, samples the live heap every so many bytes.
type heapSampler struct {
	header                     http.Header
	code, total, rows, samples int
	first                      []byte
	live                       func() uint64
	every, next                int
	base, peak                 uint64
}

func (w *heapSampler) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *heapSampler) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *heapSampler) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.first == nil {
		w.first = append([]byte(nil), p[:min(len(p), 200)]...)
	}
	w.total += len(p)
	w.rows += bytes.Count(p, []byte{'\n'})
	if w.live != nil && w.total >= w.next {
		w.peak = max(w.peak, w.live())
		w.samples++
		w.next = w.total + w.every
	}
	return len(p), nil
}
