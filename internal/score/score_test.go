package score

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 0.005 }

func dist(pairs ...int) []uint64 {
	c := make([]uint64, 11)
	for i := 0; i < len(pairs); i += 2 {
		c[pairs[i]] += uint64(pairs[i+1])
	}
	return c
}

func TestCompute(t *testing.T) {
	cases := []struct {
		name                string
		kind                Kind
		counts              []uint64
		n                   uint64
		value, lower, upper float64
		unhappy             uint64
	}{
		// 6 promoters, 2 passives, 2 detractors: NPS = 60 - 20 = 40.
		// var = (0.6 + 0.2 - 0.4^2)/10 = 0.064; margin = 1.959964*0.252982*100 = 49.58.
		{"NPS 6/2/2", NPS, dist(10, 3, 9, 3, 8, 1, 7, 1, 6, 1, 0, 1), 10, 40, -9.58, 89.58, 2},
		// 50 promoters, 30 passives, 20 detractors: NPS 30.
		// var = (0.5 + 0.2 - 0.09)/100 = 0.0061; margin = 1.959964*0.078102*100 = 15.31.
		{"NPS 50/30/20", NPS, dist(9, 50, 7, 30, 3, 20), 100, 30, 14.69, 45.31, 20},
		// All promoters: mean 1, variance 1 + 0 - 1 = 0, the interval collapses onto 100.
		{"NPS all promoters", NPS, dist(10, 5), 5, 100, 100, 100, 0},
		// All detractors: -100, collapsed.
		{"NPS all detractors", NPS, dist(0, 4, 6, 4), 8, -100, -100, -100, 8},
		// One passive: NPS 0, variance 0.
		{"NPS one passive", NPS, dist(8, 1), 1, 0, 0, 0, 0},
		// 1 promoter and 1 detractor: NPS 0; var = (0.5+0.5-0)/2 = 0.5; margin = 1.959964*0.707107*100 = 138.59, clamped.
		{"NPS clamped", NPS, dist(10, 1, 0, 1), 2, 0, -100, 100, 1},
		// CSAT 85 of 100 satisfied. Wilson: z2 = 3.841459; denom = 1.0384146;
		// centre = (0.85 + 0.0192073)/denom = 0.837045; half = 1.959964*sqrt(0.001275 + 0.00009604)/denom = 0.069884.
		{"CSAT 85/100", CSAT, dist(5, 60, 4, 25, 3, 5, 2, 5, 1, 5), 100, 85, 76.72, 90.69, 10},
		// CSAT 0 of 10: Wilson upper = (0 + 0.192073)/1.384146 + 1.959964*sqrt(0.0096037)/1.384146 = 0.138769 + 0.138769 = 27.75%.
		{"CSAT 0/10", CSAT, dist(1, 10), 10, 0, 0, 27.75, 10},
		// CSAT 10 of 10: mirror image.
		{"CSAT 10/10", CSAT, dist(5, 10), 10, 100, 72.25, 100, 0},
		// CES answers 7,6,5,5,2: mean 5; deviations 2,1,0,0,-3: ss = 14, s = sqrt(14/4) = 1.870829;
		// margin = 1.959964*1.870829/sqrt(5) = 1.63982.
		{"CES five", CES, dist(7, 1, 6, 1, 5, 2, 2, 1), 5, 5, 3.36, 6.64, 1},
		// One CES answer: the interval is the whole scale.
		{"CES one", CES, dist(4, 1), 1, 4, 1, 7, 0},
		// Identical answers: s = 0, interval collapses.
		{"CES constant", CES, dist(6, 3), 3, 6, 6, 6, 0},
		// No data.
		{"NPS empty", NPS, dist(), 0, 0, 0, 0, 0},
	}
	for _, c := range cases {
		r, err := Compute(c.kind, c.counts)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if r.N != c.n || !near(r.Value, c.value) || !near(r.Lower, c.lower) || !near(r.Upper, c.upper) || r.Unhappy != c.unhappy {
			t.Errorf("%s: n=%d %.2f [%.2f, %.2f] unhappy=%d; want n=%d %.2f [%.2f, %.2f] unhappy=%d",
				c.name, r.N, r.Value, r.Lower, r.Upper, r.Unhappy, c.n, c.value, c.lower, c.upper, c.unhappy)
		}
	}
}

