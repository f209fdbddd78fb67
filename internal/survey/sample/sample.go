// Package sample decides who is asked: deterministic sampling, so that a
// customer is always in or always out of a survey's sample, and the
// contact budget, so that no customer is asked twice within a throttle
// whichever survey asks.
package sample

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// resolution is the number of sampling buckets; percents are honoured to
// 1/10,000 of a point (12.5% keeps buckets below 125,000).
const resolution = 1_000_000

// In reports whether customer is in the sample of survey at percent
// (0–100). The answer depends only on the three arguments: a hash of the
// survey and the customer picks one of a million buckets, and the sample
// is the buckets below percent. Raising percent keeps everyone who was in.
func In(survey, customer string, percent float64) bool {
	if percent >= 100 {
		return true
	}
	if percent <= 0 {
		return false
	}
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(survey)))
	h.Write(n[:])
	h.Write([]byte(survey))
	h.Write([]byte(customer))
	sum := h.Sum(nil)
	bucket := binary.BigEndian.Uint64(sum[:8]) % resolution
	return float64(bucket) < percent*resolution/100
}

// Throttled reports whether a customer last invited at last (by any
// survey, whose own throttle was lastThrottle) may not be invited at now
// by a survey with throttle. The longer of the two throttles applies: a
// survey that asks at most once a quarter keeps a monthly survey from
// asking the same customer a week later, and the monthly one keeps the
// quarterly one away for a month. A zero last means never invited.
func Throttled(last time.Time, lastThrottle, throttle time.Duration, now time.Time) bool {
	if last.IsZero() {
		return false
	}
	return now.Sub(last) < max(throttle, lastThrottle)
}
