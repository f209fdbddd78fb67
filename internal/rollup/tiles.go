package rollup

import "time"

// This file exposes the bucket arithmetic to stores that keep buckets
// somewhere other than a Set (the PostgreSQL store), so that they fold and
// tile exactly as a Set does.

// Resolutions lists every resolution, finest first.
var Resolutions = [numResolutions]Resolution{Minute, Hour, Day}

// BucketsOf returns the bucket of each resolution that a record at t
// (unix nanoseconds) is counted in.
func BucketsOf(t int64) [numResolutions]BucketKey {
	var out [numResolutions]BucketKey
	for r := range numResolutions {
		out[r] = BucketKey{Res: r, Start: alignDown(t, r)}
	}
	return out
}

// Horizon is the earliest bucket start of resolution res still kept at now;
// older buckets are dropped, as Flush drops them from a Set.
func (r Retention) Horizon(res Resolution, now time.Time) int64 {
	return r.horizons(now.UnixNano())[res]
}

// Tiles returns, in time order, the buckets whose merge answers the window
// [end-window, end) at now, and the span they cover: the same buckets, in
// the same order, that a Set's TouchpointWindow and SurveyWindow merge.
// Consecutive tiles are contiguous, so a record at t is in the window when
// Start <= t < End and then in exactly one tile.
func (r Retention) Tiles(window time.Duration, end, now time.Time) ([]BucketKey, Window) {
	h := r.horizons(now.UnixNano())
	e := alignUp(end.UnixNano(), Minute)
	start, stop := alignEdges(e-int64(window), e, h)
	var tiles []BucketKey
	for t := start; t < stop; {
		res := Minute
		switch {
		case t%steps[Day] == 0 && t+steps[Day] <= stop && t >= h[Day]:
			res = Day
		case t%steps[Hour] == 0 && t+steps[Hour] <= stop && t >= h[Hour]:
			res = Hour
		}
		tiles = append(tiles, BucketKey{Res: res, Start: t})
		t += steps[res]
	}
	return tiles, Window{Start: start, End: stop}
}
