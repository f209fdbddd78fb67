package collector

import (
	"testing"
)

// TestRecordsSkipTheFeedNoSurveyWants: a record goes to the survey
// engine's feed (PostgreSQL) only when the config acts on it: an
// interaction at a touchpoint some survey's trigger names, an answer to a
// survey with a closed loop. The rest are stored without a feed entry.
func TestRecordsSkipTheFeedNoSurveyWants(t *testing.T) {
	cfg := mustParse(t, `
touchpoints:
  - name: chat
  - name: web
surveys:
  - name: after-chat
    type: NPS
    trigger: {touchpoints: [chat]}
  - name: closed
    type: NPS
    detractorWebhook: {url: "https://hooks.example.com/d", key: d}
  - name: plain
    type: CSAT
`)
	v := &validator{cfg: cfg, now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
	customer := "c1"
	for _, tc := range []struct {
		touchpoint string
		skip       bool
	}{{"chat", false}, {"web", true}} {
		id, tp := "e-"+tc.touchpoint, tc.touchpoint
		rec, ierr := v.event(0, &eventIn{ID: &id, Touchpoint: &tp, Customer: &customer})
		if ierr != nil {
			t.Fatal(ierr)
		}
		if rec.SkipFeed != tc.skip {
			t.Errorf("interaction at %s: SkipFeed %v, want %v", tc.touchpoint, rec.SkipFeed, tc.skip)
		}
	}
	for _, tc := range []struct {
		survey string
		skip   bool
	}{{"closed", false}, {"after-chat", true}, {"plain", true}} {
		id, sv, score := "r-"+tc.survey, tc.survey, 3.0
		rec, ierr := v.response(0, &responseIn{ID: &id, Survey: &sv, Customer: &customer, Score: &score})
		if ierr != nil {
			t.Fatal(ierr)
		}
		if rec.SkipFeed != tc.skip {
			t.Errorf("answer to %s: SkipFeed %v, want %v", tc.survey, rec.SkipFeed, tc.skip)
		}
	}
}
