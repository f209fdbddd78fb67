package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// Retention. Every class of data the engine stores expires, each from its
// own clock (docs/collector.md lists them):
//
//   - due entries, by when they fall due (the key's time);
//   - contact histories, by the last invitation (time index);
//   - invitations, by when they were made (time index), and their contact
//     fields, Retention.Contact after delivery (time index) or after their
//     message was parked (found by the walk of the messages);
//   - messages (outbox, parked, failed), by when they were made, and the
//     contact in a parked message's body Retention.Contact after it was
//     parked; a message still being retried keeps its contact;
//   - detractors and their follow-up entries, by when the answer came
//     (time index); the closed loop's all-time counters are lowered with
//     them, so they count what is kept;
//   - wave ids, by when the wave was taken; gone and failing webhook
//     records, by when they were recorded;
//   - per-day counters, once their day ends before the retention;
//   - rate-limit buckets, two hours after their hour (of no use after).
//
// Classes keyed by something else than time get a time-ordered secondary
// key, written in the same batch as the entry it indexes, so that a prune
// reads only what expires. Classes that stay small (messages, waves,
// counters, webhook records) are walked whole instead. Every prune batch
// deletes or rewrites an entry together with its index key and commits on
// its own, so a crash between batches loses nothing that should stay and
// the next prune goes on.

// Retention is how long the engine keeps what it stores.
type Retention struct {
	// Keep is how long every class is kept: the collector's retention.
	Keep time.Duration
	// Contact is how long an invitation's contact fields (and those in
	// its message) are kept after its delivery succeeded or was given up
	// (parked).
	Contact time.Duration
}

// Pruned counts what a prune removed, by class.
type Pruned map[string]int

// Classes counted in Pruned.
const (
	ClassDue                = "due"
	ClassContactHistory     = "contact-histories"
	ClassInvitations        = "invitations"
	ClassInvitationContacts = "invitation-contacts"
	ClassMessages           = "messages"
	ClassMessageContacts    = "message-contacts"
	ClassDetractors         = "detractors"
	ClassWaves              = "waves"
	ClassWebhookRecords     = "webhook-records"
	ClassCounters           = "counters"
	ClassRateBuckets        = "rate-buckets"
)

// Time indexes: time(8) and the indexed entry's key rest, no value.
const (
	prefixIxContact    = "s/ix/contact/"    // at(8) hash: a contact history at contactKey
	prefixIxInv        = "s/ix/inv/"        // created(8) invitation id
	prefixIxInvContact = "s/ix/invcontact/" // delivered(8) invitation id: a contact to drop
	prefixIxDet        = "s/ix/det/"        // answered(8) survey 0x00 detractor id
	// prefixIndexed records, per indexed class, how far a store written
	// before the indexes has been indexed: the last key done, or the
	// value "done".
	prefixIndexed = "s/meta/retention-indexed/"
)

// pruneBatch bounds the keys one prune batch reads; each batch commits on
// its own and holds the engine's lock only while it runs.
const pruneBatch = 2000

// rateBucketKeep is how long a rate-limit bucket is of use: the sliding
// hour reads the current and the previous hour.
const rateBucketKeep = 2 * time.Hour

// contactKey is where a customer's contact history is: under a hash of
// the customer id, so that no key holds the id. Keys outlive their
// entries in places a prune does not reach at once: as table boundaries
// in Pebble's MANIFEST, until it is rewritten.
func contactKey(customer string) []byte {
	sum := sha256.Sum256([]byte(customer))
	return append([]byte(prefixContactHash), sum[:16]...)
}

// contactIndexKey indexes the contact history at key by its time.
func contactIndexKey(at time.Time, key []byte) []byte {
	return timeKey(prefixIxContact, at, key[len(prefixContactHash):])
}

// loadContactsMigrated reads whether the contact histories stored under
// customer ids have all moved to contactKey.
func (e *Engine) loadContactsMigrated() error {
	v, err := e.kv.Get([]byte(prefixIndexed + prefixContact))
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	e.contactsMigrated.Store(bytes.Equal(v, indexDone))
	return nil
}

