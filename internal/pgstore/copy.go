package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// What a copy of the store (cxop store copy) reads besides Export: the
// records whole, split by whether the survey engine has read them yet (a
// record still in the engine's feed has not been acted on). A copy into
// this store writes the records the source's engine acted on already
// through a Store opened with NoEngineFeed, so that this store's engine
// never acts on them again.

// RecordPosition is where CopyRecords stopped: records are read in
// (kind, subject, seq) order, the order of an index, so a batch costs an
// index range per partition whatever the table's size.
type RecordPosition struct {
	Kind    string
	Subject string
	Seq     int64
}

// feedKeySQL is the feed key of the record r (kv.FeedPrefix + big-endian
// sequence).
const feedKeySQL = `convert_to('` + kv.FeedPrefix + `', 'UTF8') || int8send(r.seq)`

const copyColumns = `r.seq, r.kind, r.subject, r.id, coalesce(i.fingerprint, 0), r.event_time, r.customer_hash, r.wait_seconds, r.flags, r.score, r.body`

// CopyRecords returns up to limit records after pos that are not in the
// survey engine's feed (the engine has acted on them, or never will), with
// their fingerprints, and the position to continue from. None means done.
func (s *Store) CopyRecords(ctx context.Context, after RecordPosition, limit int) ([]store.Record, RecordPosition, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+copyColumns+`
FROM cxop_records r LEFT JOIN cxop_ids i USING (kind, subject, id)
WHERE (r.kind, r.subject, r.seq) > ($1, $2, $3)
  AND NOT EXISTS (SELECT 1 FROM cxop_engine_kv f WHERE f.key = `+feedKeySQL+`)
ORDER BY r.kind, r.subject, r.seq LIMIT $4`, after.Kind, after.Subject, after.Seq, limit)
	if err != nil {
		return nil, after, unavailable(fmt.Errorf("read records: %w", err))
	}
	recs, _, pos, err := scanCopied(rows, after)
	return recs, pos, err
}

// CopyFeedRecords returns up to limit records whose feed entries come
// after the one of sequence afterSeq (the engine has not read them), each
// with the contact its feed entry holds, and the sequence to continue
// from.
func (s *Store) CopyFeedRecords(ctx context.Context, afterSeq int64, limit int) ([]store.Record, int64, error) {
	from := binary.BigEndian.AppendUint64([]byte(kv.FeedPrefix), uint64(afterSeq)+1)
	rows, err := s.pool.Query(ctx, `SELECT key, value FROM cxop_engine_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3`,
		from, []byte("s/feed0"), limit)
	if err != nil {
		return nil, afterSeq, unavailable(fmt.Errorf("read the survey engine's feed: %w", err))
	}
	var kinds, subjects []string
	var seqs []int64
	contacts := map[int64][]byte{}
	last := afterSeq
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, afterSeq, unavailable(err)
		}
		if len(k) != len(kv.FeedPrefix)+8 {
			continue
		}
		seq := int64(binary.BigEndian.Uint64(k[len(kv.FeedPrefix):]))
		kind, subject, contact, _, err := kv.DecodeFeed(v)
		if err != nil {
			rows.Close()
			return nil, afterSeq, fmt.Errorf("feed entry of record %d: %w", seq, err)
		}
		kinds, subjects, seqs = append(kinds, string(rune(kind))), append(subjects, subject), append(seqs, seq)
		contacts[seq] = bytes.Clone(contact)
		last = seq
	}
	if err := rows.Err(); err != nil {
		return nil, afterSeq, unavailable(err)
	}
	if len(seqs) == 0 {
		return nil, afterSeq, nil
	}
	rows, err = s.pool.Query(ctx, `SELECT `+copyColumns+`
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS f(kind, subject, seq)
JOIN cxop_records r ON (r.kind, r.subject, r.seq) = (f.kind, f.subject, f.seq)
LEFT JOIN cxop_ids i ON (i.kind, i.subject, i.id) = (r.kind, r.subject, r.id)
ORDER BY r.seq`, kinds, subjects, seqs)
	if err != nil {
		return nil, afterSeq, unavailable(fmt.Errorf("read records: %w", err))
	}
	recs, recSeqs, _, err := scanCopied(rows, RecordPosition{})
	if err != nil {
		return nil, afterSeq, err
	}
	for i := range recs {
		recs[i].Contact = contacts[recSeqs[i]]
	}
	return recs, last, nil
}

func scanCopied(rows pgx.Rows, after RecordPosition) ([]store.Record, []int64, RecordPosition, error) {
	defer rows.Close()
	var recs []store.Record
	var seqs []int64
	pos := after
	for rows.Next() {
		var (
			seq, t, hash, fp  int64
			kind, subject, id string
			wait              float64
			flags, score      int16
			body              []byte
		)
		if err := rows.Scan(&seq, &kind, &subject, &id, &fp, &t, &hash, &wait, &flags, &score, &body); err != nil {
			return nil, nil, after, unavailable(err)
		}
		if kind != string(rune(rollup.KindTouchpoint)) && kind != string(rune(rollup.KindSurvey)) {
			return nil, nil, after, fmt.Errorf("record %d has kind %q", seq, kind)
		}
		tr := decodeTail(kind, subject, t, hash, wait, flags, score)
		recs = append(recs, store.Record{Kind: tr.kind, Subject: subject, ID: id, JSON: body,
			Fingerprint: uint64(fp), Event: tr.event, Response: tr.resp})
		seqs = append(seqs, seq)
		pos = RecordPosition{Kind: kind, Subject: subject, Seq: seq}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, after, unavailable(err)
	}
	return recs, seqs, pos, nil
}

