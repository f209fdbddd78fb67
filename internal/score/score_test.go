package score

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// tol is the tolerance for the hand-computed literals below, which are
// written to three or four decimals.
const tol = 1e-3

// near reports whether got is within tol of want; infinities and NaN never
// are, so a stray NaN fails every comparison.
func near(got, want float64) bool { return math.Abs(got-want) <= tol }

// checkNear fails t when any got[i] is not near want[i].
func checkNear(t *testing.T, got, want []float64) {
	t.Helper()
	for i := range want {
		if !near(got[i], want[i]) {
			t.Errorf("got %v, want %v (±%g)", got, want, tol)
			return
		}
	}
}

// dist builds an 11-slot distribution from (score, count) pairs.
func dist(pairs ...int) []uint64 {
	c := make([]uint64, 11)
	for i := 0; i < len(pairs); i += 2 {
		c[pairs[i]] += uint64(pairs[i+1])
	}
	return c
}

func TestNPSInterval(t *testing.T) {
	cases := []struct {
		name                string
		p, a, d             uint64 // promoters, passives, detractors
		z                   float64
		value, lower, upper float64
	}{
		// p = 0.6, d = 0.2, NPS = 100*(0.6-0.2) = 40.
		// var = (0.6 + 0.2 - 0.4^2)/10 = 0.064; sqrt = 0.252982;
		// margin = 1.959964*0.252982*100 = 49.5836.
		{"6/2/2", 6, 2, 2, Z95, 40, -9.5836, 89.5836},
		// p = 0.5, d = 0.2, NPS 30; var = (0.5 + 0.2 - 0.09)/100 = 0.0061;
		// sqrt = 0.0781025; margin = 1.959964*0.0781025*100 = 15.3078.
		{"50/30/20", 50, 30, 20, Z95, 30, 14.6922, 45.3078},
		// p = 0.7, d = 0.1, NPS 60; var = (0.7 + 0.1 - 0.36)/1000 = 0.00044;
		// sqrt = 0.0209762; margin = 1.959964*0.0209762*100 = 4.1113.
		{"700/200/100", 700, 200, 100, Z95, 60, 55.8887, 64.1113},
		// All promoters: p = 1, var = (1 + 0 - 1)/5 = 0. The interval
		// collapses onto 100: zero width, by the formula, not by certainty.
		{"all promoters", 5, 0, 0, Z95, 100, 100, 100},
		// All detractors: d = 1, var = (0 + 1 - 1)/8 = 0: collapses onto -100.
		{"all detractors", 0, 0, 8, Z95, -100, -100, -100},
		// All passives: NPS 0, var = 0.
		{"all passives", 0, 3, 0, Z95, 0, 0, 0},
		// A single answer of each kind: var = 0 as above.
		{"one promoter", 1, 0, 0, Z95, 100, 100, 100},
		{"one passive", 0, 1, 0, Z95, 0, 0, 0},
		{"one detractor", 0, 0, 1, Z95, -100, -100, -100},
		// p = d = 0.5, NPS 0; var = (0.5 + 0.5 - 0)/2 = 0.5; sqrt = 0.707107;
		// margin = 1.959964*0.707107*100 = 138.59, clamped to -100..100.
		{"clamped", 1, 0, 1, Z95, 0, -100, 100},
		// No answers: all zero.
		{"empty", 0, 0, 0, Z95, 0, 0, 0},
		// z = 0: no margin.
		{"z 0", 6, 2, 2, 0, 40, 40, 40},
		// A negative z is read as |z|: same as the first case.
		{"z negative", 6, 2, 2, -Z95, 40, -9.5836, 89.5836},
		// A NaN or infinite z claims nothing: the whole scale.
		{"z NaN", 6, 2, 2, math.NaN(), 40, -100, 100},
		{"z +Inf", 6, 2, 2, math.Inf(1), 40, -100, 100},
		// Counts whose uint64 sum would overflow: p = d = 0.5 of 2^64 - 1
		// each, var = 1/(2^65 - 2) ≈ 2.7e-20, margin ≈ 3.2e-8: NPS 0 ± 0.
		{"huge", math.MaxUint64, 0, math.MaxUint64, Z95, 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, l, u := NPSInterval(c.p, c.a, c.d, c.z)
			checkNear(t, []float64{v, l, u}, []float64{c.value, c.lower, c.upper})
		})
	}
}

