package rollup

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func ev(t time.Time, customer uint64, wait float64, compliant bool) NamedEvent {
	return NamedEvent{Touchpoint: "chat", Event: Event{
		Time: t.UnixNano(), CustomerHash: customer, HasWait: true, WaitSeconds: wait,
		Assessed: true, Compliant: compliant,
	}}
}

// TestWindowEdges pins which records a window counts: [end-window, end)
// with end rounded up to the minute, so the current minute is in.
func TestWindowEdges(t *testing.T) {
	now := t0.Add(30 * time.Second) // 12:00:30
	s := NewSet(DefaultRetention)
	s.Apply(&Batch{Events: []NamedEvent{
		ev(t0.Add(-time.Hour+time.Minute), 1, 1, true),                 // 11:01:00, first instant of a 1h window
		ev(t0.Add(-time.Hour+time.Minute-time.Nanosecond), 2, 1, true), // 11:00:59.999999999, just before it
		ev(t0.Add(29*time.Second), 3, 1, true),                         // 12:00:29, the current minute
		ev(t0.Add(-2*time.Hour), 4, 1, false),
	}})
	cases := []struct {
		window time.Duration
		want   uint64
		start  time.Time
	}{
		{time.Hour, 2, t0.Add(-time.Hour + time.Minute)},
		{time.Minute, 1, t0},
		{3 * time.Hour, 4, t0.Add(-3*time.Hour + time.Minute)},
	}
	for _, c := range cases {
		a, w, err := s.TouchpointWindow([]string{"chat"}, c.window, now, now)
		if err != nil {
			t.Fatal(err)
		}
		if a.Interactions != c.want {
			t.Errorf("window %s: %d interactions, want %d", c.window, a.Interactions, c.want)
		}
		if got := time.Unix(0, w.Start).UTC(); !got.Equal(c.start) {
			t.Errorf("window %s starts %s, want %s", c.window, got, c.start)
		}
		if got := time.Unix(0, w.End).UTC(); !got.Equal(t0.Add(time.Minute)) {
			t.Errorf("window %s ends %s, want %s", c.window, got, t0.Add(time.Minute))
		}
	}
}

// TestTilingMatchesBruteForce checks, for random records and windows, that
// the tiled buckets count exactly the records in the window they report.
func TestTilingMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := t0
	s := NewSet(DefaultRetention)
	var times []int64
	var b Batch
	for range 20000 {
		at := now.Add(-time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
		times = append(times, at.UnixNano())
		b.Events = append(b.Events, ev(at, rng.Uint64(), 1, true))
	}
	s.Apply(&b)
	windows := []time.Duration{time.Minute, 5 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 3 * 24 * time.Hour, 28 * 24 * time.Hour, 50 * 24 * time.Hour}
	for _, w := range windows {
		for range 20 {
			end := now.Add(-time.Duration(rng.Int64N(int64(10 * 24 * time.Hour))))
			a, win, err := s.TouchpointWindow([]string{"chat"}, w, end, now)
			if err != nil {
				t.Fatal(err)
			}
			var want uint64
			for _, x := range times {
				if x >= win.Start && x < win.End {
					want++
				}
			}
			if a.Interactions != want {
				t.Fatalf("window %s ending %s: tiled %d, brute force %d in [%s, %s)", w, end, a.Interactions, want,
					time.Unix(0, win.Start).UTC(), time.Unix(0, win.End).UTC())
			}
			if got := time.Duration(win.End - win.Start); got > w || got < w-24*time.Hour {
				t.Fatalf("window %s ending %s covers %s", w, end, got)
			}
		}
	}
}

// TestWaitPercentilesWithinOnePercent checks the DDSketch guarantee
// against exact quantiles of the same data, after merging buckets.
func TestWaitPercentilesWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := NewSet(DefaultRetention)
	var waits []float64
	var b Batch
	for i := range 50000 {
		w := math.Exp(rng.NormFloat64()*1.2 + 3.5) // log-normal, median ~33s
		waits = append(waits, w)
		b.Events = append(b.Events, ev(t0.Add(-time.Duration(i)*time.Minute/10), mix(uint64(i)), w, w <= 120))
	}
	s.Apply(&b)
	sort.Float64s(waits)
	end := t0.Add(time.Second) // t0 itself holds a record; the window is [start, end)
	a, _, err := s.TouchpointWindow([]string{"chat"}, 28*24*time.Hour, end, end)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []float64{0.5, 0.95, 0.99} {
		got, ok := a.WaitQuantile(q)
		exact := waits[int(q*float64(len(waits)-1))]
		if !ok || math.Abs(got-exact)/exact > RelativeAccuracy {
			t.Errorf("p%g = %.3f, exact %.3f: relative error %.4f > %.2f", q*100, got, exact, math.Abs(got-exact)/exact, RelativeAccuracy)
		}
	}
	var compliant uint64
	for _, w := range waits {
		if w <= 120 {
			compliant++
		}
	}
	if a.Compliant != compliant || a.Assessed != uint64(len(waits)) {
		t.Errorf("compliance %d/%d, want %d/%d", a.Compliant, a.Assessed, compliant, len(waits))
	}
	if est := a.Customers.Estimate(); math.Abs(float64(est)-50000)/50000 > 0.03 {
		t.Errorf("distinct customers %d, want 50000 within 3%%", est)
	}
}

