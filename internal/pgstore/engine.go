package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// The survey engine's storage on PostgreSQL (engine.NewOn(s.EngineKV(),
// nil, …)): the engine's ordered keys in cxop_engine_kv, its batches as
// transactions, and its lock among replicas as a fenced lease in
// cxop_engine_lock. The engine works under that lock (one step, wave,
// follow-up, erasure or prune batch at a time across all replicas), so its
// read-then-write logic is exactly the embedded store's; the lock's token,
// checked in every write transaction, keeps a replica that paused past its
// lease from committing over its successor. See docs/postgres.md.

// engineLockName is the one row of cxop_engine_lock.
const engineLockName = "engine"

// enginePage is how many rows an iterator reads per query.
const enginePage = 512

// engineKV is a Store's kv.KV. One engine runs per Store: the lock's token
// is the Store's.
type engineKV struct {
	s *Store
	// mu guards token, the fencing token of the lock held, 0 when none,
	// and last, the token of this engine's previous hold.
	mu          sync.Mutex
	token, last int64
}

var _ kv.KV = (*engineKV)(nil)

// EngineKV is the survey engine's storage in this database, for
// engine.NewOn(s.EngineKV(), nil, sender, opts): the engine reads new
// records from the feed each append writes (kv.FeedPrefix), so it needs no
// Source. One engine per Store.
func (s *Store) EngineKV() kv.KV {
	s.engineOnce.Do(func() { s.engine = &engineKV{s: s} })
	return s.engine
}

// opContext bounds one engine statement: the engine's interface has no
// context, and a database that stopped answering must not hang a step.
func (k *engineKV) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), k.s.opts.CommitTimeout)
}

// nowArg is the lease clock: nil lets the statement use the database's.
func (k *engineKV) nowArg() any {
	if k.s.opts.EngineClock == nil {
		return nil
	}
	return k.s.opts.EngineClock().UnixNano()
}

const dbNowNanos = `(extract(epoch from clock_timestamp()) * 1e9)::bigint`

