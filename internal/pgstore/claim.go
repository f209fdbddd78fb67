package pgstore

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Claiming a group's keys by COPY.
//
// In the common case every key of a group is new (clients retry rarely),
// and a binary COPY of the keys into cxop_ids costs PostgreSQL less than
// INSERT … SELECT FROM unnest … ON CONFLICT DO NOTHING RETURNING (no
// speculative insertion, no RETURNING, no unnest). COPY cannot skip a
// taken key: it fails the statement with a unique violation, and only then,
// after waiting on a concurrent inserter of the same key as the INSERT would
// (the unique index makes it wait for that transaction, and fails only if
// it committed). So a group first tries the COPY and, when a key was taken,
// runs again with INSERT … ON CONFLICT, which decides duplicates and
// conflicts as it always has. Either claim writes the same rows in the same
// sorted key order, so replicas claiming overlapping groups still wait on
// each other rather than deadlock, and either is the transaction's first
// write (insertRecords relies on that).
//
// The refused COPY is retried as a whole transaction, not from a SAVEPOINT
// around the COPY. The claim is the transaction's first statement, so
// nothing is lost with it but the BEGIN, and the group pays one more BEGIN
// and ROLLBACK only when a key was taken. A savepoint would cost every
// group, the common all-new one included, a SAVEPOINT and a RELEASE round
// trip, and would make the COPY a subtransaction: its rows would carry a
// subtransaction id that PostgreSQL records in pg_subtrans and that readers
// checking those rows while the transaction is open must look up there.
// (Both would work behind PgBouncer in transaction pooling mode: a
// savepoint and a rollback stay within the transaction.)
//
// A replica that just met a taken key (a client retrying, or replicas
// receiving the same batches) claims its next copyClaimPause groups with
// INSERT … ON CONFLICT directly, so a retry-heavy load does not pay a
// refused COPY, its dead rows and a second transaction for every group.

// copyClaimPause is how many groups after one that met a taken key claim
// with INSERT … ON CONFLICT without trying the COPY first.
const copyClaimPause = 64

// claimStats chooses a group's claim and counts what the claims did.
type claimStats struct {
	// pause is how many more groups skip the COPY.
	pause atomic.Int64
	// copied and inserted count the committed groups whose keys were
	// claimed by COPY and by INSERT … ON CONFLICT; refused counts the
	// COPY claims a taken key failed.
	copied, inserted, refused atomic.Int64
}

// tryCopy reports whether the next group tries the COPY claim.
func (c *claimStats) tryCopy() bool {
	for {
		p := c.pause.Load()
		if p <= 0 {
			return true
		}
		if c.pause.CompareAndSwap(p, p-1) {
			return false
		}
	}
}

// sawTakenKey pauses the COPY claim after a group met a key taken before.
func (c *claimStats) sawTakenKey() { c.pause.Store(copyClaimPause) }

// errKeyTaken: the COPY claim met a key stored before (or committed
// meanwhile by another replica); the group runs again with INSERT … ON
// CONFLICT.
var errKeyTaken = errors.New("an idempotency key of the group is taken")

// copyClaim writes the group's keys, in the order given (sorted), by
// binary COPY. A taken key fails it with errKeyTaken, after which the
// transaction is aborted.
func copyClaim(ctx context.Context, tx pgx.Tx, c *columns) error {
	size := 0
	for i := range c.ids {
		size += len(c.kinds[i]) + len(c.subjects[i]) + len(c.ids[i])
	}
	keys := newCopyRows(5, size+len(c.ids)*(2+5*4+8+8))
	for i := range c.ids {
		keys.row()
		keys.text(c.kinds[i])
		keys.text(c.subjects[i])
		keys.text(c.ids[i])
		keys.int64(c.fingerprints[i])
		keys.int64(c.times[i])
	}
	err := copyInto(ctx, tx, copyKeys, keys)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && pe.TableName == "cxop_ids" {
		return errors.Join(errKeyTaken, err)
	}
	return err
}
