package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Singletons (the fold, retention, migrations) run on one replica at a time
// through lease rows in cxop_leases, not session advisory locks: a lease is
// an ordinary row, so it works through PgBouncer in transaction mode (where
// a session lock would stay on whichever server connection took it) and on
// engines without advisory locks. A lease is taken or renewed by the
// statement below inside the transaction that does the singleton's work, so
// the work commits only if the lease was held when it did: a replica that
// paused past its lease cannot write over its successor. Expiry uses the
// database's clock, shared by every replica.

// A lease row locked by its holder's running transaction is skipped, not
// waited for: the others learn at once that they do not hold it, instead
// of each keeping a connection blocked until the holder commits.
const claimLeaseSQL = `UPDATE cxop_leases
SET holder = $1, expires_at = now() + $2 * interval '1 millisecond'
WHERE name = (SELECT name FROM cxop_leases WHERE name = $3 AND (holder = $1 OR expires_at < now()) FOR UPDATE SKIP LOCKED)`

// renewLeaseSQL is claimLeaseSQL for a holder that must not read another
// replica's momentary lock of the row as the lease lost: it waits for the
// lock instead of skipping the row. A replica whose claim finds the row
// while its holder renews it can lock it for the rest of its own short
// transaction even though its claim then fails (a row version updated
// since its snapshot is locked before it is rechecked), so a holder that
// skipped locked rows would, now and then, let a migration fail with "lost
// the lease" while it held it.
const renewLeaseSQL = `UPDATE cxop_leases
SET holder = $1, expires_at = now() + $2 * interval '1 millisecond'
WHERE name = (SELECT name FROM cxop_leases WHERE name = $3 AND (holder = $1 OR expires_at < now()) FOR UPDATE)`

// claimLease takes or renews the lease in tx; false means another replica
// holds it (or is claiming it at this moment).
func (s *Store) claimLease(ctx context.Context, tx pgx.Tx, name string) (bool, error) {
	return s.leaseStatement(ctx, tx, claimLeaseSQL, name)
}

// renewLease renews the lease in tx for a replica that holds it, waiting
// out other replicas' momentary locks of its row; false means the lease
// expired and another replica took it.
func (s *Store) renewLease(ctx context.Context, tx pgx.Tx, name string) (bool, error) {
	return s.leaseStatement(ctx, tx, renewLeaseSQL, name)
}

func (s *Store) leaseStatement(ctx context.Context, tx pgx.Tx, sql, name string) (bool, error) {
	tag, err := tx.Exec(ctx, sql, s.opts.Holder, s.opts.LeaseTTL.Milliseconds(), name)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// releaseLease gives the lease up so that another replica need not wait for
// it to expire.
func (s *Store) releaseLease(ctx context.Context, name string) error {
	_, err := s.pool.Exec(ctx, `UPDATE cxop_leases SET holder = '', expires_at = TIMESTAMPTZ '1970-01-01 00:00:00+00'
WHERE name = $1 AND holder = $2`, name, s.opts.Holder)
	return err
}

// waitLease blocks until this replica holds the lease, polling.
func (s *Store) waitLease(ctx context.Context, name string) error {
	for {
		var held bool
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			var err error
			held, err = s.claimLease(ctx, tx, name)
			return err
		})
		if err != nil || held {
			return err
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
