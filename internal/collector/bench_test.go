package collector

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/loadgen"
)

// BenchmarkIngest runs batches of 100 events through the handler and the
// real store (fsync included), without the network.
func BenchmarkIngest(b *testing.B) {
	c := startCollector(b, b.TempDir(), testConfigB(b))
	h := c.srv.Handler()
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(uint64(n.Add(1)), 1))
		for pb.Next() {
			body := loadgen.Events("b"+strconv.FormatInt(n.Add(1), 10), 100, testNow, 0, rng)
			body = bytes.ReplaceAll(body, []byte(`"load"`), []byte(`"chat"`))
			req := httptest.NewRequest("POST", "/v1/events", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+chatToken)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

func testConfigB(b *testing.B) *settings {
	cfg, err := parseConfig([]byte("touchpoints: [{name: chat, waitThreshold: 2m, tokenSHA256: [" + collectorapi.HashToken(chatToken) + "]}]"))
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkValidateEvents decodes and validates a batch of 100 events
// (the ingest path's CPU work before the store), without the network or
// the disk.
func BenchmarkValidateEvents(b *testing.B) {
	cfg := testConfigB(b)
	rng := rand.New(rand.NewPCG(1, 1))
	body := loadgen.Events("v", 100, testNow, 0, rng)
	body = bytes.ReplaceAll(body, []byte(`"load"`), []byte(`"chat"`))
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		v := &validator{cfg: cfg, now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
		if _, err := validateAll(body, decodeEventsPlain, v.event); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkValidateEventsWithContacts is BenchmarkValidateEvents with a
// contact on every event: what storing the contact apart (its own JSON,
// and the fingerprint over the record with it) adds.
func BenchmarkValidateEventsWithContacts(b *testing.B) {
	cfg := testConfigB(b)
	rng := rand.New(rand.NewPCG(1, 1))
	body := loadgen.Events("v", 100, testNow, 0, rng)
	body = bytes.ReplaceAll(body, []byte(`"load"`), []byte(`"chat"`))
	body = bytes.ReplaceAll(body, []byte(`"touchpoint":"chat"`), []byte(`"touchpoint":"chat","contact":{"email":"ada.lovelace@example.com","phone":"+49 30 1234567"}`))
	if !bytes.Contains(body, []byte(`"contact"`)) {
		b.Fatal("no contact in the events")
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		v := &validator{cfg: cfg, now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
		if _, err := validateAll(body, decodeEventsPlain, v.event); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRepeatedKey scans a batch of 100 events for a repeated key, the
// part of BenchmarkValidateEvents that refuses {"a":1,"a":2}.
func BenchmarkRepeatedKey(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	body := loadgen.Events("v", 100, testNow, 0, rng)
	b.SetBytes(int64(len(body)))
	for range b.N {
		if _, repeated := repeatedKey(body); repeated {
			b.Fatal("repeated key")
		}
	}
}