func (k *engineKV) Get(key []byte) ([]byte, error) {
	ctx, cancel := k.opContext()
	defer cancel()
	return kvGet(ctx, k.s.pool, key)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func kvGet(ctx context.Context, q querier, key []byte) ([]byte, error) {
	var v []byte
	err := q.QueryRow(ctx, `SELECT value FROM cxop_engine_kv WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, kv.ErrNotFound
	}
	if err != nil {
		return nil, unavailable(err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (k *engineKV) NewIter(lower, upper []byte) (kv.Iterator, error) {
	return &kvIter{q: k.s.pool, timeout: k.s.opts.CommitTimeout, lower: lower, upper: upper}, nil
}

func (k *engineKV) NewSnapshot() (kv.Snapshot, error) {
	// Bounded, so that an exhausted pool or a database that hangs fails the
	// reader instead of holding its request for ever.
	ctx, cancel := k.opContext()
	defer cancel()
	tx, err := k.s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, unavailable(err)
	}
	// The snapshot is taken at the transaction's first statement, not at
	// BEGIN: take it now.
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		_ = tx.Rollback(ctx)
		return nil, unavailable(err)
	}
	return &kvSnapshot{tx: tx, timeout: k.s.opts.CommitTimeout}, nil
}

// Lock takes the engine's lease: free, expired, or already this replica's.
// Taking it bumps the token, which fences the previous holder's batches.
func (k *engineKV) Lock(ctx context.Context, wait bool) (bool, error) {
	for {
		var token int64
		err := k.s.inTx(ctx, func(tx pgx.Tx) error {
			err := tx.QueryRow(ctx, `UPDATE cxop_engine_lock
SET holder = $1, token = token + 1, expires_at = coalesce($2::bigint, `+dbNowNanos+`) + $3::bigint
WHERE name = $4 AND (holder = '' OR holder = $1 OR expires_at < coalesce($2::bigint, `+dbNowNanos+`))
RETURNING token`, k.s.opts.Holder, k.nowArg(), k.s.opts.EngineLeaseTTL.Nanoseconds(), engineLockName).Scan(&token)
			if errors.Is(err, pgx.ErrNoRows) {
				token = 0
				return nil
			}
			return err
		})
		if err != nil {
			return false, err
		}
		if token != 0 {
			k.mu.Lock()
			if k.token != 0 {
				k.last = k.token // taken again without an Unlock
			}
			k.token = token
			k.mu.Unlock()
			return true, nil
		}
		if !wait {
			return false, nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

// OthersWrote reports whether another replica held the lease between this
// one's previous hold and the current one: tokens are consecutive only if
// none did.
func (k *engineKV) OthersWrote() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last == 0 || k.token != k.last+1
}

// Unlock gives the lease up at once, so that another replica's engine need
// not wait for it to expire. A failure leaves it to expire.
func (k *engineKV) Unlock() {
	k.mu.Lock()
	token := k.token
	k.token, k.last = 0, token
	k.mu.Unlock()
	if token == 0 {
		return
	}
	ctx, cancel := k.opContext()
	defer cancel()
	if _, err := k.s.pool.Exec(ctx, `UPDATE cxop_engine_lock SET holder = '', expires_at = 0 WHERE name = $1 AND token = $2`,
		engineLockName, token); err != nil {
		k.s.opts.Logger.Warn("release the survey engine's lease", "err", err)
	}
}

// RenewLock extends the lease held by this engine's token: the engine
// calls it in the background (every RenewEvery) while it holds the lease,
// so that a step waiting on slow receivers between two commits keeps it.
// Only the expiry moves; a token moved on by a takeover is ErrNotHeld.
func (k *engineKV) RenewLock(ctx context.Context) error {
	k.mu.Lock()
	token := k.token
	k.mu.Unlock()
	if token == 0 {
		return kv.ErrNotHeld
	}
	tag, err := k.s.pool.Exec(ctx, `UPDATE cxop_engine_lock SET expires_at = coalesce($1::bigint, `+dbNowNanos+`) + $2::bigint
WHERE name = $3 AND token = $4`, k.nowArg(), k.s.opts.EngineLeaseTTL.Nanoseconds(), engineLockName, token)
	if err != nil {
		return unavailable(err)
	}
	if tag.RowsAffected() != 1 {
		return kv.ErrNotHeld
	}
	return nil
}

// RenewEvery is Options.EngineLeaseRenew.
func (k *engineKV) RenewEvery() time.Duration { return k.s.opts.EngineLeaseRenew }

// ConfigRevision reads cxop_config_revision (RecordConfigRevision). In
// its own statement after the feed's read, under READ COMMITTED, it sees
// every raise committed before an entry the read saw: a replica raises it
// before it accepts records under the newer config.
func (k *engineKV) ConfigRevision() (int64, error) {
	ctx, cancel := k.opContext()
	defer cancel()
	var rev int64
	if err := k.s.pool.QueryRow(ctx, `SELECT revision FROM cxop_config_revision WHERE name = 'collector'`).Scan(&rev); err != nil {
		return 0, unavailable(err)
	}
	return rev, nil
}

// FeedMark is a transaction id taken when it runs, after the feed's read:
// every append in flight then took its id earlier, provided it took its
// transaction id before drawing its records' sequences, which the append
// does by claiming the records' idempotency keys (a write) first. It is a
// new id (pg_current_xact_id in a transaction of its own), not the
// snapshot's xmax: that is one past the newest transaction that has ended,
// and the newest append may well be running with an id at or above it.
// One transaction id per mark; the engine marks only when it sets a new
// floor pending, so at most every other read of the feed.
func (k *engineKV) FeedMark() (uint64, bool, error) {
	ctx, cancel := k.opContext()
	defer cancel()
	var mark int64
	if err := k.s.pool.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&mark); err != nil {
		return 0, false, unavailable(err)
	}
	return uint64(mark), true, nil
}

// FeedSettled reports whether the oldest transaction still running is at
// or above mark: every one below it ended.
func (k *engineKV) FeedSettled(mark uint64) (bool, error) {
	ctx, cancel := k.opContext()
	defer cancel()
	var xmin int64
	if err := k.s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&xmin); err != nil {
		return false, unavailable(err)
	}
	return uint64(xmin) >= mark, nil
}

// RecordConfigRevision raises the greatest config revision loaded by a
// replica (kv.KV.ConfigRevision) to revision, if it is lower. A replica
// calls it before it accepts records under a config of that revision, so
// that an engine whose config is older leaves their feed entries to one
// that knows what they trigger.
func (s *Store) RecordConfigRevision(ctx context.Context, revision int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE cxop_config_revision SET revision = $1 WHERE name = 'collector' AND revision < $1`,
		revision); err != nil {
		return unavailable(fmt.Errorf("record the config revision: %w", err))
	}
	return nil
}

func (k *engineKV) NewBatch() kv.Batch { return &kvBatch{k: k} }

// kvBatch is a batch of writes applied in one transaction by Commit.
type kvBatch struct {
	k   *engineKV
	ops []kvOp
}

type kvOpKind byte

const (
	opSet kvOpKind = iota
	opDelete
	opDeleteRange
)

type kvOp struct {
	kind       kvOpKind
	key, value []byte // value: the end of a range
}

func (b *kvBatch) Set(key, value []byte) error {
	b.ops = append(b.ops, kvOp{opSet, bytes.Clone(key), append([]byte{}, value...)})
	return nil
}

func (b *kvBatch) Delete(key []byte) error {
	b.ops = append(b.ops, kvOp{kind: opDelete, key: bytes.Clone(key)})
	return nil
}

func (b *kvBatch) DeleteRange(start, end []byte) error {
	b.ops = append(b.ops, kvOp{opDeleteRange, bytes.Clone(start), bytes.Clone(end)})
	return nil
}

func (b *kvBatch) Empty() bool  { return len(b.ops) == 0 }
func (b *kvBatch) Count() int   { return len(b.ops) }
func (b *kvBatch) Close() error { b.ops = nil; return nil }

// Commit checks the token and renews the lease, then applies the writes,
// in one transaction. The token check updates the lock row, so a replica
// taking the lease over waits for this commit, and this one, if the lease
// was taken first, finds a token not its own and writes nothing.
func (b *kvBatch) Commit() error {
	k := b.k
	k.mu.Lock()
	token := k.token
	k.mu.Unlock()
	if token == 0 {
		return kv.ErrNotHeld
	}
	ctx, cancel := k.opContext()
	defer cancel()
	err := k.s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE cxop_engine_lock SET expires_at = coalesce($1::bigint, `+dbNowNanos+`) + $2::bigint
WHERE name = $3 AND token = $4`, k.nowArg(), k.s.opts.EngineLeaseTTL.Nanoseconds(), engineLockName, token)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return kv.ErrNotHeld
		}
		return applyOps(ctx, tx, b.ops)
	})
	if err != nil {
		return fmt.Errorf("commit the survey engine's batch: %w", err)
	}
	return nil
}

// applyOps writes ops in order with few statements: the sets and deletes
// between two range deletions, last write of each key winning, as one
// upsert and one delete of arrays.
func applyOps(ctx context.Context, tx pgx.Tx, ops []kvOp) error {
	pending := map[string]*kvOp{}
	var order []string
	flush := func() error {
		var setKeys, setValues, delKeys [][]byte
		for _, k := range order {
			op := pending[k]
			if op.kind == opSet {
				setKeys, setValues = append(setKeys, op.key), append(setValues, op.value)
			} else {
				delKeys = append(delKeys, op.key)
			}
		}
		clear(pending)
		order = order[:0]
		if len(delKeys) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM cxop_engine_kv WHERE key = ANY($1::bytea[])`, delKeys); err != nil {
				return err
			}
		}
		if len(setKeys) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO cxop_engine_kv (key, value)