func invIndexKey(created time.Time, id string) []byte {
	return timeKey(prefixIxInv, created, []byte(id))
}

func invContactIndexKey(at time.Time, id string) []byte {
	return timeKey(prefixIxInvContact, at, []byte(id))
}

func detIndexKey(d *Detractor) []byte {
	return timeKey(prefixIxDet, d.AnsweredAt, []byte(d.Survey+"\x00"+d.ID))
}

// pruneHook, when set by a test, runs before each prune batch; an error
// stops the prune there, as a crash would.
var pruneHook func(class string) error

// Prune deletes or strips what is past its retention, in bounded batches,
// and reports what it removed. Run it only on a store that writes.
func (e *Engine) Prune(ctx context.Context, r Retention) (Pruned, error) {
	if r.Keep <= 0 || r.Contact <= 0 {
		return nil, fmt.Errorf("prune: retention %v and contact retention %v must be positive", r.Keep, r.Contact)
	}
	out := Pruned{}
	if err := e.indexForRetention(ctx); err != nil {
		return out, fmt.Errorf("prune: index stored entries by time: %w", err)
	}
	now := e.now()
	cutoff := now.Add(-r.Keep)
	steps := []struct {
		class string
		step  func(from []byte) ([]byte, error)
	}{
		{ClassDue, func(from []byte) ([]byte, error) {
			return e.pruneTimeKeyed(from, prefixDue, cutoff, out, ClassDue)
		}},
		{ClassContactHistory, func(from []byte) ([]byte, error) { return e.pruneContactHistories(from, cutoff, out) }},
		{ClassInvitations, func(from []byte) ([]byte, error) { return e.pruneInvitations(from, cutoff, out) }},
		{ClassInvitationContacts, func(from []byte) ([]byte, error) {
			return e.pruneInvitationContacts(from, now.Add(-r.Contact), out)
		}},
		{ClassMessages, func(from []byte) ([]byte, error) { return e.pruneMessages(from, cutoff, now.Add(-r.Contact), out) }},
		{ClassDetractors, func(from []byte) ([]byte, error) { return e.pruneDetractors(from, cutoff, out) }},
		{ClassWaves, func(from []byte) ([]byte, error) {
			return e.pruneWalk(from, prefixWave, out, ClassWaves, waveExpired(cutoff))
		}},
		{ClassWebhookRecords, func(from []byte) ([]byte, error) {
			return e.pruneWalk(from, prefixGone, out, ClassWebhookRecords, goneExpired(cutoff))
		}},
		{ClassWebhookRecords, func(from []byte) ([]byte, error) {
			return e.pruneWalk(from, prefixFailing, out, ClassWebhookRecords, failingExpired(cutoff))
		}},
		{ClassCounters, func(from []byte) ([]byte, error) {
			return e.pruneWalk(from, prefixCount, out, ClassCounters, counterExpired(cutoff))
		}},
		{ClassRateBuckets, func(from []byte) ([]byte, error) {
			return e.pruneTimeKeyed(from, prefixRate, now.Add(-rateBucketKeep), out, ClassRateBuckets)
		}},
	}
	for _, s := range steps {
		var from []byte
		for {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			if pruneHook != nil {
				if err := pruneHook(s.class); err != nil {
					return out, err
				}
			}
			next, err := s.step(from)
			if err != nil {
				return out, fmt.Errorf("prune %s: %w", s.class, err)
			}
			if next == nil {
				break
			}
			from = next
		}
	}
	return out, nil
}

