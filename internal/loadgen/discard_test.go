package loadgen

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCountRecords(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int
	}{
		{"", 0},
		{"[]", 0},
		{" [ ] ", 0},
		{`{"id":"a"}`, 1},
		{`[{"id":"a"}]`, 1},
		{`[{"id":"a,b"},{"id":"]}"}]`, 2},
		{`[{"id":"\"},{"}, {"c":{"d":[1,2]}}]`, 2},
		{`["x,y", 3]`, 2},
		{"{\"id\":\"a\"}\n{\"id\":\"b\"}\n\n{\"id\":\"{\"}\n", 3},
	} {
		if got := CountRecords([]byte(tc.body)); got != tc.want {
			t.Errorf("CountRecords(%q) = %d, want %d", tc.body, got, tc.want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if got := CountRecords(Events("e", 100, time.Now(), time.Hour, rng)); got != 100 {
		t.Errorf("CountRecords(Events(100)) = %d", got)
	}
	if got := CountRecords(Responses("r", 1000, time.Now(), time.Hour, rng)); got != 1000 {
		t.Errorf("CountRecords(Responses(1000)) = %d", got)
	}
}

func TestDiscardHandlerAnswersLikeTheCollector(t *testing.T) {
	srv := httptest.NewServer(DiscardHandler())
	defer srv.Close()
	body := Events("e", 7, time.Now(), 0, rand.New(rand.NewPCG(1, 2)))
	rep, err := Post(t.Context(), srv.Client(), srv.URL+"/v1/events", "tok", body)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Code != 200 || rep.Answer != (Answer{Accepted: 7}) {
		t.Fatalf("reply %+v, want 200 accepted=7", rep)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{"0", 0, true},
		{now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
	} {
		got, err := RetryAfter(tc.h, now)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("RetryAfter(%q) = %s, %v; want %s, ok=%v", tc.h, got, err, tc.want, tc.ok)
		}
	}
}

func TestPostTreatsOtherCodesAsFailures(t *testing.T) {
	for _, code := range []int{201, 400, 401, 403, 413, 500, 503} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
		}))
		_, err := Post(t.Context(), srv.Client(), srv.URL, "tok", []byte("[]"))
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(code)) {
			t.Errorf("code %d: err = %v, want a failure", code, err)
		}
	}
}

func TestPostRetryingHonoursRetryAfter(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls++
		if calls == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = w.Write([]byte(`{"accepted":0,"duplicates":0}`))
	}))
	defer srv.Close()
	start := time.Now()
	rep, throttled, err := PostRetrying(t.Context(), srv.Client(), srv.URL, "tok", []byte("[]"))
	if err != nil || rep.Code != 200 || throttled != 1 {
		t.Fatalf("PostRetrying = %+v, %d, %v", rep, throttled, err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %s, before the 1s Retry-After", waited)
	}
	// Without Retry-After a 429 is a failure.
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer bare.Close()
	if _, _, err := PostRetrying(t.Context(), bare.Client(), bare.URL, "tok", []byte("[]")); err == nil {
		t.Error("a 429 without Retry-After was accepted")
	}
}
