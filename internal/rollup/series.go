package rollup

import (
	"fmt"
	"time"
)

// Resolution is the width of a bucket.
type Resolution uint8

// The three resolutions. A record is counted in one bucket of each, so a
// window can be tiled with day buckets in the middle and finer buckets at
// its edges.
const (
	Minute Resolution = iota
	Hour
	Day
	numResolutions
)

var steps = [numResolutions]int64{int64(time.Minute), int64(time.Hour), int64(24 * time.Hour)}

// Step is the width of a bucket of resolution r in nanoseconds.
func (r Resolution) Step() int64 { return steps[r] }

func (r Resolution) String() string {
	return [...]string{"minute", "hour", "day", "?"}[min(r, numResolutions)]
}

// Retention says how far back buckets of each resolution are kept. Finer
// buckets are kept for less time: a window whose start lies beyond the
// minute horizon starts at an hour boundary, beyond the hour horizon at a
// day boundary (UTC).
type Retention struct {
	Minute time.Duration // default 48h
	Hour   time.Duration // default 45d, enough for a 28d window plus its burn-rate lookbacks at hour precision
	Day    time.Duration // the collector's retention, default 400d
}

// DefaultRetention keeps minutes for 2 days, hours for 45 days, days for 400.
var DefaultRetention = Retention{Minute: 48 * time.Hour, Hour: 45 * 24 * time.Hour, Day: 400 * 24 * time.Hour}

// horizons are the earliest bucket starts still kept at each resolution.
func (r Retention) horizons(now int64) [numResolutions]int64 {
	var h [numResolutions]int64
	for i, keep := range [numResolutions]time.Duration{r.Minute, r.Hour, r.Day} {
		res := Resolution(i)
		h[i] = alignDown(now, res) - int64(keep)
		h[i] = alignDown(h[i], res)
	}
	return h
}

func alignDown(t int64, r Resolution) int64 {
	s := steps[r]
	q := t / s
	if t%s != 0 && t < 0 {
		q--
	}
	return q * s
}

func alignUp(t int64, r Resolution) int64 {
	d := alignDown(t, r)
	if d == t {
		return t
	}
	return d + steps[r]
}

// aggregate is what a Series holds: *Touchpoint or *Survey.
type aggregate[A any] interface {
	Merge(A) error
	MarshalBinary() ([]byte, error)
}

// BucketKey names one bucket of a series.
type BucketKey struct {
	Res   Resolution
	Start int64 // unix nanoseconds, aligned to Res
}

// Series is the buckets of one subject at every resolution.
type Series[A aggregate[A]] struct {
	newAgg  func() A
	buckets [numResolutions]map[int64]A
	dirty   map[BucketKey]struct{}
}

func newSeries[A aggregate[A]](newAgg func() A) *Series[A] {
	s := &Series[A]{newAgg: newAgg, dirty: map[BucketKey]struct{}{}}
	for i := range s.buckets {
		s.buckets[i] = map[int64]A{}
	}
	return s
}

// add applies f to the bucket containing t at every resolution.
func (s *Series[A]) add(t int64, f func(A)) {
	for r := range numResolutions {
		start := alignDown(t, r)
		a, ok := s.buckets[r][start]
		if !ok {
			a = s.newAgg()
			s.buckets[r][start] = a
		}
		f(a)
		s.dirty[BucketKey{r, start}] = struct{}{}
	}
}

// put installs a bucket loaded from a checkpoint.
func (s *Series[A]) put(k BucketKey, a A) { s.buckets[k.Res][k.Start] = a }

// Window is the span a query actually covered, after aligning its edges
// to the buckets that are still kept.
type Window struct {
	Start, End int64 // unix nanoseconds, [Start, End)
}

// tile merges the buckets that exactly cover [start, end) after aligning
// both edges to the finest resolution kept there. start and end are
// rounded to whole minutes first (start up, end up: the current minute
// is included).
func (s *Series[A]) tile(start, end int64, h [numResolutions]int64) (A, Window, error) {
	start, end = alignEdges(start, end, h)
	out := s.newAgg()
	for t := start; t < end; {
		r := Minute
		switch {
		case t%steps[Day] == 0 && t+steps[Day] <= end && t >= h[Day]:
			r = Day
		case t%steps[Hour] == 0 && t+steps[Hour] <= end && t >= h[Hour]:
			r = Hour
		}
		if b, ok := s.buckets[r][t]; ok {
			if err := out.Merge(b); err != nil {
				return out, Window{}, fmt.Errorf("merge %s bucket %s: %w", r, time.Unix(0, t).UTC().Format(time.RFC3339), err)
			}
		}
		t += steps[r]
	}
	return out, Window{Start: start, End: end}, nil
}

// alignEdges rounds a window to what the kept buckets can answer exactly.
func alignEdges(start, end int64, h [numResolutions]int64) (int64, int64) {
	start, end = alignUp(start, Minute), alignUp(end, Minute)
	for _, r := range []Resolution{Minute, Hour} {
		if start < h[r] {
			start = alignUp(start, r+1)
		}
		if end < h[r] {
			end = alignDown(end, r+1)
		}
	}
	if start < h[Day] {
		start = h[Day]
	}
	if end < start {
		end = start
	}
	return start, end
}

// prune drops buckets older than the horizons and returns their keys.
func (s *Series[A]) prune(h [numResolutions]int64) []BucketKey {
	var gone []BucketKey
	for r := range numResolutions {
		for start := range s.buckets[r] {
			if start < h[r] {
				delete(s.buckets[r], start)
				delete(s.dirty, BucketKey{r, start})
				gone = append(gone, BucketKey{r, start})
			}
		}
	}
	return gone
}

// empty reports whether the series holds no bucket.
func (s *Series[A]) empty() bool {
	for r := range numResolutions {
		if len(s.buckets[r]) > 0 {
			return false
		}
	}
	return true
}
