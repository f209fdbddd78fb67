// Package tour is the data the end-to-end tiers post against
// config/samples, and the numbers status must then show: the same tour in
// `cxop dev` (test/e2e) and in a real cluster (test/cluster).
package tour

import (
	"encoding/json"
	"fmt"
	"time"
)

// InBusinessHours returns the latest whole second before now that falls in
// the support chat's business hours (weekdays 08:00-20:00, Saturday
// 10:00-16:00, Europe/Berlin), so that its waits are judged.
func InBusinessHours(now time.Time) (time.Time, error) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		return time.Time{}, err
	}
	at := now.Add(-time.Minute).Truncate(time.Second)
	for range 7 * 24 * 60 {
		l := at.In(berlin)
		h := l.Hour()
		switch {
		case l.Weekday() >= time.Monday && l.Weekday() <= time.Friday && h >= 8 && h < 20,
			l.Weekday() == time.Saturday && h >= 10 && h < 16:
			return at, nil
		}
		at = at.Add(-time.Minute)
	}
	return time.Time{}, fmt.Errorf("no business hours in a week")
}

// Batch is one request body: NDJSON lines for path, sent with the token in
// Secret.
type Batch struct {
	Path, Secret string
	Lines        []string
}

// Batches returns the tour's interactions and answers, all at time at:
//   - support chat: 114 waits of 30s and 6 of 5m: exactly 95% within 2m;
//   - support NPS: 54 promoters, 3 passives, 3 detractors: NPS 85;
//   - delivery CSAT: 20 of 40 satisfied: 50%.
func Batches(at time.Time) []Batch {
	stamp := at.UTC().Format(time.RFC3339)
	var events, nps, csat []string
	for i := range 120 {
		wait := 30
		if i < 6 {
			wait = 300
		}
		events = append(events, fmt.Sprintf(`{"id":"chat-%d","touchpoint":"support-chat","customer":"c%d","time":%q,"waitSeconds":%d}`, i, i, stamp, wait))
	}
	for i := range 60 {
		score := 10
		switch {
		case i >= 57:
			score = 3
		case i >= 54:
			score = 8
		}
		nps = append(nps, fmt.Sprintf(`{"id":"nps-%d","survey":"support-nps","customer":"c%d","score":%d,"time":%q}`, i, i, score, stamp))
	}
	for i := range 40 {
		score := 5
		if i >= 20 {
			score = 2
		}
		csat = append(csat, fmt.Sprintf(`{"id":"csat-%d","survey":"delivery-csat","customer":"c%d","score":%d,"time":%q}`, i, i, score, stamp))
	}
	return []Batch{
		{"/v1/events", "cxop-touchpoint-support-chat", events},
		{"/v1/responses", "cxop-survey-support-nps", nps},
		{"/v1/responses", "cxop-survey-delivery-csat", csat},
	}
}

// Target is what a CXTarget's status must show after the tour.
type Target struct {
	State, Current, Budget string
	Samples                int
	Burn                   []map[string]string
}

// Targets returns every sample CXTarget's status after the tour's data,
// posted at time at and read at now: a lookback burns only if it reaches
// back to at.
func Targets(now, at time.Time) map[string]Target {
	burn := func(rate string) []map[string]string {
		var out []map[string]string
		for _, w := range []struct {
			name string
			d    time.Duration
		}{{"1h", time.Hour}, {"6h", 6 * time.Hour}, {"1d", 24 * time.Hour}, {"3d", 72 * time.Hour}} {
			r := "0"
			if now.Sub(at) < w.d-time.Minute {
				r = rate
			}
			out = append(out, map[string]string{"window": w.name, "rate": r})
		}
		return out
	}
	return map[string]Target{
		// 6 bad of a budget of 5% x 120 = 6: nothing left; AtRisk.
		"chat-wait-2m": {"AtRisk", "95", "0", 120, burn("1")},
		// x = (100 x 51 - 40 x 60) / 140 = 19.29 further detractors, 32.1%.
		"support-nps-40": {"Met", "85", "32.1", 60, burn("0.25")},
		// 50% with its interval wholly below 85%: x = 100 x 20 / 85 - 40.
		"delivery-csat-85": {"Breached", "50", "-41.2", 40, burn("3.33")},
	}
}

// ReadTargets reads `kubectl get cxtargets -o json` into what Targets
// returns, by target name.
func ReadTargets(list []byte) (map[string]Target, error) {
	var l struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				State                string
				Current              string
				ErrorBudgetRemaining string
				Samples              int
				BurnRates            []map[string]string
			}
		}
	}
	if err := json.Unmarshal(list, &l); err != nil {
		return nil, err
	}
	got := map[string]Target{}
	for _, it := range l.Items {
		s := it.Status
		got[it.Metadata.Name] = Target{State: s.State, Current: s.Current, Budget: s.ErrorBudgetRemaining, Samples: s.Samples, Burn: s.BurnRates}
	}
	return got, nil
}
