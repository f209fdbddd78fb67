package pgstore

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// Summaries merge the rollup buckets that tile the window (the same tiles a
// rollup.Set merges) with the records of the tail in the window, read in
// one statement and so in one snapshot: a record is either folded or in the
// tail there, never both and never neither. A tail record is added to the
// bucket it will be folded into, before the buckets are merged, so that the
// answer is the embedded store's to the bit. Raw records are never read.
//
// Buckets this replica has decoded before come from its bucket cache
// (bucketcache.go): the statement is sent the version of each bucket held
// and returns the value of only those whose row has another version now.

const windowSQL = `SELECT 0, k.subject, k.resolution, k.bucket_start, r.version, r.version = k.version,
    CASE WHEN r.version = k.version THEN NULL ELSE r.value END, 0::bigint, 0::bigint, 0::float8, 0::smallint, 0::smallint
FROM unnest($2::text[], $3::smallint[], $4::bigint[], $5::bigint[]) AS k(subject, resolution, bucket_start, version)
JOIN cxop_rollups r ON r.kind = $1 AND r.subject = k.subject AND r.resolution = k.resolution AND r.bucket_start = k.bucket_start
UNION ALL
SELECT 1, subject, 0::smallint, 0::bigint, 0::bigint, false, NULL::bytea, event_time, customer_hash, wait_seconds, flags, score
FROM cxop_tail
WHERE kind = $1 AND subject = ANY($6) AND event_time >= $7 AND event_time < $8`

// tileAgg is one tile's aggregate in a window; shared when it is the
// cache's, which must not change, and then its row's content at version.
type tileAgg struct {
	agg
	shared  bool
	version int64
}

func (t *tileAgg) empty() bool { return t.tp == nil && t.sv == nil }

// window returns, per name and per tile of the window, the tile's
// aggregate (empty when the tile is).
func (s *Store) window(ctx context.Context, kind rollup.Kind, names []string, window time.Duration, end, now time.Time) (map[string][]tileAgg, []rollup.BucketKey, rollup.Window, error) {
	tiles, win := s.opts.Retention.Tiles(window, end, now)
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	if len(tiles) == 0 || len(names) == 0 {
		return map[string][]tileAgg{}, tiles, win, nil
	}
	per, err := s.readWindow(ctx, kind, names, tiles, win)
	return per, tiles, win, err
}

// mergeTiles calls merge with a name's tile aggregates in tile order. A
// run of two or more day tiles, or of hour tiles, that all come unchanged
// from the database (no tail record in them) is merged once, kept in the
// cache with the versions of its buckets, and merged as one while they stay
// those: a 28-day window is 27 day buckets and up to 46 hour buckets, most
// with dense 16 KiB customer sketches, whose register-wise maximum was most
// of a summary's time. Minute tiles are merged one by one: few are dense,
// and the window's edges move every minute. A merge of merges is the same as the merge of the buckets (counts
// add, sketch registers and the last time take the maximum, sparse
// customer sketches take the union), so the answers do not change;
// TestSummaryCacheAcrossReplicas compares them with the tile by tile merge.
func (s *Store) mergeTiles(kind rollup.Kind, name string, tiles []rollup.BucketKey, row []tileAgg, merge func(agg) error) error {
	for i := 0; i < len(row); {
		j := i
		for j < len(row) && tiles[i].Res != rollup.Minute && tiles[j].Res == tiles[i].Res && (row[j].shared || row[j].empty()) {
			j++
		}
		if s.buckets == nil || j-i < 2 {
			if !row[i].empty() {
				if err := merge(row[i].agg); err != nil {
					return fmt.Errorf("merge %s bucket: %w", tiles[i].Res, err)
				}
			}
			i++
			continue
		}
		id := bucketID{kind, name, tiles[i]}
		versions := make([]int64, j-i)
		for k := range versions {
			versions[k] = -1
			if t := &row[i+k]; !t.empty() {
				versions[k] = t.version
			}
		}
		a, ok := s.buckets.run(id, versions)
		if !ok {
			a = newAgg(kind)
			for k := i; k < j; k++ {
				if !row[k].empty() {
					if err := a.merge(row[k].agg); err != nil {
						return fmt.Errorf("merge %s bucket: %w", tiles[k].Res, err)
					}
				}
			}
			s.buckets.putRun(id, versions, a)
		}
		if err := merge(a); err != nil {
			return fmt.Errorf("merge %d %s buckets: %w", j-i, tiles[i].Res, err)
		}
		i = j
	}
	return nil
}

