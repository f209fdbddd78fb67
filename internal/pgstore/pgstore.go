// Package pgstore keeps the collector's records and rollups in PostgreSQL,
// so that collectors can run as stateless replicas over one database with
// the guarantees of the embedded store (internal/store): a nil error means
// durable, every id is counted once across all replicas, and a request that
// reuses an id for another payload stores nothing.
//
// Each replica group-commits: the requests queued while a transaction runs
// go into the next one, which claims their idempotency keys in bulk, inserts
// only the new records and commits once. Rollups are folded from the
// unfolded tail by whichever replica holds the fold lease, in the
// transaction that removes what it folded; summaries read the rollups and
// the tail in one snapshot. See docs/postgres.md.
package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// Options configure a Store.
type Options struct {
	// DSN is the connection string (a URL or key=value pairs). It comes
	// from a Secret: it may carry the password.
	DSN string
	// NoStatementCache turns pgx's prepared-statement cache off, for
	// PgBouncer in transaction pooling mode before 1.21 (or with
	// max_prepared_statements at 0), which cannot keep protocol-level
	// prepared statements on one server connection. Every query then runs
	// in one round trip with the unnamed statement.
	NoStatementCache bool
	// MaxConns caps the pool. Default 8.
	MaxConns int32
	// Retention is the rollups' retention, as the embedded store's.
	Retention rollup.Retention
	// Committers is how many group commits a replica runs at once. Default 2:
	// one transaction is built while the other waits for its commit.
	Committers int
	// QueueLength is how many requests may wait for a committer; beyond it
	// Submit returns store.ErrOverloaded. Default 256.
	QueueLength int
	// MaxGroupRecords caps one group commit. Default 5,000.
	MaxGroupRecords int
	// CommitTimeout bounds one group commit; a commit that times out is
	// answered with ErrUnavailable (its outcome is unknown, and a retry is
	// exact). Default 30s.
	CommitTimeout time.Duration
	// FoldInterval is how often the replica tries to fold the tail into the
	// rollups. Default 1s; negative: never in the background (Fold folds).
	FoldInterval time.Duration
	// FoldBatch is how many records one fold transaction folds. Default
	// 10,000.
	FoldBatch int
	// LeaseTTL is how long a singleton's lease (fold, retention,
	// migrations) lasts without renewal: a replica that dies holding one
	// is replaced after it. Default 15s.
	LeaseTTL time.Duration
	// Holder names this replica in lease rows. Default host name plus a
	// random suffix.
	Holder string
	Logger *slog.Logger
	// Now is the clock for rollup horizons; tests inject one. Leases use
	// the database's clock, which every replica shares.
	Now func() time.Time
	// NoEngineFeed leaves the survey engine's record feed out of appends
	// (kv.FeedPrefix in cxop_engine_kv). Only for a database no survey
	// engine reads (benchmarks): every replica of a collector must write
	// it, or the engine misses the records of those that do not.
	NoEngineFeed bool
	// EngineLeaseTTL is how long the survey engine's lease lasts without
	// renewal: a replica that dies holding it is replaced after it.
	// Default 20s. The holder renews it in the background every
	// EngineLeaseRenew (and with every batch it commits), so a step that
	// waits longer than this on slow webhook receivers keeps it.
	EngineLeaseTTL time.Duration
	// EngineLeaseRenew is how often the holder renews the engine's lease.
	// Default a third of EngineLeaseTTL, so that two renewals may fail
	// (a slow database) before it expires.
	EngineLeaseRenew time.Duration
	// EngineClock, when set, is the clock of the engine's lease instead of
	// the database's; tests inject one.
	EngineClock func() time.Time
	// SummaryCacheBytes bounds the memory of the decoded rollup buckets
	// this replica keeps for summaries (bucketcache.go), estimated.
	// Default 64 MiB; negative: no cache, every summary decodes every
	// bucket it merges.
	SummaryCacheBytes int64
}

// DefaultEngineLeaseTTL is Options.EngineLeaseTTL's default: the longest a
// crashed replica's survey engine keeps the others from taking over.
const DefaultEngineLeaseTTL = 20 * time.Second

func (o *Options) defaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if o.Retention == (rollup.Retention{}) {
		o.Retention = rollup.DefaultRetention
	}
	if o.Committers <= 0 {
		o.Committers = 2
	}
	if o.QueueLength <= 0 {
		o.QueueLength = 256
	}
	if o.MaxGroupRecords <= 0 {
		o.MaxGroupRecords = 5000
	}
	if o.CommitTimeout <= 0 {
		o.CommitTimeout = 30 * time.Second
	}
	if o.FoldInterval == 0 {
		o.FoldInterval = time.Second
	}
	if o.FoldBatch <= 0 {
		o.FoldBatch = 10000
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.Holder = host + "-" + hex.EncodeToString(b[:])
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.EngineLeaseTTL <= 0 {
		o.EngineLeaseTTL = DefaultEngineLeaseTTL
	}
	if o.EngineLeaseRenew <= 0 {
		o.EngineLeaseRenew = o.EngineLeaseTTL / 3
	}
	if o.SummaryCacheBytes == 0 {
		o.SummaryCacheBytes = 64 << 20
	}
}