// Busy names the replicas that hold a lease now (fold, retention,
// migrations, the survey engine's) other than this store itself: a
// collector running on the database. Empty when none does.
func (s *Store) Busy(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT name || ' lease held by ' || holder FROM cxop_leases WHERE holder <> '' AND holder <> $1 AND expires_at > now()
UNION ALL
SELECT 'survey engine lease held by ' || holder FROM cxop_engine_lock WHERE holder <> '' AND holder <> $1 AND expires_at > `+dbNowNanos+`
ORDER BY 1`, s.opts.Holder)
	if err != nil {
		return nil, unavailable(fmt.Errorf("read leases: %w", err))
	}
	busy, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return busy, unavailable(err)
}

// AuditHashKey is the key the erasure audit log hashes customer ids with
// (created on first use).
func (s *Store) AuditHashKey(ctx context.Context) ([]byte, error) {
	k, err := s.auditKey(ctx)
	return bytes.Clone(k), err
}

// SetAuditHashKey makes key the audit log's hash key; a database that has
// one already keeps it and SetAuditHashKey says whether it is the same.
func (s *Store) SetAuditHashKey(ctx context.Context, key []byte) (same bool, err error) {
	var stored []byte
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO cxop_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, auditKeyName, key); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM cxop_settings WHERE name = $1`, auditKeyName).Scan(&stored)
	})
	if err != nil {
		return false, unavailable(fmt.Errorf("the audit log's hash key: %w", err))
	}
	s.auditMu.Lock()
	s.hashKey = stored
	s.auditMu.Unlock()
	return bytes.Equal(stored, key), nil
}

// ErrFoldLeaseHeld is what FoldAll's error is (errors.Is) when another
// replica holds the fold lease, so the tail cannot be folded now.
var ErrFoldLeaseHeld = errors.New("another replica holds the fold lease")

// FoldAll folds the whole tail into the rollups; it fails with
// ErrFoldLeaseHeld when another replica holds the fold lease.
func (s *Store) FoldAll(ctx context.Context) error {
	for {
		n, err := s.Fold(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	f, err := s.FoldState(ctx)
	if err != nil {
		return err
	}
	if f.Tail != 0 {
		return fmt.Errorf("%d records are left unfolded: %w", f.Tail, ErrFoldLeaseHeld)
	}
	return nil
}

// RollupBuckets calls fn with every stored rollup bucket, keyed as in the
// embedded store's checkpoint (rollup.CheckpointKey); after FoldAll they
// count every record, including those erased or pruned since.
func (s *Store) RollupBuckets(ctx context.Context, fn func(key, value []byte) error) error {
	rows, err := s.pool.Query(ctx, `SELECT kind, subject, resolution, bucket_start, value FROM cxop_rollups ORDER BY kind, subject, resolution, bucket_start`)
	if err != nil {
		return unavailable(fmt.Errorf("read rollups: %w", err))
	}
	var kind, subject string
	var r int16
	var start int64
	var value []byte
	_, err = pgx.ForEachRow(rows, []any{&kind, &subject, &r, &start, &value}, func() error {
		return fn(rollup.CheckpointKey(rollup.Kind(kind[0]), subject, rollup.BucketKey{Res: rollup.Resolution(r), Start: start}), value)
	})
	return unavailable(err)
}

// ReplaceRollups makes the buckets that buckets adds (keyed as
// rollup.CheckpointKey) the rollups of every record stored, in one
// transaction under the fold lease: the tail is emptied, the rollups
// replaced and the watermark set to the last record. A copy of another
// store's records carries that store's rollups this way rather than the
// sums of the records copied (which miss those erased or pruned there). It
// is for a database no collector writes to.
func (s *Store) ReplaceRollups(ctx context.Context, buckets func(add func(key, value []byte) error) error) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		ok, err := s.claimLease(ctx, tx, "fold")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("replace the rollups: another replica holds the fold lease")
		}
		for _, q := range []string{`DELETE FROM cxop_tail`, `DELETE FROM cxop_rollups`,
			`UPDATE cxop_fold SET watermark = (SELECT coalesce(max(seq), 0) FROM cxop_records), folded = (SELECT count(*) FROM cxop_records), folded_at = now() WHERE name = 'rollups'`} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		chunk := map[bucketID]agg{}
		flush := func() error {
			if len(chunk) == 0 {
				return nil
			}
			err := storeBuckets(ctx, tx, chunk)
			clear(chunk)
			return err
		}
		err = buckets(func(key, value []byte) error {
			kind, subject, k, err := rollup.ParseCheckpointKey(key)
			if err != nil {
				return err
			}
			a, err := decodeAgg(kind, value)
			if err != nil {
				return fmt.Errorf("rollup %c %s bucket: %w", kind, subject, err)
			}
			chunk[bucketID{kind, subject, k}] = a
			if len(chunk) >= 1000 {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return flush()
	})
}

// AdvanceRecordSeq makes every record stored from now on take a sequence
// above atLeast. A copy from another store calls it with the source's last
// sequence: the survey engine's state it copies names source sequences (in
// due entries' keys), which then never meet this store's.
func (s *Store) AdvanceRecordSeq(ctx context.Context, atLeast int64) error {
	_, err := s.pool.Exec(ctx, `SELECT setval('cxop_record_seq', greatest($1::bigint, (SELECT last_value FROM cxop_record_seq)))`, atLeast)
	return unavailable(err)
}