func TestWilson(t *testing.T) {
	cases := []struct {
		name         string
		successes, n uint64
		z            float64
		lower, upper float64
	}{
		// 85/100: z2 = 3.841459, denom = 1 + z2/100 = 1.0384146;
		// centre = (0.85 + z2/200)/denom = (0.85 + 0.0192073)/1.0384146 = 0.837052;
		// half = 1.959964*sqrt(0.85*0.15/100 + z2/40000)/denom
		//      = 1.959964*sqrt(0.001275 + 0.0000960)/1.0384146 = 0.069888.
		// The published 95% Wilson interval for 85/100 is [0.767, 0.907].
		{"85/100", 85, 100, Z95, 0.7672, 0.9069},
		// 5/10: centre = (0.5 + 0.1920729)/1.3841459 = 0.5;
		// half = 1.959964*sqrt(0.025 + 0.0096037)/1.3841459 = 0.263407.
		{"5/10", 5, 10, Z95, 0.2366, 0.7634},
		// 0/10: centre = half = 0.1920729/1.3841459 = 0.138766: [0, 0.277533].
		{"0/10", 0, 10, Z95, 0, 0.2775},
		// 10/10: the mirror image, [1 - 0.277533, 1].
		{"10/10", 10, 10, Z95, 0.7225, 1},
		// 0/1: denom = 4.841459, centre = half = 1.920729/4.841459 = 0.396725.
		{"0/1", 0, 1, Z95, 0, 0.7935},
		// 1/1: [1 - 0.793451, 1].
		{"1/1", 1, 1, Z95, 0.2065, 1},
		// No trials: (0, 0).
		{"0/0", 0, 0, Z95, 0, 0},
		// More successes than trials count as n: same as 10/10.
		{"12/10", 12, 10, Z95, 0.7225, 1},
		// z = 0: centre p, half 0.
		{"z 0", 85, 100, 0, 0.85, 0.85},
		// A NaN or infinite z, or one whose square overflows: (0, 1).
		{"z NaN", 85, 100, math.NaN(), 0, 1},
		{"z -Inf", 85, 100, math.Inf(-1), 0, 1},
		{"z 1e200", 85, 100, 1e200, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, u := Wilson(c.successes, c.n, c.z)
			checkNear(t, []float64{l, u}, []float64{c.lower, c.upper})
		})
	}
}

