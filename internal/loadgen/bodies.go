package loadgen

import (
	"math/rand/v2"
	"strconv"
	"time"
)

// Events builds a JSON array of n interaction events for Touchpoint with
// ids prefix-0 … prefix-(n-1). Their times are at, or spread uniformly
// over the span before at when spread > 0.
func Events(prefix string, n int, at time.Time, spread time.Duration, rng *rand.Rand) []byte {
	b := make([]byte, 0, n*170)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = appendID(b, prefix, i)
		b = append(b, `","touchpoint":"`+Touchpoint+`","customer":"c-`...)
		b = strconv.AppendInt(b, rng.Int64N(1_000_000), 10)
		b = append(b, `","waitSeconds":`...)
		b = strconv.AppendFloat(b, float64(rng.IntN(300_000))/1000, 'f', -1, 64)
		b = append(b, `,"resolved":`...)
		b = strconv.AppendBool(b, rng.IntN(4) != 0)
		b = append(b, `,"time":"`...)
		b = spreadTime(at, spread, rng).AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}

// Responses builds a JSON array of n NPS answers (scores 0–10) to Survey
// with ids prefix-0 … prefix-(n-1), times as for Events.
func Responses(prefix string, n int, at time.Time, spread time.Duration, rng *rand.Rand) []byte {
	return ResponsesAt(prefix, n, func(int) time.Time { return spreadTime(at, spread, rng) }, rng)
}

// ID is the id of record i of a batch built with prefix.
func ID(prefix string, i int) string { return string(appendID(nil, prefix, i)) }

func appendID(b []byte, prefix string, i int) []byte {
	b = append(b, prefix...)
	b = append(b, '-')
	return strconv.AppendInt(b, int64(i), 10)
}

func spreadTime(at time.Time, spread time.Duration, rng *rand.Rand) time.Time {
	if spread > 0 {
		at = at.Add(-time.Duration(rng.Int64N(int64(spread))))
	}
	return at.UTC()
}

// ResponsesAt builds a JSON array of n NPS answers to Survey with ids
// prefix-0 … prefix-(n-1), answer i at time timeOf(i).
func ResponsesAt(prefix string, n int, timeOf func(i int) time.Time, rng *rand.Rand) []byte {
	b := make([]byte, 0, n*130)
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = appendID(b, prefix, i)
		b = append(b, `","survey":"`+Survey+`","customer":"c-`...)
		b = strconv.AppendInt(b, rng.Int64N(1_000_000), 10)
		b = append(b, `","score":`...)
		b = strconv.AppendInt(b, int64(rng.IntN(11)), 10)
		b = append(b, `,"time":"`...)
		b = timeOf(i).UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, ']')
}