func TestComputeCategories(t *testing.T) {
	r, _ := Compute(NPS, dist(10, 3, 9, 3, 8, 1, 7, 1, 6, 1, 0, 1))
	if r.Promoters != 6 || r.Passives != 2 || r.Detractors != 2 {
		t.Errorf("NPS categories %d/%d/%d, want 6/2/2", r.Promoters, r.Passives, r.Detractors)
	}
	r, _ = Compute(CSAT, dist(5, 60, 4, 25, 3, 5, 2, 5, 1, 5))
	if r.Satisfied != 85 {
		t.Errorf("CSAT satisfied %d, want 85", r.Satisfied)
	}
}

func TestComputeRejectsOffScale(t *testing.T) {
	for _, c := range []struct {
		kind  Kind
		score int
	}{{CSAT, 0}, {CSAT, 6}, {CES, 0}, {CES, 8}, {CES, 10}} {
		if _, err := Compute(c.kind, dist(c.score, 1)); err == nil {
			t.Errorf("%s accepted an answer of %d", c.kind, c.score)
		}
	}
	if _, err := Compute("XYZ", dist()); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestScales(t *testing.T) {
	for _, c := range []struct {
		kind      Kind
		in, out   []int
		detractor []int
		happy     []int
	}{
		{NPS, []int{0, 10}, []int{-1, 11}, []int{0, 6}, []int{7, 10}},
		{CSAT, []int{1, 5}, []int{0, 6}, []int{1, 2}, []int{3, 5}},
		{CES, []int{1, 7}, []int{0, 8}, []int{1, 2}, []int{3, 7}},
	} {
		for _, s := range c.in {
			if !c.kind.Contains(s) {
				t.Errorf("%s does not contain %d", c.kind, s)
			}
		}
		for _, s := range c.out {
			if c.kind.Contains(s) {
				t.Errorf("%s contains %d", c.kind, s)
			}
		}
		for _, s := range c.detractor {
			if !IsDetractor(c.kind, s) {
				t.Errorf("%s %d is not a detractor", c.kind, s)
			}
		}
		for _, s := range c.happy {
			if IsDetractor(c.kind, s) {
				t.Errorf("%s %d is a detractor", c.kind, s)
			}
		}
	}
}

func TestRatio(t *testing.T) {
	if _, ok := Ratio(0, 0); ok {
		t.Error("Ratio(0, 0) claims data")
	}
	if v, ok := Ratio(19, 20); !ok || v != 0.95 {
		t.Errorf("Ratio(19, 20) = %v, %v", v, ok)
	}
}

func FuzzCompute(f *testing.F) {
	f.Add(uint8(0), uint64(3), uint64(0), uint64(5), uint64(1000000), uint64(2))
	f.Fuzz(func(t *testing.T, k uint8, a, b, c, d, e uint64) {
		kind := []Kind{NPS, CSAT, CES}[int(k)%3]
		lo, hi := kind.Range()
		counts := make([]uint64, 11)
		for i, v := range []uint64{a, b, c, d, e} {
			counts[lo+i*(hi-lo)/4] += v % (1 << 40)
		}
		r, err := Compute(kind, counts)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []float64{r.Value, r.Lower, r.Upper} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s %v: %+v", kind, counts, r)
			}
		}
		if r.N > 0 && (r.Lower > r.Value+1e-9 || r.Value > r.Upper+1e-9) {
			t.Fatalf("%s %v: value outside its interval %+v", kind, counts, r)
		}
	})
}
