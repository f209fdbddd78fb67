package engine

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// answer stores NPS answers of survey at the fixture's now, with ids
// prefix0, prefix1, … and the given scores.
func (f *fixture) answer(survey, prefix string, scores ...int) {
	f.t.Helper()
	records := make([]store.Record, 0, len(scores))
	for i, value := range scores {
		id := prefix
		if len(scores) > 1 {
			id = fmt.Sprintf("%s%d", prefix, i)
		}
		js := fmt.Sprintf(`{"id":%q,"survey":%q,"customer":"c-%s","score":%d,"time":%q}`, id, survey, id, value, f.now.Format(time.RFC3339Nano))
		records = append(records, store.Record{Kind: rollup.KindSurvey, Subject: survey, ID: id, JSON: []byte(js),
			Response: rollup.Response{Time: f.now.UnixNano(), CustomerHash: 1, Score: value}})
	}
	f.submit(records)
}

func (f *fixture) followUp(survey, responseID string, at time.Time) {
	f.t.Helper()
	if _, err := f.e.FollowUp(survey, detractorID(survey, responseID), at); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) closedLoop(survey string, since time.Time) ClosedLoop {
	f.t.Helper()
	c, err := f.e.ClosedLoopStats(survey, since)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestClosedLoopStatsCountOpenDetractorsAndFollowUpTimes(t *testing.T) {
	onBothStores(t, testClosedLoopStatsCountOpenDetractorsAndFollowUpTimes)
}

func testClosedLoopStatsCountOpenDetractorsAndFollowUpTimes(t *testing.T, kind storeKind) {
	rcv := newReceiver(t)
	f := newFixtureOn(t, kind, Config{Surveys: []Survey{{Name: "nps", Kind: score.NPS, DetractorWebhook: rcv.endpoint()}}})
	f.answer("nps", "d1", 3)
	f.answer("nps", "p1", 9) // a promoter is not a detractor
	f.answer("nps", "d2", 5)
	f.step()
	f.now = t0.Add(10 * 24 * time.Hour)
	f.answer("nps", "d3", 0)
	f.step()

	f.followUp("nps", "d1", t0.Add(time.Hour))
	f.followUp("nps", "d1", t0.Add(2*time.Hour)) // again: the first time stays
	f.followUp("nps", "d3", f.now.Add(30*time.Minute))

	want := func(got ClosedLoop, open, followed uint64, p50 time.Duration) {
		t.Helper()
		if got.Open != open || got.FollowedUp != followed || !got.HasFollowUpTimes || got.FollowUpP50 != p50 {
			t.Errorf("closed loop %+v, want open %d, followed up %d, p50 %s", got, open, followed, p50)
		}
	}
	// Since before every answer: d1 after 1h and d3 after 30m; the lower
	// median of two is the shorter. d2 is open.
	want(f.closedLoop("nps", t0.Add(-time.Hour)), 1, 2, 30*time.Minute)
	// Since after d1's answer: only d3's follow-up; open counts any age.
	want(f.closedLoop("nps", t0.Add(5*24*time.Hour)), 1, 1, 30*time.Minute)
	if got := f.closedLoop("other", t0.Add(-time.Hour)); got != (ClosedLoop{}) {
		t.Errorf("a survey without detractors: %+v", got)
	}

	// A store written before the counters and the index existed is
	// indexed once, on start, to the same figures.
	f.write(func(b kv.Batch) {
		for _, r := range [][2]string{{prefixLoop, "s/loop0"}, {prefixFollow, "s/fu0"}} {
			_ = b.DeleteRange([]byte(r[0]), []byte(r[1]))
		}
		_ = b.Delete([]byte(keyLoopIndexed))
	})
	if got := f.closedLoop("nps", t0.Add(-time.Hour)); got.Open != 0 || got.FollowedUp != 0 {
		t.Fatalf("without its index the closed loop reads %+v; the test removed nothing", got)
	}
	f.restart()
	want(f.closedLoop("nps", t0.Add(-time.Hour)), 1, 2, 30*time.Minute)
	want(f.closedLoop("nps", t0.Add(5*24*time.Hour)), 1, 1, 30*time.Minute)
}

// BenchmarkClosedLoopStats reads the closed loop of a survey with 20,000
// detractors, 200 of them followed up.
func BenchmarkClosedLoopStats(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	b.Cleanup(srv.Close)
	f := newFixture(b, Config{Surveys: []Survey{{Name: "nps", Kind: score.NPS, DetractorWebhook: &webhook.Endpoint{URL: srv.URL, Key: hookKey}}}})
	scores := make([]int, 20000)
	for i := range scores {
		scores[i] = i % 7
	}
	f.answer("nps", "d", scores...)
	for range 2 { // 10,000 records a step
		f.step()
	}
	for i := range 200 {
		f.followUp("nps", fmt.Sprintf("d%d", i*100), t0.Add(time.Duration(i)*time.Minute))
	}
	for b.Loop() {
		if c := f.closedLoop("nps", t0.Add(-time.Hour)); c.Open != 19800 || c.FollowedUp != 200 {
			b.Fatalf("closed loop %+v", c)
		}
	}
}
