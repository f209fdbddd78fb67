package pgstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

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

// foldReadSQL reads the fold's batch: the records with a sequence in
// ($1, $2]. The range is bounded by the batch's size, not by a LIMIT on
// everything above the watermark: whatever plan the statistics of a day's
// partition lead to (an index scan in sequence order, or a bitmap of the
// range and a sort), it reads only the batch's rows, even when the fold is
// far behind. Sequences are drawn one by one, so the range holds at most
// as many records as it is wide (fewer where appends rolled back). seq + 0
// is what the fold's index (cxop_records_fold, migration 0006) is on.
const foldReadSQL = `SELECT seq, kind, subject, event_time, customer_hash, wait_seconds, flags, score FROM cxop_records
WHERE seq + 0 > $1 AND seq + 0 <= $2`

// seqRecord is a record to fold, with its sequence.
type seqRecord struct {
	seq int64
	tailRecord
}

// Fold folds up to FoldBatch records above the watermark into the rollups,
// if this replica holds (or takes) the fold lease, and returns how many it
// folded. One transaction renews the lease, reads the records it folds,
// rewrites the buckets they fall in, drops buckets past retention and
// moves the watermark: a record enters the rollups exactly when the
// watermark passes its sequence.
//
// Sequences are drawn before the appends that hold them commit, so the
// records above the watermark are not all visible yet, and one that
// commits late may hold a lower sequence than one already seen. The fold
// therefore only folds up to a settled sequence: each step notes the
// highest sequence drawn, read before its transaction takes an id, and
// then that id (an append takes its id, by claiming its keys, before it
// draws a sequence, so every append holding a sequence up to the mark has
// a lower id). Once the oldest transaction still running is at or above
// the noted id, every such append has ended, and the mark's sequence is
// settled. Marks are kept in cxop_fold, so a replica that takes the lease
// over goes on from its predecessor's.
func (s *Store) Fold(ctx context.Context) (int, error) {
	st, err := s.fold(ctx)
	return st.folded, err
}

// foldStep is what one fold step did and saw.
type foldStep struct {
	folded    int   // records folded
	held      bool  // this replica held the fold lease
	watermark int64 // the watermark it left (when held)
	behind    bool  // settled records are left above the watermark
	// stalled: records were drawn past the watermark and the mark noted
	// before them has not settled (an older transaction still runs).
	stalled bool
}

