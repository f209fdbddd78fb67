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

const windowSQL = `SELECT 0, subject, resolution, bucket_start, value, 0::bigint, 0::bigint, 0::float8, 0::smallint, 0::smallint
FROM cxop_rollups
WHERE kind = $1 AND subject = ANY($2) AND (resolution, bucket_start) IN (SELECT * FROM unnest($3::smallint[], $4::bigint[]))
UNION ALL
SELECT 1, subject, 0::smallint, 0::bigint, NULL::bytea, event_time, customer_hash, wait_seconds, flags, score
FROM cxop_tail
WHERE kind = $1 AND subject = ANY($2) AND event_time >= $5 AND event_time < $6`

// window returns, per name, the aggregates of the tiles of the window, by
// tile index.
func (s *Store) window(ctx context.Context, kind rollup.Kind, names []string, window time.Duration, end, now time.Time) (map[string]map[int]agg, []rollup.BucketKey, rollup.Window, error) {
	tiles, win := s.opts.Retention.Tiles(window, end, now)
	out := map[string]map[int]agg{}
	if len(tiles) == 0 || len(names) == 0 {
		return out, tiles, win, nil
	}
	index := make(map[rollup.BucketKey]int, len(tiles))
	res := make([]int16, len(tiles))
	starts := make([]int64, len(tiles))
	for i, k := range tiles {
		index[k] = i
		res[i], starts[i] = int16(k.Res), k.Start
	}
	rows, err := s.pool.Query(ctx, windowSQL, string(rune(kind)), names, res, starts, win.Start, win.End)
	if err != nil {
		return nil, nil, win, unavailable(err)
	}
	type tailRow struct {
		subject string
		rec     tailRecord
	}
	var tail []tailRow
	var src, r, flags, score int16
	var subject string
	var start, t, h int64
	var value []byte
	var wait float64
	_, err = pgx.ForEachRow(rows, []any{&src, &subject, &r, &start, &value, &t, &h, &wait, &flags, &score}, func() error {
		if src == 1 {
			if score < 0 || score > 10 {
				return fmt.Errorf("tail row of %s at %d is corrupt (score %d)", subject, t, score)
			}
			tail = append(tail, tailRow{subject, decodeTail(string(rune(kind)), subject, t, h, wait, flags, score)})
			return nil
		}
		a, err := decodeAgg(kind, value)
		if err != nil {
			return fmt.Errorf("rollup %c %s bucket at %d: %w", kind, subject, start, err)
		}
		if out[subject] == nil {
			out[subject] = map[int]agg{}
		}
		out[subject][index[rollup.BucketKey{Res: rollup.Resolution(r), Start: start}]] = a
		return nil
	})
	if err != nil {
		return nil, nil, win, unavailable(err)
	}
	for i := range tail {
		tr := &tail[i]
		at := tr.rec.time()
		ti := sort.Search(len(tiles), func(j int) bool { return tiles[j].Start+tiles[j].Res.Step() > at })
		if ti == len(tiles) || tiles[ti].Start > at {
			continue // outside the tiles: cannot happen for a time in [Start, End)
		}
		if out[tr.subject] == nil {
			out[tr.subject] = map[int]agg{}
		}
		a, ok := out[tr.subject][ti]
		if !ok {
			a = newAgg(kind)
			out[tr.subject][ti] = a
		}
		a.add(&tr.rec)
	}
	return out, tiles, win, nil
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
		for i := range tiles {
			if b, ok := per[name][i]; ok {
				if err := a.Merge(b.tp); err != nil {
					return nil, win, fmt.Errorf("touchpoint %s: merge %s bucket: %w", name, tiles[i].Res, err)
				}
			}
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
	for i := range tiles {
		if b, ok := per[name][i]; ok {
			if err := out.Merge(b.sv); err != nil {
				return nil, win, fmt.Errorf("survey %s: merge %s bucket: %w", name, tiles[i].Res, err)
			}
		}
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
