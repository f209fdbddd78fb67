package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"

	"github.com/cxop-dev/cxop/internal/customerdata"
)

// The engine is one customerdata.Holder: everything it keeps about a
// customer is found by walking its queues and decoding each entry, since
// its keys are by time, survey or invitation, not by customer. What it
// keeps besides holds no personal data and stays on erasure: counters per
// survey and day (prefixCount), rate-limit counts (prefixRate), wave markers (prefixWave: survey and
// wave id, when taken), webhook records (prefixGone, prefixFailing) and
// the cursor.
var _ customerdata.Holder = (*Engine)(nil)

// eraseBatch bounds the deletions of one batch of an erasure.
const eraseBatch = 1000

// KeySpan is where the engine's keys lie in the database it shares with
// the store, for a compaction after an erasure.
func KeySpan() (start, end []byte) { return []byte("s/"), []byte("s0") }

// customerQueue is one kind of entry that may name a customer.
type customerQueue struct {
	kind   string
	prefix string
	// customer decodes an entry's customer and its JSON for an access
	// request.
	decode func(value []byte) (customer string, item any, err error)
}

func decodeJSON[T any](customerOf func(*T) string) func([]byte) (string, any, error) {
	return func(v []byte) (string, any, error) {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return "", nil, err
		}
		return customerOf(&x), &x, nil
	}
}

// messageView is a message as an access request shows it: its body as
// the JSON the webhook receives, not base64.
type messageView struct {
	message
	Body json.RawMessage `json:"body"`
}

func decodeMessage(v []byte) (string, any, error) {
	var m message
	if err := json.Unmarshal(v, &m); err != nil {
		return "", nil, err
	}
	var body struct {
		Customer string `json:"customer"`
	}
	if err := json.Unmarshal(m.Body, &body); err != nil {
		return "", nil, fmt.Errorf("message %s: body: %w", m.ID, err)
	}
	return body.Customer, messageView{message: m, Body: m.Body}, nil
}

// feedQueue is the record feed (kv.FeedPrefix), walked by erasure only.
var feedQueue = customerQueue{kind: "feed", prefix: kv.FeedPrefix, decode: func(v []byte) (string, any, error) {
	_, _, _, body, err := kv.DecodeFeed(v)
	if err != nil {
		return "", nil, err
	}
	var rec struct {
		Customer string `json:"customer"`
	}
	if err := json.Unmarshal(body, &rec); err != nil {
		return "", nil, err
	}
	return rec.Customer, nil, nil
}}

var customerQueues = []customerQueue{
	{customerdata.DueEntries, prefixDue, decodeJSON(func(p *pending) string { return p.Customer })},
	{customerdata.Invitations, prefixInv, decodeJSON(func(i *Invitation) string { return i.Customer })},
	{customerdata.Outbox, prefixOut, decodeMessage},
	{customerdata.Parked, prefixPark, decodeMessage},
	{customerdata.Failed, prefixFailed, decodeMessage},
	{customerdata.Detractors, prefixDet, decodeJSON(func(d *Detractor) string { return d.Customer })},
}

// walkCustomer calls fn with every entry of q in r that names customer.
func walkCustomer(ctx context.Context, r kv.Reader, q customerQueue, customer string, fn func(key []byte, item any) error) error {
	it, err := r.NewIter([]byte(q.prefix), prefixEnd([]byte(q.prefix)))
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		c, item, err := q.decode(it.Value())
		if err != nil {
			return fmt.Errorf("%s entry %x: %w", q.kind, it.Key(), err)
		}
		if c != customer {
			continue
		}
		if err := fn(it.Key(), item); err != nil {
			return err
		}
	}
	return it.Error()
}

// followUpView is a follow-up as an access request shows it.
type followUpView struct {
	Survey       string    `json:"survey"`
	Detractor    string    `json:"detractor"`
	AnsweredAt   time.Time `json:"answeredAt"`
	FollowedUpAt time.Time `json:"followedUpAt"`
}

// contactView is the contact history as an access request shows it.
type contactView struct {
	Customer string `json:"customer"`
	contactHistory
}