func TestMeanInterval(t *testing.T) {
	cases := []struct {
		name               string
		counts             []uint64
		lo, hi             int
		z                  float64
		mean, lower, upper float64
	}{
		// Answers 7,6,5,5,2: mean 25/5 = 5; deviations 2,1,0,0,-3: ss = 14;
		// s = sqrt(14/4) = 1.870829; se = s/sqrt(5) = 0.836660;
		// margin = 1.959964*0.836660 = 1.639824.
		{"7,6,5,5,2", dist(7, 1, 6, 1, 5, 2, 2, 1), 1, 7, Z95, 5, 3.3602, 6.6398},
		// Five 1s and five 7s: mean 4; ss = 10*9 = 90; s = sqrt(90/9) = 3.162278;
		// se = s/sqrt(10) = 1; margin = 1.959964.
		{"1s and 7s", dist(1, 5, 7, 5), 1, 7, Z95, 4, 2.0400, 5.9600},
		// One 1 and one 7: mean 4; ss = 18; s = sqrt(18/1) = 4.242641;
		// se = s/sqrt(2) = 3; margin = 5.8799, clamped to the scale 1..7.
		{"1 and 7", dist(1, 1, 7, 1), 1, 7, Z95, 4, 1, 7},
		// One answer says nothing about spread: the whole scale.
		{"one answer", dist(4, 1), 1, 7, Z95, 4, 1, 7},
		// Identical answers: s = 0, the interval collapses.
		{"constant", dist(6, 3), 1, 7, Z95, 6, 6, 6},
		// No answers.
		{"empty", dist(), 1, 7, Z95, 0, 0, 0},
		// Indexes outside lo..hi are ignored: only the single 4 counts.
		{"off-scale ignored", dist(0, 5, 4, 1, 9, 2), 1, 7, Z95, 4, 1, 7},
		// lo > hi: no scale, no answers.
		{"lo > hi", dist(4, 1), 7, 1, Z95, 0, 0, 0},
		// A short slice: hi is cut to its end. Answers 1,2,3: mean 2; ss = 2;
		// s = 1; se = 1/sqrt(3) = 0.577350; margin = 1.131586; clamp to 1..3.
		{"short slice", []uint64{0, 1, 1, 1}, 1, 7, Z95, 2, 1, 3},
		// A 1..5 scale (CSAT answers averaged): answers 5,5,4,4: mean 4.5;
		// ss = 4*0.25 = 1; s = sqrt(1/3) = 0.577350; se = s/2 = 0.288675;
		// margin = 0.565792; [3.934208, 5.065792] clamped to 5.
		{"1..5", dist(5, 2, 4, 2), 1, 5, Z95, 4.5, 3.9342, 5},
		// A NaN z claims nothing: the whole scale.
		{"z NaN", dist(7, 1, 6, 1, 5, 2, 2, 1), 1, 7, math.NaN(), 5, 1, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, l, u := MeanInterval(c.counts, c.lo, c.hi, c.z)
			checkNear(t, []float64{m, l, u}, []float64{c.mean, c.lower, c.upper})
		})
	}
}

