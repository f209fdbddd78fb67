package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestMigrationDrainsTheTail upgrades a database of schema 5, whose
// appends wrote a tail row per record and whose fold deleted them, to
// this build's: the records its fold had counted stay counted once, those
// still in the tail are folded by the migration, and the tail is gone.
func TestMigrationDrainsTheTail(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	old := &Store{opts: Options{DSN: dsn, Now: func() time.Time { return t0 }}, pool: pool, partitions: map[int64]bool{}}
	old.opts.defaults()
	if err := old.migrateTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// 40 records as schema 5's append wrote them: record, key and tail
	// row; the first 15 then folded as its fold did (tail rows deleted,
	// buckets written, watermark moved), the last 25 left in the tail, one
	// of them below the watermark (its append committed late).
	const n, folded = 40, 15
	var recs []seqRecord
	var times []int64
	for i := range n {
		at := t0.Add(-time.Duration(i) * time.Minute)
		times = append(times, at.UnixNano())
		recs = append(recs, seqRecord{int64(i + 1), decodeTail("e", "chat", at.UnixNano(), int64(i%7), float64(i), flagHasWait|flagAssessed, 0)})
	}
	if err := old.ensurePartitions(ctx, times); err != nil {
		t.Fatal(err)
	}
	late := int64(folded - 2) // a sequence below the watermark, still in the tail
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, r := range recs {
			at := r.time()
			if _, err := tx.Exec(ctx, `INSERT INTO cxop_records (seq, event_time, kind, subject, id, customer_hash, wait_seconds, flags, score, body)
VALUES ($1, $2, 'e', 'chat', $3, $4, $5, $6, 0, '\x7b7d')`, r.seq, at, fmt.Sprint("r", r.seq), int64(r.event.CustomerHash), r.event.WaitSeconds, int16(flagHasWait|flagAssessed)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO cxop_ids (kind, subject, id, fingerprint, event_time) VALUES ('e', 'chat', $1, 0, $2)`, fmt.Sprint("r", r.seq), at); err != nil {
				return err
			}
			if r.seq > folded || r.seq == late {
				if _, err := tx.Exec(ctx, `INSERT INTO cxop_tail (seq, kind, subject, event_time, customer_hash, wait_seconds, flags, score)
VALUES ($1, 'e', 'chat', $2, $3, $4, $5, 0)`, r.seq, at, int64(r.event.CustomerHash), r.event.WaitSeconds, int16(flagHasWait|flagAssessed)); err != nil {
					return err
				}
			}
		}
		var done []seqRecord
		for _, r := range recs[:folded] {
			if r.seq != late {
				done = append(done, r)
			}
		}
		if err := foldRecords(ctx, tx, done); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE cxop_fold SET watermark = $1, folded = $2 WHERE name = 'rollups'`, folded, len(done)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT setval('cxop_record_seq', $1)`, n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	s := open(t, dsn)
	fs, err := s.FoldState(ctx)
	if err != nil || fs.Folded != n || fs.Tail != 0 || fs.Watermark != n {
		t.Fatalf("after the migration: %+v (%v); want all %d folded at watermark %d", fs, err, n, n)
	}
	if exists := count(t, s, `SELECT count(*) FROM pg_class WHERE relname = 'cxop_tail'`); exists != 0 {
		t.Fatal("cxop_tail is still there")
	}
	a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 2*time.Hour, t0.Add(time.Second), t0)
	if err != nil || a.Interactions != n {
		t.Fatalf("summary after the migration: %v interactions (%v), want %d, each record once", a.Interactions, err, n)
	}
	// The fold goes on from there with what this build appends.
	submit(t, s, records(rand.New(rand.NewPCG(5, 6)), "after", 30, t0, time.Hour))
	foldAll(t, s)
	a, _, err = s.TouchpointWindow(ctx, []string{"chat"}, 2*time.Hour, t0.Add(time.Second), t0)
	if err != nil || a.Interactions != n+10 {
		t.Fatalf("summary after more records: %v interactions (%v), want %d", a.Interactions, err, n+10)
	}
}
