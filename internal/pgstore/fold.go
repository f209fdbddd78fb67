package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// bucketID names one rollup bucket row.
type bucketID struct {
	kind    rollup.Kind
	subject string
	key     rollup.BucketKey
}

// agg is a bucket's aggregate, of one kind or the other.
type agg struct {
	tp *rollup.Touchpoint
	sv *rollup.Survey
}

func newAgg(kind rollup.Kind) agg {
	if kind == rollup.KindTouchpoint {
		return agg{tp: rollup.NewTouchpoint()}
	}
	return agg{sv: rollup.NewSurvey()}
}

func decodeAgg(kind rollup.Kind, b []byte) (agg, error) {
	if kind == rollup.KindTouchpoint {
		a := &rollup.Touchpoint{}
		return agg{tp: a}, a.UnmarshalBinary(b)
	}
	a := &rollup.Survey{}
	return agg{sv: a}, a.UnmarshalBinary(b)
}

func (a agg) add(t *tailRecord) {
	if a.tp != nil {
		a.tp.Add(&t.event)
	} else {
		a.sv.Add(&t.resp)
	}
}

func (a agg) marshal() ([]byte, error) {
	if a.tp != nil {
		return a.tp.MarshalBinary()
	}
	return a.sv.MarshalBinary()
}

// foldDeleteSQL takes the fold's batch: the tail rows of the lowest
// sequences, as a range up to the batch's last sequence (one statement, one
// snapshot: the rows at or below it are exactly the batch). Not
// `seq IN (SELECT … LIMIT $1)`: the tail swings between empty and large, and
// with statistics taken while it was empty the planner joins the batch
// against the whole tail row by row, which is quadratic (minutes for a
// batch of 10,000 over a tail of 200,000), and the tail then grows without
// bound. A range scan on the primary key is linear whatever the statistics.
//
// The range starts at the batch's first sequence, not at the index's start
// (no row of the snapshot is below it): the index entries of the rows
// folded before stay until a vacuum, and after a burst of ingest a scan
// from the start walked thousands of their pages twice per fold.
const foldDeleteSQL = `WITH batch AS (SELECT seq FROM cxop_tail ORDER BY seq LIMIT $1)
DELETE FROM cxop_tail
WHERE seq >= (SELECT min(seq) FROM batch) AND seq <= (SELECT max(seq) FROM batch)
RETURNING seq, kind, subject, event_time, customer_hash, wait_seconds, flags, score`