// Store is one replica's handle on the database.
type Store struct {
	opts Options
	pool *pgxpool.Pool

	queue   chan *request
	closeMu sync.RWMutex
	closed  bool
	workers sync.WaitGroup
	stop    context.CancelFunc

	partMu     sync.Mutex
	partitions map[int64]bool // day starts whose partition exists

	engineOnce sync.Once
	engine     *engineKV // the survey engine's storage (engine.go)
	// buckets are the rollup buckets summaries decoded (nil: no cache).
	buckets *bucketCache
	// decoded counts the buckets summaries decoded, for tests.
	decoded atomic.Int64
	// claims chooses how groups claim their keys (claim.go).
	claims claimStats
	// auditMu guards hashKey, the audit log's hash key once read.
	auditMu sync.Mutex
	hashKey []byte
}

// Open connects, migrates the schema (under the migration lease, so
// replicas starting together migrate once) and starts the committers and
// the fold.
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts.defaults()
	if opts.DSN == "" {
		// pgx would fall back to PGHOST and friends, or a local socket:
		// never what a collector given an empty Secret key means.
		return nil, errors.New("the database connection string is empty")
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx's message may quote the DSN, password and all.
		return nil, errors.New("parse the database connection string: it is not a valid URL or key=value list")
	}
	cfg.MaxConns = opts.MaxConns
	if opts.NoStatementCache {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.ConnConfig.StatementCacheCapacity = 0
		cfg.ConnConfig.DescriptionCacheCapacity = 0
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, unavailable(fmt.Errorf("connect to the database: %w", err))
	}
	s := &Store{opts: opts, pool: pool, queue: make(chan *request, opts.QueueLength), partitions: map[int64]bool{},
		buckets: newBucketCache(opts.SummaryCacheBytes)}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, unavailable(err)
	}
	// Today's partition and the next two days' exist before the first
	// record, so that ingest rarely creates one.
	now := opts.Now()
	if err := s.ensurePartitions(ctx, []int64{now.UnixNano(), now.Add(24 * time.Hour).UnixNano(), now.Add(48 * time.Hour).UnixNano()}); err != nil {
		pool.Close()
		return nil, unavailable(err)
	}
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	for range opts.Committers {
		s.workers.Add(1)
		go s.commitLoop()
	}
	if opts.FoldInterval > 0 {
		s.workers.Add(1)
		go s.maintain(bg)
	}
	opts.Logger.Info("postgres store ready", "holder", opts.Holder, "statementCache", !opts.NoStatementCache)
	return s, nil
}

// Close stops accepting records, commits what is queued, stops the fold,
// gives up the singleton leases this replica holds (so that another
// replica, or a check for a running collector, need not wait for them to
// expire) and closes the pool.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.queue)
	s.closeMu.Unlock()
	s.stop()
	s.workers.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for _, name := range []string{"fold", "retention"} {
		if err := s.releaseLease(ctx, name); err != nil {
			s.opts.Logger.Warn("give up a lease; it expires instead", "lease", name, "err", err)
			break
		}
	}
	cancel()
	s.pool.Close()
	return nil
}

// Pool is the store's connection pool, for the survey engine's tables
// later and for tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping reports whether the database answers, for a readiness probe.
func (s *Store) Ping(ctx context.Context) error { return unavailable(s.pool.Ping(ctx)) }

// maintain folds the tail and keeps tomorrow's partitions made.
func (s *Store) maintain(ctx context.Context) {
	defer s.workers.Done()
	t := time.NewTicker(s.opts.FoldInterval)
	defer t.Stop()
	var lastDay int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := s.Fold(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.opts.Logger.Error("fold the tail into the rollups", "err", err)
				}
				break
			}
			if n < s.opts.FoldBatch {
				break
			}
		}
		now := s.opts.Now()
		if day := dayStart(now.UnixNano()); day != lastDay {
			if err := s.ensurePartitions(ctx, []int64{now.Add(24 * time.Hour).UnixNano(), now.Add(48 * time.Hour).UnixNano()}); err != nil {
				s.opts.Logger.Error("create the next days' record partitions", "err", err)
			} else {
				lastDay = day
			}
		}
	}
}

// inTx runs fn in a transaction, again on a serialization failure or a
// deadlock, and classifies what finally failed.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	var err error
	for attempt := range maxAttempts {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return unavailable(errors.Join(err, werr))
			}
		}
		err = pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || !retryable(err) {
			break
		}
	}
	return unavailable(err)
}

const maxAttempts = 6

// backoff waits a jittered, growing delay before another attempt.
func backoff(ctx context.Context, attempt int) error {
	var b [1]byte
	_, _ = rand.Read(b[:])
	d := time.Duration(attempt*attempt)*5*time.Millisecond + time.Duration(b[0])*50*time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
