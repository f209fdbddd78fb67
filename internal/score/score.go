// Package score is the pure math behind every number cxop shows: NPS, CSAT
// and CES with their 95% confidence intervals, and plain ratios. It imports
// no Kubernetes client; callers pass counts and get numbers back that are
// never NaN or infinite, so a status field or a metric can never read "NaN".
//
// Every function is total: no input panics, and inputs a caller should not
// send (no answers, a non-finite z, more successes than trials) give a
// documented, finite answer rather than an error, except in Compute, which
// rejects answers off the survey's scale because they mean corrupt data.
package score

import (
	"fmt"
	"math"
	"math/bits"
)

// Kind is a survey type; it fixes the answer scale and the formula.
type Kind string

// Survey types.
const (
	NPS  Kind = "NPS"  // 0-10; NPS = %promoters (9-10) - %detractors (0-6)
	CSAT Kind = "CSAT" // 1-5; CSAT = % of answers 4-5
	CES  Kind = "CES"  // 1-7; CES = mean answer, higher is easier
)

// Z95 is the two-sided 95% quantile of the standard normal distribution.
const Z95 = 1.959963984540054

// Valid reports whether k is a known survey type.
func (k Kind) Valid() bool { return k == NPS || k == CSAT || k == CES }

// Range is the scale of k's answers, both ends included. An unknown kind
// has the empty range (0, -1), which contains nothing.
func (k Kind) Range() (min, max int) {
	switch k {
	case NPS:
		return 0, 10
	case CSAT:
		return 1, 5
	case CES:
		return 1, 7
	}
	return 0, -1
}

// Contains reports whether score is on k's scale.
func (k Kind) Contains(score int) bool {
	lo, hi := k.Range()
	return score >= lo && score <= hi
}

// IsDetractor reports whether an answer is on the unhappy side, the answers
// a closed loop follows up: NPS 0-6, CSAT 1-2, CES 1-2. Answers off the
// scale, and every answer of an unknown kind, are not detractors.
func IsDetractor(k Kind, score int) bool {
	switch k {
	case NPS:
		return score >= 0 && score <= 6
	case CSAT, CES:
		return score >= 1 && score <= 2
	}
	return false
}

// Result is a score with its 95% confidence interval. N == 0 means no data:
// Value, Lower and Upper are then 0 and must not be shown. When N > 0,
// Lower <= Value <= Upper, all inside the kind's range.
type Result struct {
	N                   uint64
	Value, Lower, Upper float64 // NPS -100..100; CSAT percent 0..100; CES mean 1..7
	Promoters, Passives uint64  // NPS only: 9-10, 7-8
	Detractors          uint64  // NPS only: 0-6
	Satisfied           uint64  // CSAT only: 4-5
	Unhappy             uint64  // answers IsDetractor counts (NPS 0-6, CSAT 1-2, CES 1-2)
}

// Compute scores a distribution: counts[i] is the number of answers whose
// score is i. Stores keep 11 slots (0..10) for every kind; a shorter slice
// is read as zeros beyond its end. A non-zero count at an index off k's
// scale is an error naming the index, as are an unknown kind and a total
// that overflows uint64. The interval is 95% (Z95).
func Compute(k Kind, counts []uint64) (Result, error) {
	if !k.Valid() {
		return Result{}, fmt.Errorf("unknown survey type %q", k)
	}
	lo, hi := k.Range()
	var r Result
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if i < lo || i > hi {
			return Result{}, fmt.Errorf("counts[%d] = %d: score %d is outside the %s scale %d-%d", i, c, i, k, lo, hi)
		}
		var carry uint64
		if r.N, carry = bits.Add64(r.N, c, 0); carry != 0 {
			return Result{}, fmt.Errorf("counts[%d]: more than %d answers in total", i, uint64(math.MaxUint64))
		}
		if IsDetractor(k, i) {
			r.Unhappy += c
		}
		switch {
		case k == NPS && i >= 9:
			r.Promoters += c
		case k == NPS && i >= 7:
			r.Passives += c
		case k == NPS:
			r.Detractors += c
		case k == CSAT && i >= 4:
			r.Satisfied += c
		}
	}
	if r.N == 0 {
		return r, nil
	}
	switch k {
	case NPS:
		r.Value, r.Lower, r.Upper = NPSInterval(r.Promoters, r.Passives, r.Detractors, Z95)
	case CSAT:
		l, u := Wilson(r.Satisfied, r.N, Z95)
		r.Value = 100 * (float64(r.Satisfied) / float64(r.N))
		r.Lower, r.Upper = 100*l, 100*u
	case CES:
		r.Value, r.Lower, r.Upper = MeanInterval(counts, lo, hi, Z95)
	}
	return r, nil
}