func TestCompute(t *testing.T) {
	cases := []struct {
		name   string
		kind   Kind
		counts []uint64
		want   Result // Value, Lower, Upper compared within tol
	}{
		// 6 promoters (3×10, 3×9), 2 passives (8, 7), 2 detractors (6, 0):
		// as in TestNPSInterval, 40 [-9.5836, 89.5836].
		{"NPS 6/2/2", NPS, dist(10, 3, 9, 3, 8, 1, 7, 1, 6, 1, 0, 1),
			Result{N: 10, Value: 40, Lower: -9.5836, Upper: 89.5836, Promoters: 6, Passives: 2, Detractors: 2, Unhappy: 2}},
		// All promoters: the collapsed interval (100, 100, 100).
		{"NPS all promoters", NPS, dist(10, 4, 9, 1),
			Result{N: 5, Value: 100, Lower: 100, Upper: 100, Promoters: 5}},
		// All detractors, scores 0 and 6 (the edges of the detractor band).
		{"NPS all detractors", NPS, dist(0, 4, 6, 4),
			Result{N: 8, Value: -100, Lower: -100, Upper: -100, Detractors: 8, Unhappy: 8}},
		// One answer of 7: a passive, NPS 0 with zero width.
		{"NPS single passive", NPS, dist(7, 1),
			Result{N: 1, Passives: 1}},
		// No answers: N == 0 and every number 0.
		{"NPS empty", NPS, dist(), Result{}},
		{"CSAT empty", CSAT, nil, Result{}},
		// 85 of 100 answer 4 or 5: 85% with Wilson [76.72, 90.69] (TestWilson);
		// 1s and 2s (5 + 5) are unhappy, the 3s are neither.
		{"CSAT 85/100", CSAT, dist(5, 60, 4, 25, 3, 5, 2, 5, 1, 5),
			Result{N: 100, Value: 85, Lower: 76.7164, Upper: 90.6940, Satisfied: 85, Unhappy: 10}},
		// One answer of 3: 0/1 satisfied, Wilson [0, 79.345].
		{"CSAT single 3", CSAT, dist(3, 1),
			Result{N: 1, Value: 0, Lower: 0, Upper: 79.3451}},
		// One answer of 5: 1/1, Wilson [20.655, 100].
		{"CSAT single 5", CSAT, dist(5, 1),
			Result{N: 1, Value: 100, Lower: 20.6549, Upper: 100, Satisfied: 1}},
		// Ten 5s: 100% with Wilson [72.25, 100]; Upper is exactly 100.
		{"CSAT 10/10", CSAT, dist(5, 10),
			Result{N: 10, Value: 100, Lower: 72.2467, Upper: 100, Satisfied: 10}},
		// A six-slot slice reads as zeros beyond its end.
		{"CSAT short slice", CSAT, []uint64{0, 0, 0, 0, 0, 10},
			Result{N: 10, Value: 100, Lower: 72.2467, Upper: 100, Satisfied: 10}},
		// CES 7,6,5,5,2: mean 5 [3.3602, 6.6398] (TestMeanInterval); the 2 is unhappy.
		{"CES five", CES, dist(7, 1, 6, 1, 5, 2, 2, 1),
			Result{N: 5, Value: 5, Lower: 3.3602, Upper: 6.6398, Unhappy: 1}},
		// One CES answer: the interval is the whole scale 1..7.
		{"CES single", CES, dist(4, 1),
			Result{N: 1, Value: 4, Lower: 1, Upper: 7}},
		// All 7s: collapsed onto 7.
		{"CES all 7", CES, dist(7, 3),
			Result{N: 3, Value: 7, Lower: 7, Upper: 7}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Compute(c.kind, c.counts)
			if err != nil {
				t.Fatal(err)
			}
			w := c.want
			if r.N != w.N || r.Promoters != w.Promoters || r.Passives != w.Passives ||
				r.Detractors != w.Detractors || r.Satisfied != w.Satisfied || r.Unhappy != w.Unhappy {
				t.Errorf("counts %+v, want %+v", r, w)
			}
			checkNear(t, []float64{r.Value, r.Lower, r.Upper}, []float64{w.Value, w.Lower, w.Upper})
		})
	}
}

func TestComputeErrors(t *testing.T) {
	over := dist(5, 1)
	over[4] = math.MaxUint64
	cases := []struct {
		name   string
		kind   Kind
		counts []uint64
		want   string // in the error
	}{
		{"CSAT 0", CSAT, dist(0, 1, 5, 3), "counts[0]"},
		{"CSAT 6", CSAT, dist(6, 2), "counts[6]"},
		{"CSAT 10", CSAT, dist(10, 1), "counts[10]"},
		{"CES 0", CES, dist(0, 1), "counts[0]"},
		{"CES 8", CES, dist(8, 1), "counts[8]"},
		{"CES 10", CES, dist(10, 1), "counts[10]"},
		{"NPS 11", NPS, append(dist(10, 1), 1), "counts[11]"},
		{"unknown kind", "XYZ", dist(), `"XYZ"`},
		{"empty kind", "", dist(), `""`},
		{"overflow", CSAT, over, "counts[5]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Compute(c.kind, c.counts)
			if err == nil {
				t.Fatalf("no error; got %+v", r)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
			if r != (Result{}) {
				t.Errorf("error came with a result %+v", r)
			}
		})
	}
}

func TestKind(t *testing.T) {
	cases := []struct {
		kind   Kind
		valid  bool
		lo, hi int
	}{
		{NPS, true, 0, 10},
		{CSAT, true, 1, 5},
		{CES, true, 1, 7},
		{"nps", false, 0, -1},
		{"", false, 0, -1},
	}
	for _, c := range cases {
		lo, hi := c.kind.Range()
		if c.kind.Valid() != c.valid || lo != c.lo || hi != c.hi {
			t.Errorf("%q: valid %v range %d..%d, want %v %d..%d", c.kind, c.kind.Valid(), lo, hi, c.valid, c.lo, c.hi)
		}
	}
}

