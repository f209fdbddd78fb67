package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// Export calls fn with the JSON of every stored record of one subject, in
// the order they were stored (sequence order; replicas committing at once
// interleave). json is valid only during the call.
func (s *Store) Export(ctx context.Context, kind rollup.Kind, subject string, fn func(json []byte) error) error {
	rows, err := s.pool.Query(ctx, `SELECT body FROM cxop_records WHERE kind = $1 AND subject = $2 ORDER BY seq`, string(rune(kind)), subject)
	if err != nil {
		return unavailable(fmt.Errorf("export: %w", err))
	}
	var body []byte
	_, err = pgx.ForEachRow(rows, []any{&body}, func() error { return fn(body) })
	return unavailable(err)
}

// Has reports whether a record of subject with this idempotency key is
// stored.
func (s *Store) Has(ctx context.Context, kind rollup.Kind, subject, id string) (bool, error) {
	var one int
	err := s.pool.QueryRow(ctx, `SELECT 1 FROM cxop_ids WHERE kind = $1 AND subject = $2 AND id = $3`, string(rune(kind)), subject, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, unavailable(err)
}

// PruneRecords deletes raw records and their idempotency keys whose event
// time is before cutoff, as the embedded store's PruneRecords, on the
// replica holding the retention lease (elsewhere it does nothing and
// returns 0). Days wholly before cutoff go by dropping their partition;
// the day cutoff falls in loses its rows before cutoff by a delete. Ingest
// refuses records that old, so a deleted id cannot come back. Records not
// yet folded stay in the tail until the fold counts them.
func (s *Store) PruneRecords(ctx context.Context, cutoff time.Time) (int, error) {
	c := cutoff.UnixNano()
	parts, err := s.partitionsList(ctx)
	if err != nil {
		return 0, unavailable(fmt.Errorf("prune: list record partitions: %w", err))
	}
	deleted := 0
	held := true
	// step runs one piece of the prune in a transaction fenced by the lease.
	step := func(fn func(pgx.Tx) error) error {
		return s.inTx(ctx, func(tx pgx.Tx) error {
			ok, err := s.claimLease(ctx, tx, "retention")
			if err != nil || !ok {
				held = ok
				return err
			}
			return fn(tx)
		})
	}
	for d, name := range parts {
		if d+day > c || !held {
			continue
		}
		var n int
		err := step(func(tx pgx.Tx) error {
			// Dropping a partition locks the parent table for a moment;
			// never queue behind a long reader with ingest queued behind.
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{name}.Sanitize()).Scan(&n); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE `+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return deleted, fmt.Errorf("prune: drop partition %s: %w", name, err)
		}
		if held {
			deleted += n
			s.partMu.Lock()
			delete(s.partitions, d)
			s.partMu.Unlock()
		}
	}
	// The day the cutoff falls in, addressed by its partition's name: a
	// delete through the parent with the cutoff as a parameter may be
	// planned generically and scan every partition.
	if name, ok := parts[dayStart(c)]; ok && held && c > dayStart(c) {
		var n int
		err := step(func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{name}.Sanitize()+` WHERE event_time < $1`, c)
			n = int(tag.RowsAffected())
			return err
		})
		if held {
			deleted += n
		}
		if err != nil {
			return deleted, fmt.Errorf("prune: delete records before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
		}
	}
	// The keys go in slices, so no transaction holds many row locks long.
	for more := held; more; {
		err := step(func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM cxop_ids WHERE (kind, subject, id) IN
(SELECT kind, subject, id FROM cxop_ids WHERE event_time < $1 LIMIT 10000)`, c)
			if err != nil {
				return err
			}
			more = tag.RowsAffected() == 10000
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("prune: delete idempotency keys before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
		}
		more = more && held
	}
	return deleted, nil
}

// Pruned is what PruneExpired did and saw, as the embedded store reports
// it for the collector's retention estimate: Deleted records were past
// retention (0 on a replica that does not hold the retention lease), Kept
// remain, Recent of them at or after the recentSince given, and Oldest is
// the earliest event time kept (zero when none is).
type Pruned = store.RecordsPruned

// PruneExpired prunes as PruneRecords does, then counts the records kept:
// all of them and those at or after recentSince. It counts idempotency
// keys, one per stored record and pruned with it, by their event-time
// index rather than reading every partition of the records.
func (s *Store) PruneExpired(ctx context.Context, cutoff, recentSince time.Time) (Pruned, error) {
	n, err := s.PruneRecords(ctx, cutoff)
	out := Pruned{Deleted: n}
	if err != nil {
		return out, err
	}
	var oldest *int64
	err = s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE event_time >= $1), min(event_time) FROM cxop_ids`,
		recentSince.UnixNano()).Scan(&out.Kept, &out.Recent, &oldest)
	if err != nil {
		return out, unavailable(fmt.Errorf("prune: count the records kept: %w", err))
	}
	if oldest != nil {
		out.Oldest = time.Unix(0, *oldest).UTC()
	}
	return out, nil
}