// NPSInterval is NPS (-100..100) with a normal-approximation interval. Each
// answer scores +1 (promoter), 0 (passive) or -1 (detractor); NPS/100 is
// their mean p - d, whose variance is (p + d - (p - d)^2) / n, so the margin
// is z * sqrt(that) * 100. The interval is clamped to -100..100.
//
// When every answer falls in one category (all promoters, all passives or
// all detractors) the sample variance is 0 and the interval collapses onto
// the value: all promoters give (100, 100, 100). That is the textbook
// answer, not a claim of certainty; callers that gate on the interval
// should also require a minimum sample size. No answers give (0, 0, 0).
// z is taken as |z|; a NaN or infinite z gives the whole scale -100..100.
func NPSInterval(promoters, passives, detractors uint64, z float64) (value, lower, upper float64) {
	// Sum as floats: three uint64 counts may overflow uint64 together.
	n := float64(promoters) + float64(passives) + float64(detractors)
	if n == 0 {
		return 0, 0, 0
	}
	p, d := float64(promoters)/n, float64(detractors)/n
	mean := p - d
	z, ok := finiteZ(z)
	if !ok {
		return 100 * mean, -100, 100
	}
	variance := max(0, p+d-mean*mean) / n
	margin := z * math.Sqrt(variance)
	return 100 * mean, 100 * max(-1, mean-margin), 100 * min(1, mean+margin)
}

// Wilson is the Wilson score interval for successes out of n, as fractions
// 0..1. Unlike the normal (Wald) interval it stays inside 0..1 and has
// non-zero width at 0% and 100%: 10 of 10 gives about (0.722, 1).
// No trials give (0, 0); successes above n are counted as n. z is taken
// as |z|; a NaN or infinite z (or one whose square overflows) gives (0, 1).
func Wilson(successes, n uint64, z float64) (lower, upper float64) {
	if n == 0 {
		return 0, 0
	}
	successes = min(successes, n)
	z, ok := finiteZ(z)
	z2 := z * z
	if !ok || math.IsInf(z2, 0) {
		return 0, 1
	}
	nf := float64(n)
	p := float64(successes) / nf
	denom := 1 + z2/nf
	centre := (p + z2/(2*nf)) / denom
	half := z * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf)) / denom
	lower, upper = max(0, centre-half), min(1, centre+half)
	if math.IsNaN(lower) || math.IsNaN(upper) {
		return 0, 1
	}
	// In exact arithmetic p lies inside; keep it so after rounding, so that
	// a caller's 100*p is never outside 100*lower..100*upper.
	return min(lower, p), max(upper, p)
}

// MeanInterval is the mean of the answers lo..hi (counts[i] answers with
// score i) with a normal interval from the sample standard deviation
// (n - 1 in the denominator), clamped to lo..hi. Indexes outside lo..hi are
// ignored; Compute rejects them before calling this.
//
// One answer says nothing about spread, so the interval is then the whole
// scale (lo, hi). Identical answers give a zero-width interval on their
// value. No answers in range, or lo > hi, give (0, 0, 0). z is taken as
// |z|; a NaN or infinite z gives the whole scale.
func MeanInterval(counts []uint64, lo, hi int, z float64) (mean, lower, upper float64) {
	lo = max(lo, 0)
	hi = min(hi, len(counts)-1)
	if lo > hi {
		return 0, 0, 0
	}
	var n, sum float64
	for s := lo; s <= hi; s++ {
		n += float64(counts[s])
		sum += float64(counts[s]) * float64(s)
	}
	if n == 0 {
		return 0, 0, 0
	}
	flo, fhi := float64(lo), float64(hi)
	// Rounding can carry sum/n a hair past the scale when every answer is at
	// one end; the mean of in-range answers is in range by definition.
	mean = min(max(sum/n, flo), fhi)
	z, ok := finiteZ(z)
	if n < 2 || !ok {
		return mean, flo, fhi
	}
	var ss float64
	for s := lo; s <= hi; s++ {
		d := float64(s) - mean
		ss += float64(counts[s]) * d * d
	}
	margin := z * math.Sqrt(ss/(n-1)/n)
	return mean, max(flo, mean-margin), min(fhi, mean+margin)
}

// Ratio is good/total, and false when total is 0: no data, which is neither
// 0% nor 100%. The value is then 0 and must not be shown. It exceeds 1 only
// if the caller passes good > total.
func Ratio(good, total uint64) (float64, bool) {
	if total == 0 {
		return 0, false
	}
	return float64(good) / float64(total), true
}

// finiteZ returns |z| and whether it is a usable quantile (not NaN or
// infinite).
func finiteZ(z float64) (float64, bool) {
	z = math.Abs(z)
	return z, !math.IsNaN(z) && !math.IsInf(z, 0)
}
