// Package storecopy moves a namespace's data between the embedded store
// (internal/store) and PostgreSQL (internal/pgstore): every record with its
// id, fingerprint and contact, through the target's own Submit (so a record
// already there is a duplicate and an id stored there with another payload
// is reported, never overwritten), the erasure audit log with its hash key,
// and the survey engine's state. It streams in batches and is resumable: a
// copy run again after a crash writes only what is missing.
//
// The survey engine's record feed is the subtle part. The source's engine
// has acted on some records already (invited, queued a closed-loop
// message): those must never reach the target's engine, or a customer is
// invited twice. On the embedded store the engine's cursor (s/cursor) says
// which: the records up to it. On PostgreSQL the feed says which: a record
// with a feed entry has not been read yet. The copy keeps that line: into
// PostgreSQL, the records the engine acted on are written without feed
// entries (pgstore.Options.NoEngineFeed) and the others with; into the
// embedded store, the records the engine acted on are written first, the
// cursor is set after them, and the others follow.
package storecopy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// DefaultBatch is how many records one Submit carries.
const DefaultBatch = 1000

// Options tune a copy; zero values take the defaults.
type Options struct {
	// Batch is how many records one Submit carries (and how many a copy
	// holds in memory). Default DefaultBatch.
	Batch int
	// AfterBatch, when set, is called after each batch of records is
	// stored, with the number of batches so far (tests stop a copy there).
	AfterBatch func(batches int)
	Logger     *slog.Logger
}

func (o *Options) defaults() {
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AfterBatch == nil {
		o.AfterBatch = func(int) {}
	}
}

// Report is what a copy did.
type Report struct {
	// Records is how many records were read from the source; New of them
	// were stored in the target, Duplicates were there already.
	Records, New, Duplicates int
	// Conflicts are the records whose id the target holds with another
	// payload ("touchpoint chat id e-1"): the target's record stands.
	Conflicts []string
	// EngineKeys is how many keys of the survey engine's state were
	// written.
	EngineKeys int
	// Erasures is how many audit log entries the source holds; NewErasures
	// of them were appended to the target.
	Erasures, NewErasures int
	// AuditKeyDiffers: the target already had another hash key for the
	// audit log (it kept it), so erasures logged there before and after
	// the copy hash customers differently from the source's entries.
	AuditKeyDiffers bool
	// Elapsed is how long the copy took.
	Elapsed time.Duration
}

// Postgres is a PostgreSQL store opened for a copy: Store writes the
// survey engine's feed with each record, NoFeed (the same database)
// writes records without it.
type Postgres struct {
	Store, NoFeed *pgstore.Store
}

// OpenPostgres opens the database twice as a copy needs it; opts as for
// the collector (DSN, retention). The holder names the copy in lease rows.
func OpenPostgres(ctx context.Context, opts pgstore.Options) (*Postgres, error) {
	opts.FoldInterval = -1
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("cxop-store-copy/%s/%d", host, os.Getpid())
	}
	st, err := pgstore.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	// The second handle takes no lease, so that the check for a running
	// collector sees only strangers. Neither folds in the background: the
	// copy carries the source's rollups (ReplaceRollups).
	opts.NoEngineFeed = true
	opts.Holder += "/nofeed"
	nf, err := pgstore.Open(ctx, opts)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return &Postgres{Store: st, NoFeed: nf}, nil
}

// Close closes both.
func (p *Postgres) Close() error { return errors.Join(p.NoFeed.Close(), p.Store.Close()) }

// ErrBusy is what an error is (errors.Is) when a collector runs on the
// PostgreSQL side of a copy.
var ErrBusy = errors.New("a collector is running on this database")

