package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// Contacts. An interaction may carry how to reach the customer, so that a
// survey it triggers can be delivered. The survey engine copies the
// contact when it reads the record, soon after the commit; after that
// only the engine's own copies are of use, and they expire
// contactRetention after delivery. So the contact is not part of the
// record's JSON (which is kept for the whole retention and exported):
// it is written in the same batch as the record, under
// contactKey(sequence), with the commit time, and PruneContacts deletes
// it contactRetention after the commit.
//
// Keys are in sequence order, and sequences are given in commit order, so
// the contacts are in the order of their commit times: a prune walks them
// from the oldest and stops at the first one inside the retention.
//
// A contact copied from another store (cxop store copy) keeps the time it
// was received there (Record.ContactSince), so that the copy does not
// give it a new lease of contactRetention. Those times are not in
// sequence order; keyBackdatedContacts holds the last sequence that has
// one, and a prune looks at every contact up to it one by one before it
// walks the rest as above. Copies are rare and their contacts expire
// within contactRetention, after which that part is empty and costs one
// seek.

// keyBackdatedContacts holds the last sequence (8 bytes) whose contact
// was stored with a time before its commit.
var keyBackdatedContacts = []byte("m/contacts-backdated-until")

// contactKey is where the contact of the record at seq is.
func contactKey(buf []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(buf[:0], prefixContact), seq)
}

// appendContact appends a contact's value: the commit time in unix
// nanoseconds, then the contact as the caller gave it.
func appendContact(b []byte, committed int64, contact []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(committed))
	return append(b, contact...)
}

// decodeContact splits a contact's value.
func decodeContact(v []byte) (committed int64, contact []byte, err error) {
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("%w: contact of %d bytes", errCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), v[8:], nil
}

// ScanRecords calls fn with every stored record from sequence from on, in
// order, with the record's contact (nil if it has none, or if it was
// pruned already), for readers of the log such as the survey engine. The
// contacts are read by a second iterator that moves forward with the
// records, so they cost one seek per record that has one. json and
// contact are valid only during the call.
func (s *Store) ScanRecords(from uint64, fn func(seq uint64, kind rollup.Kind, subject string, json, contact []byte) error) error {
	return s.scan(from, true, func(seq uint64, _ []byte, r *Record) error {
		return fn(seq, r.Kind, r.Subject, r.JSON, r.Contact)
	})
}

// contactReader finds the contacts of records read in sequence order.
type contactReader struct {
	it  *pebble.Iterator
	key []byte
}

// contact is the contact of the record at seq, nil if it has none; seq
// must not go down from one call to the next.
func (c *contactReader) contact(seq uint64) ([]byte, error) {
	c.key = contactKey(c.key, seq)
	if !c.it.Valid() || bytes.Compare(c.it.Key(), c.key) < 0 {
		if !c.it.SeekGE(c.key) {
			return nil, c.it.Error()
		}
	}
	if !bytes.Equal(c.it.Key(), c.key) {
		return nil, nil
	}
	v, err := c.it.ValueAndErr()
	if err != nil {
		return nil, err
	}
	_, contact, err := decodeContact(v)
	if err != nil {
		return nil, fmt.Errorf("stored contact at key %x: %w", c.key, err)
	}
	return contact, nil
}

// pruneContactsHook, when set by a test, runs before each batch; an error
// stops the prune there, as a crash would.
var pruneContactsHook func() error

// pruneContactsBatch bounds the contacts one prune batch reads.
const pruneContactsBatch = 5000

// PruneContacts deletes the contacts committed before cutoff, oldest
// first, in batches that each commit on their own, and returns how many
// it deleted. It stops at the first contact committed at or after cutoff:
// the ones after it are newer (unless the clock went back, in which case
// they wait for a later prune). It writes nothing on a store that cannot
// write.
func (s *Store) PruneContacts(cutoff time.Time) (int, error) {
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("prune contacts: %w", err)
	}
	deleted, until, err := s.pruneBackdatedContacts(cutoff.UnixNano())
	if err != nil {
		return deleted, fmt.Errorf("prune contacts: %w", err)
	}
	from := until + 1
	if until == 0 {
		from = 0
	}
	for {
		if err := s.Err(); err != nil {
			return deleted, fmt.Errorf("prune contacts: %w", err)
		}
		if pruneContactsHook != nil {
			if err := pruneContactsHook(); err != nil {
				return deleted, err
			}
		}
		n, next, err := s.pruneContactsBatch(from, cutoff.UnixNano())
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("prune contacts: %w", err)
		}
		if next == 0 {
			return deleted, nil
		}
		from = next
	}
}

// pruneContactsBatch deletes up to pruneContactsBatch contacts committed
// before cutoff from sequence from on, with one range deletion (the
// contacts it deletes are consecutive keys), and returns how many it
// deleted and the sequence to go on from, 0 when done.
func (s *Store) pruneContactsBatch(from uint64, cutoff int64) (int, uint64, error) {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return 0, 0, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: contactKey(nil, from), UpperBound: []byte{prefixContact + 1}})
	if err != nil {
		return 0, 0, err
	}
	n := 0
	var last, next uint64
	done := false
	for it.First(); it.Valid(); it.Next() {
		if n == pruneContactsBatch {
			next = binary.BigEndian.Uint64(it.Key()[1:])
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return 0, 0, err
		}
		committed, _, err := decodeContact(v)
		if err != nil {
			_ = it.Close()
			return 0, 0, fmt.Errorf("stored contact at key %x: %w", it.Key(), err)
		}
		if committed >= cutoff {
			done = true
			break
		}
		last = binary.BigEndian.Uint64(it.Key()[1:])
		n++
	}
	if err := it.Close(); err != nil {
		return 0, 0, err
	}
	if done {
		next = 0
	}
	if n == 0 {
		return 0, 0, nil
	}
	if err := s.db.DeleteRange(contactKey(nil, from), contactKey(nil, last+1), pebble.Sync); err != nil {
		return 0, 0, err
	}
	return n, next, nil
}

// pruneBackdatedContacts deletes the contacts up to the last backdated
// one (keyBackdatedContacts) that are older than cutoff, looking at each,
// and returns how many it deleted and that sequence (0: none was ever
// backdated).
func (s *Store) pruneBackdatedContacts(cutoff int64) (int, uint64, error) {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return 0, 0, ErrClosed
	}
	v, closer, err := s.db.Get(keyBackdatedContacts)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 8 {
		_ = closer.Close()
		return 0, 0, fmt.Errorf("%w: %s holds %d bytes", errCorrupt, keyBackdatedContacts, len(v))
	}
	until := binary.BigEndian.Uint64(v)
	_ = closer.Close()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: contactKey(nil, 0), UpperBound: contactKey(nil, until+1)})
	if err != nil {
		return 0, until, err
	}
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	deleted := 0
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return deleted, until, err
		}
		at, _, err := decodeContact(v)
		if err != nil {
			_ = it.Close()
			return deleted, until, fmt.Errorf("stored contact at key %x: %w", it.Key(), err)
		}
		if at >= cutoff {
			continue
		}
		_ = b.Delete(it.Key(), nil)
		if b.Count() >= pruneContactsBatch {
			if err := b.Commit(pebble.Sync); err != nil {
				_ = it.Close()
				return deleted, until, err
			}
			deleted += int(b.Count())
			b.Reset()
		}
	}
	if err := it.Close(); err != nil {
		return deleted, until, err
	}
	if b.Empty() {
		return deleted, until, nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return deleted, until, err
	}
	return deleted + int(b.Count()), until, nil
}
