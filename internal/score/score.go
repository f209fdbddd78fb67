// Package score is the pure math behind every number cxop shows: NPS,
// CSAT and CES with their 95% confidence intervals, and ratios. It imports
// no Kubernetes client; callers pass counts and get numbers that are never
// NaN or infinite.
package score

import (
	"fmt"
	"math"
)

// Kind is a survey type.
type Kind string

// Survey types.
const (
	NPS  Kind = "NPS"  // 0-10; NPS = %promoters (9-10) - %detractors (0-6)
	CSAT Kind = "CSAT" // 1-5; CSAT = % of answers 4-5
	CES  Kind = "CES"  // 1-7; CES = mean, higher is easier
)

// Z95 is the two-sided 95% quantile of the standard normal distribution.
const Z95 = 1.959963984540054

// Valid reports whether k is a known survey type.
func (k Kind) Valid() bool { return k == NPS || k == CSAT || k == CES }

// Range is the scale of k's answers.
func (k Kind) Range() (lo, hi int) {
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

// Contains reports whether s is on k's scale.
func (k Kind) Contains(s int) bool {
	lo, hi := k.Range()
	return s >= lo && s <= hi
}

// IsDetractor reports whether an answer is on the unhappy side, the
// answers a closed loop follows up: NPS 0-6, CSAT 1-2, CES 1-2.
func IsDetractor(k Kind, s int) bool {
	switch k {
	case NPS:
		return s >= 0 && s <= 6
	case CSAT, CES:
		return s >= 1 && s <= 2
	}
	return false
}

// Result is a score with its 95% confidence interval. N == 0 means no
// data: Value, Lower and Upper are then 0 and must not be shown.
type Result struct {
	N                   uint64
	Value, Lower, Upper float64 // NPS -100..100; CSAT percent 0..100; CES mean 1..7
	Promoters, Passives uint64  // NPS only: 9-10, 7-8
	Detractors          uint64  // NPS only: 0-6
	Satisfied           uint64  // CSAT only: 4-5
	Unhappy             uint64  // answers IsDetractor counts
}

// Compute scores a distribution: counts[s] is the number of answers with
// score s. Counts outside k's scale are an error naming the index.
func Compute(k Kind, counts []uint64) (Result, error) {
	if !k.Valid() {
		return Result{}, fmt.Errorf("unknown survey type %q", k)
	}
	lo, hi := k.Range()
	var r Result
	for s, c := range counts {
		if c == 0 {
			continue
		}
		if s < lo || s > hi {
			return Result{}, fmt.Errorf("%d answers with score %d, outside the %s scale %d-%d", c, s, k, lo, hi)
		}
		r.N += c
		if IsDetractor(k, s) {
			r.Unhappy += c
		}
		switch {
		case k == NPS && s >= 9:
			r.Promoters += c
		case k == NPS && s >= 7:
			r.Passives += c
		case k == NPS:
			r.Detractors += c
		case k == CSAT && s >= 4:
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
		r.Value, r.Lower, r.Upper = 100*float64(r.Satisfied)/float64(r.N), 100*l, 100*u
	case CES:
		r.Value, r.Lower, r.Upper = MeanInterval(counts, lo, hi, Z95)
	}
	return r, nil
}

// NPSInterval is NPS with a normal-approximation interval. Each answer
// scores +1 (promoter), 0 (passive) or -1 (detractor); NPS/100 is their
// mean p - d, whose variance is (p + d - (p - d)^2) / n. The interval is
// clamped to -100..100; when every answer is the same it has zero width.
func NPSInterval(promoters, passives, detractors uint64, z float64) (value, lower, upper float64) {
	n := float64(promoters + passives + detractors)
	if n == 0 {
		return 0, 0, 0
	}
	p, d := float64(promoters)/n, float64(detractors)/n
	mean := p - d
	variance := max(0, p+d-mean*mean) / n
	margin := z * math.Sqrt(variance)
	return 100 * mean, 100 * max(-1, mean-margin), 100 * min(1, mean+margin)
}

// Wilson is the Wilson score interval for a proportion, as fractions. It
// stays inside 0..1 and is sensible for small n and for 0% or 100%.
func Wilson(successes, n uint64, z float64) (lower, upper float64) {
	if n == 0 {
		return 0, 0
	}
	nf := float64(n)
	p := float64(successes) / nf
	z2 := z * z
	denom := 1 + z2/nf
	centre := (p + z2/(2*nf)) / denom
	half := z * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf)) / denom
	return max(0, centre-half), min(1, centre+half)
}

// MeanInterval is the mean of answers lo..hi with a normal interval from
// the sample standard deviation (n - 1), clamped to the scale. One answer
// says nothing about spread: the interval is then the whole scale.
func MeanInterval(counts []uint64, lo, hi int, z float64) (mean, lower, upper float64) {
	var n, sum float64
	for s, c := range counts {
		n += float64(c)
		sum += float64(c) * float64(s)
	}
	if n == 0 {
		return 0, 0, 0
	}
	mean = sum / n
	if n < 2 {
		return mean, float64(lo), float64(hi)
	}
	var ss float64
	for s, c := range counts {
		d := float64(s) - mean
		ss += float64(c) * d * d
	}
	margin := z * math.Sqrt(ss/(n-1)) / math.Sqrt(n)
	return mean, max(float64(lo), mean-margin), min(float64(hi), mean+margin)
}

// Ratio is good/total, and false when total is 0 (no data, not 0% or 100%).
func Ratio(good, total uint64) (float64, bool) {
	if total == 0 {
		return 0, false
	}
	return float64(good) / float64(total), true
}