// pruneBatchRun runs one prune batch under the engine's lock: fn reads
// from an iterator over [lower, upper) and adds to b; the batch commits
// with Sync. It returns the key to go on from, or nil when the range is
// done.
func (e *Engine) pruneBatchRun(lower, upper []byte, fn func(it kv.Iterator, b *indexedBatch) error) ([]byte, error) {
	if err := e.lockWait(context.Background()); err != nil {
		return nil, err
	}
	defer e.unlock()
	it, err := e.kv.NewIter(lower, upper)
	if err != nil {
		return nil, err
	}
	// Indexed, so that lowerCounter reads what the batch wrote.
	b := &indexedBatch{Batch: e.kv.NewBatch(), r: e.kv, writes: map[string][]byte{}}
	defer func() { _ = b.Close() }()
	n := 0
	var next []byte
	for it.First(); it.Valid(); it.Next() {
		if n == pruneBatch {
			next = append([]byte(nil), it.Key()...)
			break
		}
		n++
		if err := fn(it, b); err != nil {
			_ = it.Close()
			return nil, err
		}
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	if !b.Empty() {
		if err := b.Commit(); err != nil {
			return nil, err
		}
	}
	return next, nil
}

func orPrefix(from []byte, prefix string) []byte {
	if from != nil {
		return from
	}
	return []byte(prefix)
}

// pruneTimeKeyed deletes the entries of a time-keyed prefix before cutoff.
func (e *Engine) pruneTimeKeyed(from []byte, prefix string, cutoff time.Time, out Pruned, class string) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefix), timeKey(prefix, cutoff), func(it kv.Iterator, b *indexedBatch) error {
		out[class]++
		return b.Delete(it.Key())
	})
}

// pruneContactHistories deletes the contact histories whose last
// invitation was before cutoff.
func (e *Engine) pruneContactHistories(from []byte, cutoff time.Time, out Pruned) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefixIxContact), timeKey(prefixIxContact, cutoff), func(it kv.Iterator, b *indexedBatch) error {
		key := append([]byte(prefixContactHash), it.Key()[len(prefixIxContact)+8:]...)
		var h contactHistory
		ok, err := e.getJSON(key, &h)
		if err != nil {
			return err
		}
		if ok && h.At.Before(cutoff) {
			_ = b.Delete(key)
			out[ClassContactHistory]++
		}
		return b.Delete(it.Key())
	})
}

// pruneInvitations deletes the invitations made before cutoff.
func (e *Engine) pruneInvitations(from []byte, cutoff time.Time, out Pruned) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefixIxInv), timeKey(prefixIxInv, cutoff), func(it kv.Iterator, b *indexedBatch) error {
		id := string(it.Key()[len(prefixIxInv)+8:])
		if ok, err := e.has(invKey(id)); err != nil {
			return err
		} else if ok {
			_ = b.Delete(invKey(id))
			out[ClassInvitations]++
		}
		return b.Delete(it.Key())
	})
}

// pruneInvitationContacts drops the contact of invitations delivered
// before cutoff.
func (e *Engine) pruneInvitationContacts(from []byte, cutoff time.Time, out Pruned) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefixIxInvContact), timeKey(prefixIxInvContact, cutoff), func(it kv.Iterator, b *indexedBatch) error {
		id := string(it.Key()[len(prefixIxInvContact)+8:])
		if err := e.dropInvitationContact(b, id, out); err != nil {
			return err
		}
		return b.Delete(it.Key())
	})
}

// dropInvitationContact rewrites invitation id without its contact.
func (e *Engine) dropInvitationContact(b *indexedBatch, id string, out Pruned) error {
	var inv Invitation
	ok, err := e.getJSON(invKey(id), &inv)
	if err != nil || !ok || inv.Contact == nil {
		return err
	}
	inv.Contact = nil
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	out[ClassInvitationContacts]++
	return b.Set(invKey(id), data)
}