// TestCheckpointRoundTrip flushes a set, loads it into another and expects
// the same answers, and deletions for buckets past retention.
func TestCheckpointRoundTrip(t *testing.T) {
	s := NewSet(DefaultRetention)
	s.Apply(&Batch{
		Events: []NamedEvent{ev(t0.Add(-time.Hour), 1, 30, true), ev(t0.Add(-30*time.Hour), 2, 300, false)},
		Responses: []NamedResponse{
			{Survey: "nps", Response: Response{Time: t0.Add(-time.Hour).UnixNano(), CustomerHash: 1, Score: 10}},
			{Survey: "nps", Response: Response{Time: t0.Add(-2 * time.Hour).UnixNano(), CustomerHash: 2, Score: 3}},
		},
	})
	entries, err := s.Flush(t0)
	if err != nil {
		t.Fatal(err)
	}
	// Events: 2 minute + 2 hour + 2 day buckets; answers: 2 + 2 + 1 (same day).
	if len(entries) != 11 {
		t.Errorf("flush wrote %d entries, want 11", len(entries))
	}
	again, _ := s.Flush(t0)
	if len(again) != 0 {
		t.Errorf("second flush wrote %d entries, want 0 (nothing changed)", len(again))
	}
	l := NewSet(DefaultRetention)
	for _, e := range entries {
		if err := l.Load(e.Key, e.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []time.Duration{time.Hour + time.Minute, 2 * 24 * time.Hour} {
		a1, _, _ := s.TouchpointWindow([]string{"chat"}, w, t0, t0)
		a2, _, _ := l.TouchpointWindow([]string{"chat"}, w, t0, t0)
		p1, _ := a1.WaitQuantile(0.5)
		p2, _ := a2.WaitQuantile(0.5)
		if a1.Interactions != a2.Interactions || a1.Compliant != a2.Compliant || p1 != p2 || a1.Last != a2.Last ||
			a1.Customers.Estimate() != a2.Customers.Estimate() {
			t.Errorf("window %s: loaded %+v, want %+v", w, a2, a1)
		}
		s1, _, _ := s.SurveyWindow("nps", w, t0, t0)
		s2, _, _ := l.SurveyWindow("nps", w, t0, t0)
		if s1.Counts != s2.Counts || s1.Last != s2.Last {
			t.Errorf("window %s: loaded survey %v, want %v", w, s2.Counts, s1.Counts)
		}
	}
	// Three days later the minute buckets are past the 48h horizon.
	later, err := l.Flush(t0.Add(72 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	deletes := 0
	for _, e := range later {
		if e.Value == nil {
			deletes++
		}
	}
	if deletes != 4 {
		t.Errorf("flush after 72h deleted %d buckets, want the 4 minute buckets", deletes)
	}
}

func TestParseBucketKeyRejectsGarbage(t *testing.T) {
	for _, k := range [][]byte{nil, []byte("a"), []byte("aechat"), append([]byte("aechat\x00\x09"), make([]byte, 8)...)} {
		if _, _, _, err := parseBucketKey(k); err == nil {
			t.Errorf("parseBucketKey(%q) accepted garbage", k)
		}
	}
	k := bucketKey(KindSurvey, "nps-after-support", BucketKey{Hour, t0.UnixNano()})
	kind, name, bk, err := parseBucketKey(k)
	if err != nil || kind != KindSurvey || name != "nps-after-support" || bk.Res != Hour || bk.Start != t0.UnixNano() {
		t.Errorf("round trip: %v %q %+v %v", kind, name, bk, err)
	}
}

// mix is splitmix64: customer hashes must look random, as xxhash makes them.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
