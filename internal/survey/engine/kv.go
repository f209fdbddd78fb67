package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// KV is the engine's storage (package kv): an ordered key-value view with
// atomic batches, on the embedded store (PebbleKV, store.Store.EngineKV) or
// on PostgreSQL (pgstore.Store.EngineKV).
type KV = kv.KV

// PebbleKV is the engine's storage on the embedded store's Pebble
// database, shared with the records (the engine's keys start with 's').
func PebbleKV(db *pebble.DB) KV { return kv.Pebble(db) }

// indexedBatch is a batch whose Get sees the batch's own writes (Set and
// Delete; not DeleteRange), for read-modify-writes within one batch.
type indexedBatch struct {
	kv.Batch
	r kv.Reader
	// writes holds the values set, nil for a key deleted.
	writes map[string][]byte
}

func (b *indexedBatch) Set(key, value []byte) error {
	b.writes[string(key)] = append([]byte{}, value...)
	return b.Batch.Set(key, value)
}

func (b *indexedBatch) Delete(key []byte) error {
	b.writes[string(key)] = nil
	return b.Batch.Delete(key)
}

func (b *indexedBatch) Get(key []byte) ([]byte, error) {
	if v, ok := b.writes[string(key)]; ok {
		if v == nil {
			return nil, kv.ErrNotFound
		}
		return append([]byte(nil), v...), nil
	}
	return b.r.Get(key)
}

// lockWaitMax bounds how long an API call (a wave, a follow-up, a prune
// batch) waits for another replica's step to finish.
const lockWaitMax = time.Minute

// lock takes the engine's lock: the mutex that orders this process's
// steps and calls, then the store's lock among the replicas sharing it
// (kv.KV.Lock), which fences every batch committed until unlock. With wait
// false it reports false at once when another replica holds it.
func (e *Engine) lock(ctx context.Context, wait bool) (bool, error) {
	e.mu.Lock()
	held, err := e.kv.Lock(ctx, wait)
	if err != nil || !held {
		e.mu.Unlock()
		return false, err
	}
	if e.kv.OthersWrote() {
		// The floors hold only for this engine's own writes.
		e.floors = floors{}
		e.feed = feedFloor{}
	}
	if every := e.kv.RenewEvery(); every > 0 {
		e.stopRenew = e.renewLock(every)
	}
	return true, nil
}

// renewLock renews the lock every every until the returned stop is called
// (by unlock, which waits for it). It runs beside the work done under the
// lock (a step's deliveries may wait on receivers for longer than the
// lease lasts) and through the KV, so that a replica whose storage is gone
// renews nothing. Losing the lock is logged and counted; the work goes on
// until its next commit, which the fencing token refuses.
func (e *Engine) renewLock(every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, every)
			err := e.kv.RenewLock(rctx)
			rcancel()
			switch {
			case ctx.Err() != nil:
				return
			case err == nil:
				e.metrics.leaseRenewals.WithLabelValues("renewed").Inc()
			case errors.Is(err, kv.ErrNotHeld):
				e.metrics.leaseRenewals.WithLabelValues("lost").Inc()
				e.opts.Logger.Warn("the survey engine's lease was taken by another replica while this one worked under it; its next commit will be refused")
				return
			default:
				e.metrics.leaseRenewals.WithLabelValues("failed").Inc()
				e.opts.Logger.Warn("renew the survey engine's lease", "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// lockWait is lock, waiting up to lockWaitMax.
func (e *Engine) lockWait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, lockWaitMax)
	defer cancel()
	if _, err := e.lock(ctx, true); err != nil {
		return fmt.Errorf("wait for the survey engine's lock: %w", err)
	}
	return nil
}

func (e *Engine) unlock() {
	if e.stopRenew != nil {
		e.stopRenew()
		e.stopRenew = nil
	}
	e.kv.Unlock()
	e.mu.Unlock()
}