// ListCustomer calls fn with every entry of the engine that names
// customer: due entries (waves' audience copies among them), invitations
// with their contact fields, the contact history, outbox, parked and
// failed messages, detractors and their follow-ups. It reads a snapshot,
// not under the engine's lock, so that a slow reader of the answer holds
// up no invitation, and a message moving from one queue to another
// meanwhile is listed once.
func (e *Engine) ListCustomer(ctx context.Context, customer string, fn func(kind string, item json.RawMessage) error) error {
	snap, err := e.kv.NewSnapshot()
	if err != nil {
		return err
	}
	defer func() { _ = snap.Close() }()
	emit := func(kind string, item any) error {
		js, err := json.Marshal(item)
		if err != nil {
			return err
		}
		return fn(kind, js)
	}
	for _, key := range contactKeys(customer) {
		ch, ok, err := readContactHistory(snap, key)
		if err != nil {
			return err
		}
		if ok {
			if err := emit(customerdata.ContactHistory, contactView{Customer: customer, contactHistory: ch}); err != nil {
				return err
			}
		}
	}
	for _, q := range customerQueues {
		err := walkCustomer(ctx, snap, q, customer, func(_ []byte, item any) error {
			if err := emit(q.kind, item); err != nil {
				return err
			}
			if d, ok := item.(*Detractor); ok && d.FollowedUpAt != nil {
				return emit(customerdata.FollowUps, followUpView{Survey: d.Survey, Detractor: d.ID, AnsweredAt: d.AnsweredAt, FollowedUpAt: *d.FollowedUpAt})
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// EraseCustomer deletes every entry of the engine that names customer, in
// batches of eraseBatch, the last one synced. It holds the engine's lock
// throughout, so no step reads a record of the customer and writes an
// entry from it meanwhile: erase the records first, then the engine, and
// nothing made from the records erased comes back. The per-day counters
// stay: they hold no personal data. The closed loop's totals are lowered
// by the detractors erased (and the followed-up ones among them), since
// they say how many detractors are open now.
func (e *Engine) EraseCustomer(ctx context.Context, customer string) (customerdata.Counts, error) {
	if err := e.lockWait(ctx); err != nil {
		return nil, err
	}
	defer e.unlock()
	counts := customerdata.Counts{}
	b := e.kv.NewBatch()
	defer func() { _ = b.Close() }()
	// The closed loop's totals count the detractors kept, so that an
	// erased one is not left open for good with nothing to follow up;
	// each is lowered in the batch that deletes its detractor. loop holds
	// the values written, which a Get would not see before the commit.
	loop := map[string]uint64{}
	lower := func(key string) error {
		v, ok := loop[key]
		if !ok {
			var err error
			if v, err = e.getUint(key); err != nil {
				return err
			}
		}
		v -= min(v, 1)
		loop[key] = v
		return b.Set([]byte(key), binary.BigEndian.AppendUint64(nil, v))
	}
	// An item's writes (a detractor with its follow-up and totals) go in
	// one batch; a batch commits once it holds eraseBatch writes.
	del := func(key []byte) { _ = b.Delete(key) }
	commitFull := func() error {
		if b.Count() < eraseBatch {
			return nil
		}
		if err := b.Commit(); err != nil {
			return err
		}
		_ = b.Close()
		b = e.kv.NewBatch()
		return nil
	}
	for i, key := range contactKeys(customer) {
		ch, ok, err := readContactHistory(e.kv, key)
		if err != nil {
			return counts, err
		}
		if ok {
			counts[customerdata.ContactHistory]++
			del(key)
			if i == 0 {
				del(contactIndexKey(ch.At, key))
			}
		}
	}
	for _, q := range customerQueues {
		err := walkCustomer(ctx, e.kv, q, customer, func(key []byte, item any) error {
			counts[q.kind]++
			del(key)
			// The time indexes the prune walks (retention.go) hold ids
			// only; they go with their entries. An invitation's contact
			// index (when its contact is due to be dropped) cannot be
			// found from the invitation, and the prune passes over an
			// index entry whose invitation is gone.
			if inv, ok := item.(*Invitation); ok {
				del(invIndexKey(inv.Created, inv.ID))
			}
			if d, ok := item.(*Detractor); ok {
				del(detIndexKey(d))
				if err := lower(loopKey(d.Survey, loopDetractors)); err != nil {
					return err
				}
				if d.FollowedUpAt != nil {
					counts[customerdata.FollowUps]++
					del(followKey(d))
					if err := lower(loopKey(d.Survey, loopFollowed)); err != nil {
						return err
					}
				}
			}
			return commitFull()
		})
		if err != nil {
			return counts, fmt.Errorf("erase %s: %w", q.kind, err)
		}
	}
	// Records not yet read from the feed (a store that hands records over
	// in it, PostgreSQL) are copies of records the store erases and counts:
	// they go too, uncounted, or the next step would make them due again.
	err := walkCustomer(ctx, e.kv, feedQueue, customer, func(key []byte, _ any) error {
		del(key)
		return commitFull()
	})
	if err != nil {
		return counts, fmt.Errorf("erase unread records: %w", err)
	}
	if err := b.Commit(); err != nil {
		return counts, fmt.Errorf("erase: %w", err)
	}
	return counts, nil
}

// contactKeys are where a customer's contact history may be: under a hash
// of the id (contactKey), and under the id itself in a store written
// before, until its first prune moves it.
func contactKeys(customer string) [][]byte {
	return [][]byte{contactKey(customer), []byte(prefixContact + customer)}
}

// readContactHistory reads the contact history at key, if there is one.
func readContactHistory(r kv.Reader, key []byte) (contactHistory, bool, error) {
	var ch contactHistory
	v, err := r.Get(key)
	if errors.Is(err, kv.ErrNotFound) {
		return ch, false, nil
	}
	if err != nil {
		return ch, false, fmt.Errorf("contact history: %w", err)
	}
	if err := json.Unmarshal(v, &ch); err != nil {
		return ch, false, fmt.Errorf("contact history: %w", err)
	}
	return ch, true, nil
}