// pruneMessages walks the outbox, the parked and the failed messages:
// those made before cutoff go; a parked or failed one given up before
// contactCutoff loses the contact in its body, and its invitation its
// contact. A message in the outbox is still being retried and keeps it.
func (e *Engine) pruneMessages(from []byte, cutoff, contactCutoff time.Time, out Pruned) ([]byte, error) {
	// Each queue is walked on its own range, in key order.
	queues := []string{prefixFailed, prefixOut, prefixPark}
	qi := 0
	if from != nil {
		for qi = range queues {
			if bytes.HasPrefix(from, []byte(queues[qi])) {
				break
			}
		}
	}
	for ; qi < len(queues); qi++ {
		q := queues[qi]
		parked := q != prefixOut
		lower := []byte(q)
		if from != nil && bytes.HasPrefix(from, lower) {
			lower = from
		}
		next, err := e.pruneBatchRun(lower, prefixEnd([]byte(q)), func(it kv.Iterator, b *indexedBatch) error {
			var m message
			if err := json.Unmarshal(it.Value(), &m); err != nil {
				return fmt.Errorf("message %x: %w", it.Key(), err)
			}
			if m.Created.Before(cutoff) {
				out[ClassMessages]++
				return b.Delete(it.Key())
			}
			givenUp := m.ParkedAt
			if givenUp.IsZero() {
				givenUp = m.Created // parked before ParkedAt was kept
			}
			if !parked || m.Detractor || !givenUp.Before(contactCutoff) {
				return nil
			}
			body, stripped, err := stripContact(m.Body)
			if err != nil {
				return fmt.Errorf("message %x: %w", it.Key(), err)
			}
			if m.Invitation != "" {
				if err := e.dropInvitationContact(b, m.Invitation, out); err != nil {
					return err
				}
			}
			if !stripped {
				return nil
			}
			m.Body = body
			data, err := json.Marshal(m)
			if err != nil {
				return err
			}
			out[ClassMessageContacts]++
			return b.Set(it.Key(), data)
		})
		if err != nil || next != nil {
			return next, err
		}
		from = nil
	}
	return nil, nil
}

// stripContact returns an invitation body without its contact, and
// whether it had one.
func stripContact(body []byte) ([]byte, bool, error) {
	var ib InvitationBody
	if err := json.Unmarshal(body, &ib); err != nil {
		return nil, false, err
	}
	if ib.Contact == nil {
		return body, false, nil
	}
	ib.Contact = nil
	out, err := json.Marshal(ib)
	return out, true, err
}

// pruneDetractors deletes the detractors answered before cutoff, their
// follow-up entries, and their share of the closed loop's counters.
func (e *Engine) pruneDetractors(from []byte, cutoff time.Time, out Pruned) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefixIxDet), timeKey(prefixIxDet, cutoff), func(it kv.Iterator, b *indexedBatch) error {
		rest := string(it.Key()[len(prefixIxDet)+8:])
		key := []byte(prefixDet + rest)
		var d Detractor
		ok, err := e.getJSON(key, &d)
		if err != nil {
			return err
		}
		if ok {
			_ = b.Delete(key)
			if err := e.lowerCounter(b, loopKey(d.Survey, loopDetractors)); err != nil {
				return err
			}
			if d.FollowedUpAt != nil {
				_ = b.Delete(followKey(&d))
				if err := e.lowerCounter(b, loopKey(d.Survey, loopFollowed)); err != nil {
					return err
				}
			}
			out[ClassDetractors]++
		}
		return b.Delete(it.Key())
	})
}

// lowerCounter takes one off a counter, reading what the batch already
// wrote to it.
func (e *Engine) lowerCounter(b *indexedBatch, key string) error {
	v, err := b.Get([]byte(key))
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cur := uint64(0)
	if len(v) == 8 {
		cur = binary.BigEndian.Uint64(v)
	}
	if cur > 0 {
		cur--
	}
	return b.Set([]byte(key), binary.BigEndian.AppendUint64(nil, cur))
}

// pruneWalk walks a whole prefix and deletes the entries expired says
// are past retention.
func (e *Engine) pruneWalk(from []byte, prefix string, out Pruned, class string, expired func(key, value []byte) bool) ([]byte, error) {
	return e.pruneBatchRun(orPrefix(from, prefix), prefixEnd([]byte(prefix)), func(it kv.Iterator, b *indexedBatch) error {
		if !expired(it.Key(), it.Value()) {
			return nil
		}
		out[class]++
		return b.Delete(it.Key())
	})
}

// waveExpired: a wave id's value is when it was taken (Unix seconds).
func waveExpired(cutoff time.Time) func(_, v []byte) bool {
	return func(_, v []byte) bool {
		return len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < cutoff.Unix()
	}
}

func goneExpired(cutoff time.Time) func(_, v []byte) bool {
	return func(_, v []byte) bool {
		var g goneWebhook
		return json.Unmarshal(v, &g) == nil && g.At.Before(cutoff)
	}
}