// claim refuses a database a collector is running on, then takes the
// survey engine's lease for the copy, so that no engine starting meanwhile
// acts on half-copied state (its batches are fenced off until the copy
// gives the lease up). The copy renews it with each batch.
func (p *Postgres) claim(ctx context.Context) (kv.KV, error) {
	busy, err := p.Store.Busy(ctx)
	if err != nil {
		return nil, err
	}
	if len(busy) > 0 {
		return nil, fmt.Errorf("%w (%s); scale its collector to zero first (a crashed one's leases expire after their TTL)", ErrBusy, busy[0])
	}
	engineKV := p.Store.EngineKV()
	ok, err := engineKV.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w (the survey engine's lease is held)", ErrBusy)
	}
	return engineKV, nil
}

// keyCursor is the embedded engine's cursor over the record log
// (internal/survey/engine): the last sequence it consumed.
var keyCursor = []byte("s/cursor")

// engineSpan bounds the survey engine's keys in either store ('s'...).
var engineLower, engineUpper = []byte("s"), []byte("t")

// storeSpecific: the keys of the engine's state that belong to one store
// and are not copied: the embedded store's cursor (a sequence of its
// log) and PostgreSQL's record feed (written by the target's appends).
func storeSpecific(k []byte) bool {
	return bytes.Equal(k, keyCursor) || bytes.HasPrefix(k, []byte(kv.FeedPrefix))
}

// submitter is a target's Submit.
type submitter interface {
	Submit(ctx context.Context, records []store.Record) (store.Result, error)
}

// submit stores recs in dst and counts them in rep; a record whose id dst
// holds with another payload is reported and left out, and the rest
// submitted again (a conflict refuses the whole request).
func submit(ctx context.Context, dst submitter, recs []store.Record, rep *Report) error {
	for attempt := 0; len(recs) > 0; {
		res, err := dst.Submit(ctx, recs)
		var conflict *store.ConflictError
		switch {
		case err == nil:
			rep.New += res.Accepted
			rep.Duplicates += res.Duplicates
			return nil
		case errors.As(err, &conflict) && conflict.Index >= 0 && conflict.Index < len(recs):
			r := &recs[conflict.Index]
			kind := "survey"
			if r.Kind == rollup.KindTouchpoint {
				kind = "touchpoint"
			}
			rep.Conflicts = append(rep.Conflicts, fmt.Sprintf("%s %s id %s", kind, r.Subject, r.ID))
			recs = append(recs[:conflict.Index:conflict.Index], recs[conflict.Index+1:]...)
		case errors.Is(err, store.ErrOverloaded) && attempt < 50:
			attempt++
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		default:
			return fmt.Errorf("store records: %w", err)
		}
	}
	return nil
}

// copyEngineState copies the engine's keys from src to dst, but the store's
// own, in batches.
func copyEngineState(ctx context.Context, src, dst kv.KV, batch int, rep *Report) error {
	it, err := src.NewIter(engineLower, engineUpper)
	if err != nil {
		return fmt.Errorf("read the survey engine's state: %w", err)
	}
	defer func() { _ = it.Close() }()
	b := dst.NewBatch()
	defer func() { _ = b.Close() }()
	flush := func() error {
		if b.Empty() {
			return nil
		}
		n := b.Count()
		if err := b.Commit(); err != nil {
			return fmt.Errorf("write the survey engine's state: %w", err)
		}
		rep.EngineKeys += n
		_ = b.Close()
		b = dst.NewBatch()
		return ctx.Err()
	}
	for ok := it.First(); ok; ok = it.Next() {
		if storeSpecific(it.Key()) {
			continue
		}
		if err := b.Set(bytes.Clone(it.Key()), bytes.Clone(it.Value())); err != nil {
			return err
		}
		if b.Count() >= batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("read the survey engine's state: %w", err)
	}
	return flush()
}

// copyErasures appends the source's audit log entries the target lacks.
// An entry is the same when its JSON is; the log is small (one entry per
// erasure), so the target's entries are held as a set.
func copyErasures(src, dst customerdata.AuditLog, rep *Report) error {
	have := map[string]int{}
	if err := dst.Erasures(time.Unix(0, 0), func(e customerdata.Erasure) error {
		have[erasureKey(e)]++
		return nil
	}); err != nil {
		return fmt.Errorf("read the target's audit log: %w", err)
	}
	return src.Erasures(time.Unix(0, 0), func(e customerdata.Erasure) error {
		rep.Erasures++
		k := erasureKey(e)
		if have[k] > 0 {
			have[k]--
			return nil
		}
		if err := dst.AppendErasure(e); err != nil {
			return fmt.Errorf("append to the target's audit log: %w", err)
		}
		rep.NewErasures++
		return nil
	})
}

