package loadgen

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCollector acknowledges every record, rejects an id seen before as
// a duplicate, and answers every throttleEvery-th request with a 429.
type fakeCollector struct {
	throttleEvery int64
	requests      atomic.Int64
	mu            sync.Mutex
	ids           map[string]bool
}

func (f *fakeCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := f.requests.Add(1); f.throttleEvery > 0 && n%f.throttleEvery == 0 {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	var recs []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&recs); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	var a Answer
	for _, rec := range recs {
		if f.ids[rec.ID] {
			a.Duplicates++
		} else {
			f.ids[rec.ID] = true
			a.Accepted++
		}
	}
	f.mu.Unlock()
	_, _ = w.Write([]byte(`{"accepted":` + strconv.Itoa(a.Accepted) + `,"duplicates":` + strconv.Itoa(a.Duplicates) + `}`))
}

func uniqueEvents(w int, seq int64, rng *rand.Rand) ([]byte, int) {
	return Events("w"+strconv.Itoa(w)+"-"+strconv.FormatInt(seq, 10), 10, time.Now(), 0, rng), 10
}

func TestClosedLoopCountsAcknowledgedRecords(t *testing.T) {
	f := &fakeCollector{throttleEvery: 7, ids: map[string]bool{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	st, err := ClosedLoop(t.Context(), NewClient(4), srv.URL, "tok", 4, 300*time.Millisecond, uniqueEvents)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests == 0 || st.Events != 10*st.Requests || st.Duplicates != 0 {
		t.Errorf("stats %s: want 10 records per request, no duplicates", st)
	}
	if int64(len(f.ids)) != st.Events {
		t.Errorf("server stored %d records, stats count %d", len(f.ids), st.Events)
	}
	if st.Throttled == 0 || int64(len(st.Latencies)) != st.Requests {
		t.Errorf("stats %s: want some 429s retried and one latency per acknowledged request", st)
	}
}

func TestClosedLoopStopsOnAFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer srv.Close()
	start := time.Now()
	_, err := ClosedLoop(t.Context(), NewClient(2), srv.URL, "tok", 2, 10*time.Second, uniqueEvents)
	if err == nil {
		t.Fatal("a 500 did not fail the run")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the run went on for %s after a failure", time.Since(start))
	}
}

func TestOpenLoopKeepsTheSchedule(t *testing.T) {
	f := &fakeCollector{throttleEvery: 5, ids: map[string]bool{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	st, err := OpenLoop(t.Context(), NewClient(16), srv.URL, "tok", 200, 500*time.Millisecond, 16, uniqueEvents)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 100 {
		t.Errorf("%d requests acknowledged, want 200/s × 0.5s = 100", st.Requests)
	}
	if st.Throttled == 0 || int64(len(f.ids)) != st.Events {
		t.Errorf("stats %s, server stored %d: want 429s retried and every record counted once", st, len(f.ids))
	}
}

func TestOpenLoopCountsAStallAgainstEveryDelayedRequest(t *testing.T) {
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if first.CompareAndSwap(false, true) {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = w.Write([]byte(`{"accepted":10,"duplicates":0}`))
	}))
	defer srv.Close()
	// One request in flight at a time: while the first stalls, the
	// schedule slips, and the slipped requests must carry the delay.
	st, err := OpenLoop(t.Context(), NewClient(1), srv.URL, "tok", 100, 200*time.Millisecond, 1, uniqueEvents)
	if err != nil {
		t.Fatal(err)
	}
	if p50 := st.Percentile(0.5); p50 < 100*time.Millisecond {
		t.Errorf("p50 %s: the requests queued behind a 300ms stall must count their wait", p50)
	}
}