// fold is Fold, reporting the step.
func (s *Store) fold(ctx context.Context) (foldStep, error) {
	var st foldStep
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		st = foldStep{}
		// First, before any write gives this transaction its id.
		var drawn int64
		if err := tx.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cxop_record_seq`).Scan(&drawn); err != nil {
			return err
		}
		var err error
		if st.held, err = s.claimLease(ctx, tx, "fold"); err != nil || !st.held {
			return err
		}
		var f foldRow
		if err := tx.QueryRow(ctx, `SELECT watermark, settled, mark_seq, mark_xid,
    pg_current_xact_id()::text::bigint, pg_snapshot_xmin(pg_current_snapshot())::text::bigint
FROM cxop_fold WHERE name = 'rollups'`).Scan(&f.watermark, &f.settled, &f.markSeq, &f.markXid, &f.xid, &f.xmin); err != nil {
			return err
		}
		st.stalled = !f.advance(drawn) && drawn > f.settled
		var recs []seqRecord
		if f.settled > f.watermark {
			upTo := min(f.settled, f.watermark+int64(s.opts.FoldBatch))
			rows, err := tx.Query(ctx, foldReadSQL, f.watermark, upTo)
			if err != nil {
				return err
			}
			if recs, err = collectSeqRecords(rows); err != nil {
				return err
			}
			if err := foldRecords(ctx, tx, recs); err != nil {
				return err
			}
			f.watermark = upTo
		}
		st.behind, st.watermark = f.watermark < f.settled, f.watermark
		if _, err := tx.Exec(ctx, `UPDATE cxop_fold SET watermark = $1, settled = $2, mark_seq = $3, mark_xid = $4,
    folded = folded + $5, folded_at = CASE WHEN $5 > 0 THEN now() ELSE folded_at END
WHERE name = 'rollups'`, f.watermark, f.settled, f.markSeq, f.markXid, len(recs)); err != nil {
			return err
		}
		// Buckets past retention go, as a Set's Flush drops them.
		now := s.opts.Now()
		for _, res := range rollup.Resolutions {
			if _, err := tx.Exec(ctx, `DELETE FROM cxop_rollups WHERE resolution = $1 AND bucket_start < $2`,
				int16(res), s.opts.Retention.Horizon(res, now)); err != nil {
				return err
			}
		}
		st.folded = len(recs)
		return nil
	})
	if err != nil {
		return foldStep{}, fmt.Errorf("fold: %w", err)
	}
	if st.held {
		s.sawWatermark(st.watermark)
	}
	return st, nil
}

// collectSeqRecords reads rows of (seq, kind, subject, event_time,
// customer_hash, wait_seconds, flags, score).
func collectSeqRecords(rows pgx.Rows) ([]seqRecord, error) {
	var recs []seqRecord
	var seq, t, h int64
	var kind, subject string
	var wait float64
	var flags, score int16
	_, err := pgx.ForEachRow(rows, []any{&seq, &kind, &subject, &t, &h, &wait, &flags, &score}, func() error {
		if len(kind) != 1 || (kind[0] != byte(rollup.KindTouchpoint) && kind[0] != byte(rollup.KindSurvey)) || score < 0 || score > 10 {
			return fmt.Errorf("record %d is corrupt (kind %q, score %d)", seq, kind, score)
		}
		recs = append(recs, seqRecord{seq, decodeTail(kind, subject, t, h, wait, flags, score)})
		return nil
	})
	return recs, err
}

// foldRow is cxop_fold's row as a fold step reads it, with its
// transaction's id and the oldest transaction id still running.
type foldRow struct {
	watermark, settled int64 // folded through; every append up to it ended
	markSeq, markXid   int64 // a sequence drawn, and an id taken after it
	xid, xmin          int64
}

// advance settles the mark once every transaction older than its id has
// ended, and then notes a new one: drawn, read before this step's id. It
// reports false when the mark stays unsettled.
func (f *foldRow) advance(drawn int64) bool {
	if f.markXid != 0 && f.xmin < f.markXid {
		return false // an append that may hold a sequence up to the mark runs still
	}
	if f.markXid != 0 {
		f.settled = max(f.settled, f.markSeq)
	}
	f.markSeq, f.markXid = drawn, f.xid
	return true
}

// foldRecords adds records, in sequence order, to the buckets they fall in.
func foldRecords(ctx context.Context, tx pgx.Tx, recs []seqRecord) error {
	if len(recs) == 0 {
		return nil
	}
	// In sequence order, as the embedded store counts them.
	slices.SortFunc(recs, func(a, b seqRecord) int { return cmp.Compare(a.seq, b.seq) })
	buckets := map[bucketID]agg{}
	for i := range recs {
		for _, k := range rollup.BucketsOf(recs[i].time()) {
			buckets[bucketID{recs[i].kind, recs[i].subject, k}] = agg{}
		}
	}
	if err := loadBuckets(ctx, tx, buckets); err != nil {
		return err
	}
	for i := range recs {
		r := &recs[i].tailRecord
		for _, k := range rollup.BucketsOf(r.time()) {
			id := bucketID{r.kind, r.subject, k}
			a := buckets[id]
			if a.tp == nil && a.sv == nil {
				a = newAgg(r.kind)
				buckets[id] = a
			}
			a.add(r)
		}
	}
	return storeBuckets(ctx, tx, buckets)
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
	Tail      int64 // records stored and not yet folded: above the watermark
}

// FoldState reads where the fold stands, in one snapshot.
func (s *Store) FoldState(ctx context.Context) (FoldState, error) {
	var f FoldState
	hint, err := s.tailHint(ctx)
	if err != nil {
		return f, err
	}
	// The hint lets the planner see how few records are above it
	// (windowSQL).
	err = s.pool.QueryRow(ctx, `SELECT watermark, folded, (SELECT count(*) FROM cxop_records WHERE seq + 0 > $1 AND seq > watermark)
FROM cxop_fold WHERE name = 'rollups'`, hint).Scan(&f.Watermark, &f.Folded, &f.Tail)
	if err == nil && f.Watermark < hint {
		// The watermark went back (a restored database): count from it.
		s.sawWatermark(f.Watermark)
		return s.FoldState(ctx)
	}
	return f, unavailable(err)
}

// foldStallWarning is how long the fold may wait for an older transaction
// before each warning.
const foldStallWarning = time.Minute

// stallClock tells when a fold that keeps finding its mark unsettled has
// waited another foldStallWarning.
type stallClock struct{ since, warned time.Time }

func (c *stallClock) observe(stalled bool, now time.Time) bool {
	if !stalled {
		*c = stallClock{}
		return false
	}
	if c.since.IsZero() {
		c.since = now
	}
	if now.Sub(c.since) < foldStallWarning || now.Sub(c.warned) < foldStallWarning {
		return false
	}
	c.warned = now
	return true
}

// warnFoldStalled logs the transaction the fold waits for: summaries stay
// exact meanwhile, but read ever more records above the watermark.
func (s *Store) warnFoldStalled(ctx context.Context) {
	var pid int32
	var app, state string
	var started *time.Time
	err := s.pool.QueryRow(ctx, `SELECT pid, coalesce(application_name, ''), coalesce(state, ''), xact_start FROM pg_stat_activity
WHERE backend_xid IS NOT NULL ORDER BY age(backend_xid) DESC LIMIT 1`).Scan(&pid, &app, &state, &started)
	if err != nil {
		s.opts.Logger.Warn("the fold waits for a transaction that began before the records above its watermark were written; summaries read those records until it ends", "err", err)
		return
	}
	attrs := []any{"pid", pid, "application_name", app, "state", state}
	if started != nil {
		attrs = append(attrs, "running_for", time.Since(*started).Round(time.Second).String())
	}
	s.opts.Logger.Warn("the fold waits for a transaction that began before the records above its watermark were written; summaries read those records until it ends", attrs...)
}