func erasureKey(e customerdata.Erasure) string {
	return fmt.Sprintf("%d|%s|%+v", e.Time.UnixNano(), e.CustomerHash, e.Erased)
}

// EmbeddedToPostgres copies everything of src into dst.
func EmbeddedToPostgres(ctx context.Context, src *store.Store, dst *Postgres, opts Options) (Report, error) {
	opts.defaults()
	start := time.Now()
	var rep Report
	dstKV, err := dst.claim(ctx)
	if err != nil {
		return rep, err
	}
	defer dstKV.Unlock()
	srcKV := src.EngineKV()

	// The records the source's engine consumed: up to its cursor.
	var cursor uint64
	switch v, err := srcKV.Get(keyCursor); {
	case err == nil && len(v) == 8:
		cursor = binary.BigEndian.Uint64(v)
	case err == nil:
		return rep, fmt.Errorf("the survey engine's cursor is %d bytes, not 8", len(v))
	case !errors.Is(err, kv.ErrNotFound):
		return rep, fmt.Errorf("read the survey engine's cursor: %w", err)
	}

	key, err := src.AuditHashKey()
	if err != nil {
		return rep, err
	}
	same, err := dst.Store.SetAuditHashKey(ctx, key)
	if err != nil {
		return rep, err
	}
	rep.AuditKeyDiffers = !same
	// The engine's state names source sequences (due entries' keys): the
	// target's records take sequences above them.
	if err := dst.Store.AdvanceRecordSeq(ctx, int64(src.LastSeq())); err != nil {
		return rep, err
	}
	batch := make([]store.Record, 0, opts.Batch)
	batchConsumed := false
	batches := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if ok, err := dstKV.Lock(ctx, false); err != nil || !ok {
			return errors.Join(fmt.Errorf("%w (the copy lost the survey engine's lease)", ErrBusy), err)
		}
		target := dst.Store
		if batchConsumed {
			target = dst.NoFeed
		}
		if err := submit(ctx, target, batch, &rep); err != nil {
			return err
		}
		batch = batch[:0]
		batches++
		opts.AfterBatch(batches)
		return ctx.Err()
	}
	err = src.CopyRecords(1, func(seq uint64, r *store.Record) error {
		consumed := seq <= cursor
		if len(batch) > 0 && consumed != batchConsumed || len(batch) == opts.Batch {
			if err := flush(); err != nil {
				return err
			}
		}
		batchConsumed = consumed
		rep.Records++
		c := *r
		c.JSON = bytes.Clone(r.JSON)
		c.Contact = bytes.Clone(r.Contact)
		batch = append(batch, c)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return rep, err
	}
	if err := dst.Store.ReplaceRollups(ctx, src.RollupBuckets); err != nil {
		return rep, err
	}
	if err := copyEngineState(ctx, srcKV, dstKV, opts.Batch, &rep); err != nil {
		return rep, err
	}
	if err := copyErasures(src, dst.Store, &rep); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// PostgresToEmbedded copies everything of src into the embedded store
// dstOpts.Dir, which no collector has run on (a new data directory, or one
// a copy was interrupted on); it opens and closes it.
func PostgresToEmbedded(ctx context.Context, src *Postgres, dstOpts store.Options, opts Options) (Report, error) {
	opts.defaults()
	start := time.Now()
	var rep Report
	srcKV, err := src.claim(ctx)
	if err != nil {
		return rep, err
	}
	defer srcKV.Unlock()
	// The rollups carried over are the source's, tail folded in.
	if err := src.Store.FoldAll(ctx); err != nil {
		if errors.Is(err, pgstore.ErrFoldLeaseHeld) { // a collector's fold: it runs on this database
			return rep, fmt.Errorf("%w: %w", ErrBusy, err)
		}
		return rep, err
	}
	dst, err := store.Open(dstOpts)
	if err != nil {
		return rep, fmt.Errorf("open the embedded store (is a collector running on it?): %w", err)
	}
	rep, err = copyIntoEmbedded(ctx, src, srcKV, dst, opts)
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the target store: %w", cerr)
	}
	if err != nil {
		return rep, err
	}
	if err := store.ReplaceRollups(dstOpts, func(add func(key, value []byte) error) error {
		return src.Store.RollupBuckets(ctx, add)
	}); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// copyIntoEmbedded is PostgresToEmbedded but the rollups.
func copyIntoEmbedded(ctx context.Context, src *Postgres, srcKV kv.KV, dst *store.Store, opts Options) (Report, error) {
	var rep Report
	dstKV := dst.EngineKV()
	key, err := src.Store.AuditHashKey(ctx)
	if err != nil {
		return rep, err
	}
	same, err := dst.SetAuditHashKey(key)
	if err != nil {
		return rep, err
	}
	rep.AuditKeyDiffers = !same
	// Whether an earlier run set the target's cursor: then the records
	// the source's engine had read are all copied already, and finding a
	// new one means the source changed since (a collector ran on it).
	_, err = dstKV.Get(keyCursor)
	resumed := err == nil
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return rep, fmt.Errorf("read the survey engine's cursor: %w", err)
	}
	batches := 0
	put := func(recs []store.Record) error {
		if ok, err := srcKV.Lock(ctx, false); err != nil || !ok {
			return errors.Join(fmt.Errorf("%w (the copy lost the survey engine's lease)", ErrBusy), err)
		}
		rep.Records += len(recs)
		if err := submit(ctx, dst, recs, &rep); err != nil {
			return err
		}
		batches++
		opts.AfterBatch(batches)
		return ctx.Err()
	}

	// First the records the source's engine has read (not in its feed).
	var pos pgstore.RecordPosition
	for {
		recs, next, err := src.Store.CopyRecords(ctx, pos, opts.Batch)
		if err != nil {
			return rep, err
		}
		if len(recs) == 0 {
			break
		}
		stored := rep.New
		if err := put(recs); err != nil {
			return rep, err
		}
		if resumed && rep.New > stored {
			return rep, errors.New("the source has records its survey engine read after an earlier copy into this data directory finished copying those: a collector ran on the source in between; copy into a new data directory")
		}
		pos = next
	}
	// The target's engine starts after them. Set once: a rerun finds it
	// and keeps it, the records after it being the unread ones.
	switch _, err := dstKV.Get(keyCursor); {
	case errors.Is(err, kv.ErrNotFound):
		b := dstKV.NewBatch()
		_ = b.Set(keyCursor, binary.BigEndian.AppendUint64(nil, dst.LastSeq()))
		err = b.Commit()
		_ = b.Close()
		if err != nil {
			return rep, fmt.Errorf("set the survey engine's cursor: %w", err)
		}
	case err != nil:
		return rep, fmt.Errorf("read the survey engine's cursor: %w", err)
	}
	// Then the records still in the feed, with their contacts.
	var after int64
	for {
		recs, next, err := src.Store.CopyFeedRecords(ctx, after, opts.Batch)
		if err != nil {
			return rep, err
		}
		if next == after {
			break
		}
		// PostgreSQL keeps no time of receipt: the record's own time
		// stands in for it there (pgstore.PruneContacts), and here too, so
		// that a copied contact expires when it would have at the source
		// rather than contactRetention after the copy.
		for i := range recs {
			if len(recs[i].Contact) > 0 {
				recs[i].ContactSince = recs[i].Time()
			}
		}
		if len(recs) > 0 {
			if err := put(recs); err != nil {
				return rep, err
			}
		}
		after = next
	}
	if err := copyEngineState(ctx, srcKV, dstKV, opts.Batch, &rep); err != nil {
		return rep, err
	}
	if err := copyErasures(src.Store, dst, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}