// Fold folds up to FoldBatch records of the tail into the rollups, if this
// replica holds (or takes) the fold lease, and returns how many it folded.
// One transaction renews the lease, deletes the tail rows it folds, rewrites
// the buckets they fall in, drops buckets past retention and moves the
// watermark: a record leaves the tail exactly when it enters the rollups.
func (s *Store) Fold(ctx context.Context) (int, error) {
	folded := 0
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		folded = 0
		if held, err := s.claimLease(ctx, tx, "fold"); err != nil || !held {
			return err
		}
		rows, err := tx.Query(ctx, foldDeleteSQL, s.opts.FoldBatch)
		if err != nil {
			return err
		}
		type seqRecord struct {
			seq int64
			tailRecord
		}
		recs := make([]seqRecord, 0, min(s.opts.FoldBatch, 1<<16))
		var seq, t, h int64
		var kind, subject string
		var wait float64
		var flags, score int16
		_, err = pgx.ForEachRow(rows, []any{&seq, &kind, &subject, &t, &h, &wait, &flags, &score}, func() error {
			if len(kind) != 1 || (kind[0] != byte(rollup.KindTouchpoint) && kind[0] != byte(rollup.KindSurvey)) || score < 0 || score > 10 {
				return fmt.Errorf("tail row %d is corrupt (kind %q, score %d)", seq, kind, score)
			}
			recs = append(recs, seqRecord{seq, decodeTail(kind, subject, t, h, wait, flags, score)})
			return nil
		})
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			// In sequence order, as the embedded store counts them. The
			// range scan of the primary key mostly returns them so.
			bySeq := func(a, b seqRecord) int { return cmp.Compare(a.seq, b.seq) }
			if !slices.IsSortedFunc(recs, bySeq) {
				slices.SortFunc(recs, bySeq)
			}
			buckets := map[bucketID]agg{}
			var named bucketRun
			for i := range recs {
				r := &recs[i].tailRecord
				if named.covers(r) {
					continue
				}
				named.start(r)
				for _, id := range named.ids {
					buckets[id] = agg{}
				}
			}
			if err := loadBuckets(ctx, tx, buckets); err != nil {
				return err
			}
			// Consecutive records of a subject mostly fall in the same
			// minute, and so in the same hour and day: a run of them
			// looks its buckets up once.
			var run bucketRun
			for i := range recs {
				r := &recs[i].tailRecord
				if !run.covers(r) {
					run.start(r)
					for j, id := range run.ids {
						a := buckets[id]
						if a.tp == nil && a.sv == nil {
							a = newAgg(r.kind)
							buckets[id] = a
						}
						run.aggs[j] = a
					}
				}
				for _, a := range run.aggs {
					a.add(r)
				}
			}
			if err := storeBuckets(ctx, tx, buckets); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE cxop_fold SET watermark = greatest(watermark, $1), folded = folded + $2, folded_at = now()
WHERE name = 'rollups'`, recs[len(recs)-1].seq, len(recs)); err != nil {
				return err
			}
		}
		// Buckets past retention go, as a Set's Flush drops them.
		now := s.opts.Now()
		for _, res := range rollup.Resolutions {
			if _, err := tx.Exec(ctx, `DELETE FROM cxop_rollups WHERE resolution = $1 AND bucket_start < $2`,
				int16(res), s.opts.Retention.Horizon(res, now)); err != nil {
				return err
			}
		}
		folded = len(recs)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("fold: %w", err)
	}
	return folded, nil
}

// bucketRun is the buckets of a run of records of one subject that fall
// in the same bucket of every resolution (the same minute).
type bucketRun struct {
	ok      bool
	kind    rollup.Kind
	subject string
	keys    [len(rollup.Resolutions)]rollup.BucketKey
	ids     [len(rollup.Resolutions)]bucketID
	aggs    [len(rollup.Resolutions)]agg
}

// covers reports whether r falls in the run's buckets.
func (b *bucketRun) covers(r *tailRecord) bool {
	return b.ok && r.kind == b.kind && r.subject == b.subject && rollup.BucketsOf(r.time()) == b.keys
}

// start makes r's buckets the run's.
func (b *bucketRun) start(r *tailRecord) {
	b.ok, b.kind, b.subject, b.keys = true, r.kind, r.subject, rollup.BucketsOf(r.time())
	for j, k := range b.keys {
		b.ids[j] = bucketID{r.kind, r.subject, k}
	}
}

// loadBuckets reads the stored buckets among those named.
func loadBuckets(ctx context.Context, tx pgx.Tx, buckets map[bucketID]agg) error {
	var kinds, subjects []string
	var res []int16
	var starts []int64
	for id := range buckets {
		kinds = append(kinds, string(rune(id.kind)))
		subjects = append(subjects, id.subject)
		res = append(res, int16(id.key.Res))
		starts = append(starts, id.key.Start)
	}
	rows, err := tx.Query(ctx, `SELECT kind, subject, resolution, bucket_start, value FROM cxop_rollups
WHERE (kind, subject, resolution, bucket_start) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bigint[]))`,
		kinds, subjects, res, starts)
	if err != nil {
		return err
	}
	var kind, subject string
	var r int16
	var start int64
	var value []byte
	_, err = pgx.ForEachRow(rows, []any{&kind, &subject, &r, &start, &value}, func() error {
		id := bucketID{rollup.Kind(kind[0]), subject, rollup.BucketKey{Res: rollup.Resolution(r), Start: start}}
		a, err := decodeAgg(id.kind, value)
		if err != nil {
			return fmt.Errorf("rollup %c %s %s bucket at %d: %w", id.kind, subject, id.key.Res, start, err)
		}
		buckets[id] = a
		return nil
	})
	return err
}

// storeBuckets writes buckets back.
func storeBuckets(ctx context.Context, tx pgx.Tx, buckets map[bucketID]agg) error {
	var kinds, subjects []string
	var res []int16
	var starts []int64
	var values [][]byte
	for id, a := range buckets {
		v, err := a.marshal()
		if err != nil {
			return err
		}
		kinds = append(kinds, string(rune(id.kind)))
		subjects = append(subjects, id.subject)
		res = append(res, int16(id.key.Res))
		starts = append(starts, id.key.Start)
		values = append(values, v)
	}
	_, err := tx.Exec(ctx, `INSERT INTO cxop_rollups (kind, subject, resolution, bucket_start, value)
SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bigint[], $5::bytea[])
ON CONFLICT (kind, subject, resolution, bucket_start) DO UPDATE SET value = excluded.value`,
		kinds, subjects, res, starts, values)
	return err
}

// FoldState is where the fold stands.
type FoldState struct {
	Watermark int64 // highest record sequence folded
	Folded    int64 // records folded in all
	Tail      int64 // records stored and not yet folded
}

// FoldState reads where the fold stands, in one snapshot.
func (s *Store) FoldState(ctx context.Context) (FoldState, error) {
	var f FoldState
	err := s.pool.QueryRow(ctx, `SELECT watermark, folded, (SELECT count(*) FROM cxop_tail) FROM cxop_fold WHERE name = 'rollups'`).
		Scan(&f.Watermark, &f.Folded, &f.Tail)
	return f, unavailable(err)
}
