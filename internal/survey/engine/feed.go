package engine

import (
	"bytes"
	"time"
)

// feedRescanEvery is how often the engine reads the record feed from its
// first key even though its floor says nothing below can appear: a safety
// net, should a writer ever draw a sequence before its transaction id
// (kv.KV.FeedSettled's premise). It costs one read over the entries
// deleted since the last vacuum.
const feedRescanEvery = time.Minute

// feedFloor is where the engine starts reading the record feed, so that a
// read does not walk every entry it deleted since the table's last vacuum
// (PostgreSQL keeps deleted index entries until then, and a read from the
// feed's first key stepped over all of them). Sequences are drawn before
// commit, so an entry can commit below one already read: the floor moves
// up to where a read ended only once every writer in flight at that read
// has ended and a later read, from the old floor, has taken what they
// committed. Guarded by Engine.mu; reset when another engine held the lock.
type feedFloor struct {
	// low: every feed entry below it that will ever commit has been
	// consumed. Empty: the feed's start.
	low []byte
	// next is the key after the last one a complete read saw, and mark
	// the writers in flight after that read (kv.KV.FeedMark); pending
	// tells whether they are set.
	next    []byte
	mark    uint64
	pending bool
	// rescanned is when low was last the feed's start.
	rescanned time.Time
}

// from returns the key to start the next read at, and whether the
// pending floor's writers have all ended, which a complete read from there
// needs to move the floor up (settle reports it).
func (f *feedFloor) from(prefix []byte, now time.Time, settle func(mark uint64) (bool, error)) ([]byte, bool, error) {
	if f.low != nil && (now.Sub(f.rescanned) >= feedRescanEvery || now.Before(f.rescanned)) {
		f.low = nil
	}
	if f.low == nil {
		f.rescanned = now
	}
	settled := false
	if f.pending {
		var err error
		if settled, err = settle(f.mark); err != nil {
			return nil, false, err
		}
	}
	if f.low == nil {
		return prefix, settled, nil
	}
	return f.low, settled, nil
}

// read records a read that took every entry from the floor on and was
// committed: last is the last key it saw (nil for none), settled what from
// reported before it, and mark marks the writers in flight after it
// (kv.KV.FeedMark; ok false: the store cannot tell, and the floor stays at
// the feed's start). mark is called only when a new floor is set pending,
// at most once per read: on PostgreSQL each mark takes a transaction id.
func (f *feedFloor) read(last []byte, settled bool, mark func() (uint64, bool, error)) error {
	if settled {
		f.low, f.pending = f.next, false
	}
	if f.pending || last == nil {
		return nil
	}
	next := append(bytes.Clone(last), 0) // the least key above last
	if f.low != nil && bytes.Compare(next, f.low) <= 0 {
		return nil
	}
	m, ok, err := mark()
	if err != nil {
		return err
	}
	if !ok {
		*f = feedFloor{rescanned: f.rescanned}
		return nil
	}
	f.next, f.mark, f.pending = next, m, true
	return nil
}
