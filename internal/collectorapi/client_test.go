package collectorapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSharesOneRequestAcrossCallersAndExpires(t *testing.T) {
	var requests atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "Bearer read" {
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		if got := r.URL.Query().Get("window"); got != "28d" {
			t.Errorf("window = %q", got)
		}
		<-release
		_, _ = w.Write([]byte(`{"touchpoints":{"chat":{"interactions":7}},"surveys":{}}`))
	}))
	defer srv.Close()

	now := time.Unix(1000, 0)
	c := New(10 * time.Second)
	c.now = func() time.Time { return now }
	target := Target{BaseURL: srv.URL, Token: "read"}

	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			all, err := c.All(context.Background(), target, "28d", nil)
			if err != nil || all.Touchpoints["chat"].Interactions != 7 {
				t.Errorf("All = %+v, %v", all, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := requests.Load(); n != 1 {
		t.Fatalf("50 concurrent callers made %d requests, want 1", n)
	}

	now = now.Add(9 * time.Second)
	if _, err := c.All(context.Background(), target, "28d", nil); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("a call within the TTL made a request (%d in all)", n)
	}
	now = now.Add(time.Second)
	if _, err := c.All(context.Background(), target, "28d", nil); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("a call after the TTL made no request (%d in all)", n)
	}
	c.Forget(srv.URL)
	if _, err := c.All(context.Background(), target, "28d", nil); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("a call after Forget made no request (%d in all)", n)
	}

	// An answer that lacks what the caller needs is fetched again once it
	// is a second old, not served for the whole TTL.
	hasPhone := func(a *AllSummary) bool { return a.Touchpoints["phone"] != nil }
	if _, err := c.All(context.Background(), target, "28d", hasPhone); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("a lacking answer younger than a second was fetched again (%d requests)", n)
	}
	now = now.Add(time.Second)
	if _, err := c.All(context.Background(), target, "28d", hasPhone); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 4 {
		t.Fatalf("a lacking answer a second old was not fetched again (%d requests)", n)
	}
}

func TestReportsWhyTheCollectorCouldNotAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"the collector is not ready"}`))
	}))
	c := New(time.Minute)
	_, err := c.All(context.Background(), Target{BaseURL: srv.URL, Token: "t"}, "1h", nil)
	if !IsUnavailable(err) || err.Error() != "the collector answered 503: the collector is not ready" {
		t.Fatalf("err = %v", err)
	}
	srv.Close()
	_, err = c.Touchpoints(context.Background(), Target{BaseURL: srv.URL, Token: "t"}, "1h", []string{"b", "a"})
	if !IsUnavailable(err) {
		t.Fatalf("closed server: err = %v, want Unavailable", err)
	}
}

func TestCountsDecodeTheSameAnswerLeanAndApart(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte(`{"touchpoints":{"chat":{"window":"1h","interactions":9,"assessedWaits":8,"compliantWaits":6,"resolvedKnown":4,"resolved":3}},
			"surveys":{"nps":{"window":"1h","responses":3,"distribution":[1,0,0,0,0,0,0,0,0,0,2],"invitations":{"invited":9,"sent":7}}}}`))
	}))
	defer srv.Close()
	c := New(10 * time.Second)
	target := Target{BaseURL: srv.URL, Token: "read"}

	counts, err := c.Counts(context.Background(), target, "1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *counts.Touchpoints["chat"], (TouchpointCounts{AssessedWaits: 8, CompliantWaits: 6, ResolvedKnown: 4, Resolved: 3}); got != want {
		t.Errorf("touchpoint counts = %+v, want %+v", got, want)
	}
	if got := counts.Surveys["nps"].Distribution; len(got) != 11 || got[0] != 1 || got[10] != 2 {
		t.Errorf("survey distribution = %v", got)
	}
	if sv := counts.Surveys["nps"]; sv.Responses != 3 || sv.Invitations == nil || sv.Invitations.Sent != 7 {
		t.Errorf("survey responses %d, invitations %+v; want 3 and 7 sent", sv.Responses, sv.Invitations)
	}
	all, err := c.All(context.Background(), target, "1h", nil)
	if err != nil || all.Touchpoints["chat"].Interactions != 9 {
		t.Fatalf("All after Counts = %+v, %v: the lean answer was served as the full one", all, err)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("%d requests, want one per decoded type", n)
	}
	c.Forget(srv.URL)
	if _, err := c.Counts(context.Background(), target, "1h", nil); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("Forget kept the counts (%d requests)", n)
	}
}

// TestDropsExpiredAnswers: windows that follow the clock are asked for once
// each; their answers must not pile up in the cache.
func TestDropsExpiredAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"touchpoints":{},"surveys":{}}`))
	}))
	defer srv.Close()
	now := time.Unix(1000, 0)
	c := New(10 * time.Second)
	c.now = func() time.Time { return now }
	target := Target{BaseURL: srv.URL, Token: "read"}
	for minute := range 100 {
		if _, err := c.Counts(context.Background(), target, fmt.Sprintf("1d%dm", minute+1), nil); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Minute)
	}
	c.mu.Lock()
	n := len(c.cache)
	c.mu.Unlock()
	if n > 2 {
		t.Errorf("%d answers cached after 100 one-off windows a minute apart, want at most 2", n)
	}
}

// TestOnFetchHearsRequestsNotCacheHits: OnFetch is told each request the
// client sends, with its namespace and outcome, and nothing of the answers
// served from the cache.
func TestOnFetchHearsRequestsNotCacheHits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"touchpoints":{},"surveys":{}}`))
	}))
	defer srv.Close()
	var mu sync.Mutex
	var heard []string
	c := New(time.Minute)
	c.OnFetch = func(t Target, err error) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, fmt.Sprintf("%s %v", t.Namespace, err))
	}
	target := Target{BaseURL: srv.URL, Token: "read", Namespace: "shop"}
	for range 5 {
		if _, err := c.All(context.Background(), target, "1h", nil); err != nil {
			t.Fatal(err)
		}
	}
	srv.Close()
	if _, err := c.All(context.Background(), target, "2h", nil); !IsUnavailable(err) {
		t.Fatalf("closed server: %v", err)
	}
	if len(heard) != 2 || heard[0] != "shop <nil>" || !strings.HasPrefix(heard[1], "shop the collector did not answer") {
		t.Errorf("OnFetch heard %q, want one answer and one failure", heard)
	}
}
