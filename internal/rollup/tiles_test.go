package rollup

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestTilesMatchSet checks that the exported tiling counts, bucket by
// bucket, what a Set's window answers, for random records and windows.
func TestTilesMatchSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	now := t0
	s := NewSet(DefaultRetention)
	perBucket := map[BucketKey]uint64{}
	var b Batch
	for range 5000 {
		at := now.Add(-time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
		b.Events = append(b.Events, ev(at, rng.Uint64(), 1, true))
		for _, k := range BucketsOf(at.UnixNano()) {
			perBucket[k]++
		}
	}
	s.Apply(&b)
	for _, w := range []time.Duration{time.Minute, time.Hour, 6 * time.Hour, 3 * 24 * time.Hour, 28 * 24 * time.Hour, 50 * 24 * time.Hour} {
		for range 20 {
			end := now.Add(-time.Duration(rng.Int64N(int64(10 * 24 * time.Hour))))
			a, win, err := s.TouchpointWindow([]string{"chat"}, w, end, now)
			if err != nil {
				t.Fatal(err)
			}
			tiles, tw := DefaultRetention.Tiles(w, end, now)
			if tw != win {
				t.Fatalf("window %s ending %s: tiles cover %+v, the set %+v", w, end, tw, win)
			}
			var n uint64
			next := tw.Start
			for _, k := range tiles {
				if k.Start != next {
					t.Fatalf("window %s ending %s: tile %+v does not start at %d", w, end, k, next)
				}
				next += k.Res.Step()
				n += perBucket[k]
			}
			if next != tw.End && len(tiles) > 0 {
				t.Fatalf("window %s ending %s: tiles end at %d, window at %d", w, end, next, tw.End)
			}
			if n != a.Interactions {
				t.Fatalf("window %s ending %s: tiles count %d, the set %d", w, end, n, a.Interactions)
			}
		}
	}
}