// readWindow runs windowSQL for distinct names, with the versions the
// bucket cache holds (none without a cache).
func (s *Store) readWindow(ctx context.Context, kind rollup.Kind, names []string, tiles []rollup.BucketKey, win rollup.Window) (map[string][]tileAgg, error) {
	cache := s.buckets
	index := make(map[rollup.BucketKey]int, len(tiles))
	for i, k := range tiles {
		index[k] = i
	}
	nameIndex := make(map[string]int, len(names))
	n := len(names) * len(tiles)
	ids := make([]bucketID, 0, n)
	subjects := make([]string, 0, n)
	res := make([]int16, 0, n)
	starts := make([]int64, 0, n)
	versions := make([]int64, n)
	for ni, name := range names {
		nameIndex[name] = ni
		for _, k := range tiles {
			ids = append(ids, bucketID{kind, name, k})
			subjects = append(subjects, name)
			res, starts = append(res, int16(k.Res)), append(starts, k.Start)
		}
	}
	known := make([]agg, n)
	for i := range versions {
		versions[i] = -1 // no row has it
	}
	if cache != nil {
		cache.lookup(ids, func(i int, version int64, a agg) { versions[i], known[i] = version, a })
	}
	rows, err := s.pool.Query(ctx, windowSQL, string(rune(kind)), subjects, res, starts, versions, names, win.Start, win.End)
	if err != nil {
		return nil, unavailable(err)
	}
	grid := make([][]tileAgg, len(names))
	for i := range grid {
		grid[i] = make([]tileAgg, len(tiles))
	}
	type tailRow struct {
		name int
		rec  tailRecord
	}
	var tail []tailRow
	var src, r, flags, score int16
	var subject string
	var start, version, t, h int64
	var same bool
	var value []byte
	var wait float64
	_, err = pgx.ForEachRow(rows, []any{&src, &subject, &r, &start, &version, &same, &value, &t, &h, &wait, &flags, &score}, func() error {
		if src == 1 {
			if score < 0 || score > 10 {
				return fmt.Errorf("tail row of %s at %d is corrupt (score %d)", subject, t, score)
			}
			ni, ok := nameIndex[subject]
			if !ok {
				return fmt.Errorf("tail row of %q, not asked for", subject)
			}
			tail = append(tail, tailRow{ni, decodeTail(string(rune(kind)), subject, t, h, wait, flags, score)})
			return nil
		}
		ni, ok1 := nameIndex[subject]
		ti, ok2 := index[rollup.BucketKey{Res: rollup.Resolution(r), Start: start}]
		if !ok1 || !ok2 {
			return fmt.Errorf("rollup %c %s bucket at %d, not asked for", kind, subject, start)
		}
		i := ni*len(tiles) + ti
		if same {
			grid[ni][ti] = tileAgg{known[i], true, version}
			return nil
		}
		a, err := decodeAgg(kind, value)
		if err != nil {
			return fmt.Errorf("rollup %c %s bucket at %d: %w", kind, subject, start, err)
		}
		s.decoded.Add(1)
		if cache != nil {
			cache.put(ids[i], version, a, len(value))
		}
		grid[ni][ti] = tileAgg{a, cache != nil, version}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	for i := range tail {
		tr := &tail[i]
		at := tr.rec.time()
		ti := sort.Search(len(tiles), func(j int) bool { return tiles[j].Start+tiles[j].Res.Step() > at })
		if ti == len(tiles) || tiles[ti].Start > at {
			continue // outside the tiles: cannot happen for a time in [Start, End)
		}
		ta := &grid[tr.name][ti]
		switch {
		case ta.empty():
			*ta = tileAgg{newAgg(kind), false, 0}
		case ta.shared:
			*ta = tileAgg{cloneAgg(ta.agg), false, 0}
		}
		ta.add(&tr.rec)
	}
	per := make(map[string][]tileAgg, len(names))
	for ni, name := range names {
		per[name] = grid[ni]
	}
	return per, nil
}

// TouchpointWindow merges the given touchpoints' buckets and unfolded
// records over [end-window, end), as rollup.Set's TouchpointWindow.
func (s *Store) TouchpointWindow(ctx context.Context, names []string, window time.Duration, end, now time.Time) (*rollup.Touchpoint, rollup.Window, error) {
	per, tiles, win, err := s.window(ctx, rollup.KindTouchpoint, names, window, end, now)
	if err != nil {
		return nil, win, err
	}
	out := rollup.NewTouchpoint()
	for _, name := range names {
		a := rollup.NewTouchpoint()
		if err := s.mergeTiles(rollup.KindTouchpoint, name, tiles, per[name], func(b agg) error { return a.Merge(b.tp) }); err != nil {
			return nil, win, fmt.Errorf("touchpoint %s: %w", name, err)
		}
		if err := out.Merge(a); err != nil {
			return nil, win, fmt.Errorf("touchpoint %s: %w", name, err)
		}
	}
	return out, win, nil
}

// SurveyWindow merges a survey's buckets and unfolded answers over
// [end-window, end), as rollup.Set's SurveyWindow.
func (s *Store) SurveyWindow(ctx context.Context, name string, window time.Duration, end, now time.Time) (*rollup.Survey, rollup.Window, error) {
	per, tiles, win, err := s.window(ctx, rollup.KindSurvey, []string{name}, window, end, now)
	if err != nil {
		return nil, win, err
	}
	out := rollup.NewSurvey()
	if err := s.mergeTiles(rollup.KindSurvey, name, tiles, per[name], func(b agg) error { return out.Merge(b.sv) }); err != nil {
		return nil, win, fmt.Errorf("survey %s: %w", name, err)
	}
	return out, win, nil
}

// Names lists the touchpoints and surveys that have buckets or unfolded
// records, sorted.
func (s *Store) Names(ctx context.Context) (touchpoints, surveys []string, err error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT kind, subject FROM cxop_rollups UNION SELECT DISTINCT kind, subject FROM cxop_tail`)
	if err != nil {
		return nil, nil, unavailable(err)
	}
	var kind, subject string
	_, err = pgx.ForEachRow(rows, []any{&kind, &subject}, func() error {
		switch {
		case len(kind) != 1:
		case rollup.Kind(kind[0]) == rollup.KindTouchpoint:
			touchpoints = append(touchpoints, subject)
		case rollup.Kind(kind[0]) == rollup.KindSurvey:
			surveys = append(surveys, subject)
		}
		return nil
	})
	slices.Sort(touchpoints)
	slices.Sort(surveys)
	return touchpoints, surveys, unavailable(err)
}

// merge adds b into a.
func (a agg) merge(b agg) error {
	if a.tp != nil {
		return a.tp.Merge(b.tp)
	}
	return a.sv.Merge(b.sv)
}