func failingExpired(cutoff time.Time) func(_, v []byte) bool {
	return func(_, v []byte) bool {
		var f failingWebhook
		return json.Unmarshal(v, &f) == nil && f.Since.Before(cutoff)
	}
}

// counterExpired: a day's counter goes once the whole day lies before
// cutoff, so that Stats over the retention still reads every day of it.
func counterExpired(cutoff time.Time) func(k, _ []byte) bool {
	return func(k, _ []byte) bool {
		if len(k) < 8 {
			return false
		}
		day := time.Unix(int64(binary.BigEndian.Uint64(k[len(k)-8:])), 0)
		return !day.Add(24 * time.Hour).After(cutoff)
	}
}

// indexForRetention writes the time indexes of entries stored before
// they existed, once per class, in bounded batches; how far it got is
// kept with each batch, so a restart goes on from there.
func (e *Engine) indexForRetention(ctx context.Context) error {
	classes := []struct {
		prefix string
		index  func(b kv.Batch, key, value []byte) error
	}{
		{prefixContact, func(b kv.Batch, k, v []byte) error {
			// Moved under contactKey, unless an invitation since wrote
			// a newer history there.
			var h contactHistory
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			key := contactKey(string(k[len(prefixContact):]))
			if ok, err := e.has(key); err != nil {
				return err
			} else if !ok {
				_ = b.Set(key, v)
				_ = b.Set(contactIndexKey(h.At, key), nil)
			}
			return b.Delete(k)
		}},
		{prefixInv, func(b kv.Batch, _, v []byte) error {
			var inv Invitation
			if err := json.Unmarshal(v, &inv); err != nil {
				return err
			}
			// A delivered invitation's delivery time was not kept: its
			// contact goes Contact after it was made.
			if inv.Delivered && inv.Contact != nil {
				_ = b.Set(invContactIndexKey(inv.Created, inv.ID), nil)
			}
			return b.Set(invIndexKey(inv.Created, inv.ID), nil)
		}},
		{prefixDet, func(b kv.Batch, _, v []byte) error {
			var d Detractor
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			return b.Set(detIndexKey(&d), nil)
		}},
	}
	for _, c := range classes {
		marker := []byte(prefixIndexed + c.prefix)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			done, err := e.indexBatch(marker, c.prefix, c.index)
			if err != nil {
				return err
			}
			if done {
				break
			}
		}
	}
	return nil
}

// indexDone is the marker's value once a class is indexed.
var indexDone = []byte("done")

// indexBatch indexes one batch of a class after the marker's key and
// moves the marker; it reports whether the class is done.
func (e *Engine) indexBatch(marker []byte, prefix string, index func(b kv.Batch, key, value []byte) error) (bool, error) {
	if err := e.lockWait(context.Background()); err != nil {
		return false, err
	}
	defer e.unlock()
	lower := []byte(prefix)
	if v, err := e.kv.Get(marker); err == nil {
		last := v
		if bytes.Equal(last, indexDone) {
			return true, nil
		}
		lower = append(last, 0)
	} else if !errors.Is(err, kv.ErrNotFound) {
		return false, err
	}
	it, err := e.kv.NewIter(lower, prefixEnd([]byte(prefix)))
	if err != nil {
		return false, err
	}
	defer func() { _ = it.Close() }()
	b := e.kv.NewBatch()
	defer func() { _ = b.Close() }()
	n := 0
	var last []byte
	for it.First(); it.Valid() && n < pruneBatch; it.Next() {
		n++
		last = append(last[:0], it.Key()...)
		if err := index(b, it.Key(), it.Value()); err != nil {
			return false, fmt.Errorf("entry %x: %w", it.Key(), err)
		}
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	done := n < pruneBatch
	if done {
		_ = b.Set(marker, indexDone)
	} else {
		_ = b.Set(marker, last)
	}
	if err := b.Commit(); err != nil {
		return false, err
	}
	if done && prefix == prefixContact {
		e.contactsMigrated.Store(true)
	}
	return done, nil
}