SELECT * FROM unnest($1::bytea[], $2::bytea[]) ORDER BY 1
ON CONFLICT (key) DO UPDATE SET value = excluded.value`, setKeys, setValues); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range ops {
		op := &ops[i]
		if op.kind == opDeleteRange {
			if err := flush(); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM cxop_engine_kv WHERE key >= $1 AND key < $2`, op.key, op.value); err != nil {
				return err
			}
			continue
		}
		if _, ok := pending[string(op.key)]; !ok {
			order = append(order, string(op.key))
		}
		pending[string(op.key)] = op
	}
	return flush()
}

// kvSnapshot reads in one REPEATABLE READ transaction.
type kvSnapshot struct {
	tx      pgx.Tx
	timeout time.Duration
}

func (s *kvSnapshot) Get(key []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return kvGet(ctx, s.tx, key)
}

func (s *kvSnapshot) NewIter(lower, upper []byte) (kv.Iterator, error) {
	return &kvIter{q: s.tx, timeout: s.timeout, lower: lower, upper: upper}, nil
}

func (s *kvSnapshot) Close() error { return s.tx.Rollback(context.Background()) }

// kvIter reads [lower, upper) a page at a time.
type kvIter struct {
	q            querier
	timeout      time.Duration
	lower, upper []byte
	keys, values [][]byte
	i            int
	// done: no key after the page.
	done bool
	err  error
}

// load reads the page from key on (after key when after is set).
func (it *kvIter) load(from []byte, after bool) bool {
	it.keys, it.values, it.i, it.done = it.keys[:0], it.values[:0], 0, false
	if from == nil {
		from = []byte{}
	}
	op := ">="
	if after {
		op = ">"
	}
	sql := `SELECT key, value FROM cxop_engine_kv WHERE key ` + op + ` $1`
	args := []any{from}
	if it.upper != nil {
		sql += ` AND key < $3`
		args = append(args, enginePage, it.upper)
	} else {
		args = append(args, enginePage)
	}
	sql += ` ORDER BY key LIMIT $2`
	ctx, cancel := context.WithTimeout(context.Background(), it.timeout)
	defer cancel()
	rows, err := it.q.Query(ctx, sql, args...)
	if err != nil {
		it.err = unavailable(err)
		return false
	}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			it.err = err
			return false
		}
		if v == nil {
			v = []byte{}
		}
		it.keys, it.values = append(it.keys, k), append(it.values, v)
	}
	if err := rows.Err(); err != nil {
		it.err = unavailable(err)
		return false
	}
	it.done = len(it.keys) < enginePage
	return len(it.keys) > 0
}

func (it *kvIter) First() bool { return it.load(it.lower, false) }

func (it *kvIter) SeekGE(key []byte) bool {
	if it.lower != nil && bytes.Compare(key, it.lower) < 0 {
		key = it.lower
	}
	return it.load(key, false)
}

func (it *kvIter) Next() bool {
	if !it.Valid() {
		return false
	}
	it.i++
	if it.i < len(it.keys) {
		return true
	}
	if it.done {
		return false
	}
	last := it.keys[len(it.keys)-1]
	return it.load(last, true)
}

func (it *kvIter) Valid() bool   { return it.err == nil && it.i < len(it.keys) }
func (it *kvIter) Key() []byte   { return it.keys[it.i] }
func (it *kvIter) Value() []byte { return it.values[it.i] }
func (it *kvIter) Error() error  { return it.err }
func (it *kvIter) Close() error  { return it.err }