func TestContains(t *testing.T) {
	cases := []struct {
		kind  Kind
		score int
		want  bool
	}{
		{NPS, -1, false}, {NPS, 0, true}, {NPS, 10, true}, {NPS, 11, false},
		{CSAT, 0, false}, {CSAT, 1, true}, {CSAT, 5, true}, {CSAT, 6, false},
		{CES, 0, false}, {CES, 1, true}, {CES, 7, true}, {CES, 8, false},
		{"XYZ", 0, false}, {"XYZ", -1, false},
	}
	for _, c := range cases {
		if got := c.kind.Contains(c.score); got != c.want {
			t.Errorf("%q.Contains(%d) = %v, want %v", c.kind, c.score, got, c.want)
		}
	}
}

func TestIsDetractor(t *testing.T) {
	cases := []struct {
		kind  Kind
		score int
		want  bool
	}{
		{NPS, -1, false}, {NPS, 0, true}, {NPS, 6, true}, {NPS, 7, false}, {NPS, 10, false},
		{CSAT, 0, false}, {CSAT, 1, true}, {CSAT, 2, true}, {CSAT, 3, false}, {CSAT, 5, false},
		{CES, 0, false}, {CES, 1, true}, {CES, 2, true}, {CES, 3, false}, {CES, 7, false},
		{"XYZ", 1, false},
	}
	for _, c := range cases {
		if got := IsDetractor(c.kind, c.score); got != c.want {
			t.Errorf("IsDetractor(%q, %d) = %v, want %v", c.kind, c.score, got, c.want)
		}
	}
}

func TestRatio(t *testing.T) {
	cases := []struct {
		good, total uint64
		want        float64
		ok          bool
	}{
		{0, 0, 0, false}, // no data: neither 0% nor 100%
		{7, 0, 0, false}, // still no data
		{0, 5, 0, true},
		{19, 20, 0.95, true}, // 19/20
		{5, 5, 1, true},
		{3, 8, 0.375, true}, // 3/8
	}
	for _, c := range cases {
		got, ok := Ratio(c.good, c.total)
		if ok != c.ok || !near(got, c.want) {
			t.Errorf("Ratio(%d, %d) = %v, %v; want %v, %v", c.good, c.total, got, ok, c.want, c.ok)
		}
	}
}

// decodeCounts reads up to 11 little-endian uint64 counts from b; missing
// bytes are zeros.
func decodeCounts(b []byte) []uint64 {
	counts := make([]uint64, 11)
	var buf [8]byte
	for i := range counts {
		if len(b) == 0 {
			break
		}
		n := copy(buf[:], b)
		b = b[n:]
		counts[i] = binary.LittleEndian.Uint64(buf[:])
		buf = [8]byte{}
	}
	return counts
}

// valueRange is where Result.Value, Lower and Upper of kind must lie.
func valueRange(k Kind) (bot, top float64) {
	switch k {
	case NPS:
		return -100, 100
	case CSAT:
		return 0, 100
	}
	lo, hi := k.Range()
	return float64(lo), float64(hi)
}

// FuzzCompute checks, for any distribution, that Compute rejects exactly the
// off-scale and overflowing ones and that otherwise every number is finite
// and Lower <= Value <= Upper inside the kind's range.
func FuzzCompute(f *testing.F) {
	le := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
		return b
	}
	f.Add(uint8(0), le(1, 0, 0, 0, 0, 0, 2, 3, 0, 5, 7))
	f.Add(uint8(1), le(0, 5, 5, 5, 25, 60))
	f.Add(uint8(2), le(0, 1, 0, 0, 0, 0, 0, 1))
	f.Add(uint8(2), le(0, 0, 0, 0, 0, 0, 0, math.MaxUint64))
	f.Add(uint8(1), le(0, 0, 0, 0, 0, 1<<62, 0))
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, k uint8, raw []byte) {
		kind := []Kind{NPS, CSAT, CES}[int(k)%3]
		counts := decodeCounts(raw)
		offScale := false
		var sum uint64
		overflow := false
		for i, c := range counts {
			if c != 0 && !kind.Contains(i) {
				offScale = true
			}
			if sum+c < sum {
				overflow = true
			}
			sum += c
		}
		r, err := Compute(kind, counts)
		if offScale || overflow {
			if err == nil {
				t.Fatalf("%s %v: accepted", kind, counts)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s %v: %v", kind, counts, err)
		}
		for _, v := range []float64{r.Value, r.Lower, r.Upper} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s %v: not finite: %+v", kind, counts, r)
			}
		}
		if r.N != sum || r.Unhappy > r.N {
			t.Fatalf("%s %v: counts %+v", kind, counts, r)
		}
		if r.N == 0 {
			if r != (Result{}) {
				t.Fatalf("%s: no data but %+v", kind, r)
			}
			return
		}
		bot, top := valueRange(kind)
		if !(bot <= r.Lower && r.Lower <= r.Value && r.Value <= r.Upper && r.Upper <= top) {
			t.Fatalf("%s %v: want %v <= %v <= %v <= %v <= %v", kind, counts, bot, r.Lower, r.Value, r.Upper, top)
		}
		if kind == NPS && r.Promoters+r.Passives+r.Detractors != r.N {
			t.Fatalf("NPS %v: categories %+v", counts, r)
		}
		if kind == CSAT && r.Satisfied > r.N {
			t.Fatalf("CSAT %v: %+v", counts, r)
		}
	})
}

// FuzzIntervals drives the interval functions directly with any counts and
// any z, including NaN, infinities and negatives: the answers must be finite
// and ordered, inside their scales.
func FuzzIntervals(f *testing.F) {
	f.Add(uint64(6), uint64(2), uint64(2), Z95, 1, 7)
	f.Add(uint64(0), uint64(0), uint64(1), 0.0, 1, 5)
	f.Add(uint64(math.MaxUint64), uint64(1), uint64(math.MaxUint64), 1e300, 0, 10)
	f.Add(uint64(3), uint64(0), uint64(0), math.NaN(), 7, 1)
	f.Add(uint64(1), uint64(1), uint64(0), math.Inf(-1), -3, 20)
	f.Fuzz(func(t *testing.T, a, b, c uint64, z float64, lo, hi int) {
		finite := func(vs ...float64) bool {
			for _, v := range vs {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return false
				}
			}
			return true
		}
		v, l, u := NPSInterval(a, b, c, z)
		if !finite(v, l, u) || !(-100 <= l && l <= v && v <= u && u <= 100) {
			t.Fatalf("NPSInterval(%d, %d, %d, %v) = %v, %v, %v", a, b, c, z, v, l, u)
		}
		l, u = Wilson(a, b, z)
		if !finite(l, u) || !(0 <= l && l <= u && u <= 1) {
			t.Fatalf("Wilson(%d, %d, %v) = %v, %v", a, b, z, l, u)
		}
		if p, ok := Ratio(min(a, b), b); ok && !(l <= p && p <= u) {
			t.Fatalf("Wilson(%d, %d, %v) = %v, %v excludes %v", a, b, z, l, u, p)
		}
		counts := make([]uint64, 11)
		counts[int(a%11)] += a
		counts[int(b%11)] += b
		counts[int(c%11)] += c
		m, l, u := MeanInterval(counts, lo, hi, z)
		if !finite(m, l, u) {
			t.Fatalf("MeanInterval(%v, %d, %d, %v) = %v, %v, %v", counts, lo, hi, z, m, l, u)
		}
		if m == 0 && l == 0 && u == 0 {
			return // no answers in range
		}
		if !(float64(lo) <= l && l <= m && m <= u && u <= float64(hi)) {
			t.Fatalf("MeanInterval(%v, %d, %d, %v) = %v, %v, %v", counts, lo, hi, z, m, l, u)
		}
	})
}
