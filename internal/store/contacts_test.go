package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cxop-dev/cxop/internal/rollup"
)

func withContact(r Record, contact string) Record {
	r.Contact = []byte(contact)
	return r
}

// scanned reads every record with ScanRecords: id -> contact ("" for
// none), in sequence order.
func scanned(t *testing.T, s *Store) (ids []string, contacts map[string]string) {
	t.Helper()
	contacts = map[string]string{}
	err := s.ScanRecords(0, func(_ uint64, _ rollup.Kind, _ string, js, contact []byte) error {
		id := strings.SplitN(strings.TrimPrefix(string(js), `{"id":"`), `"`, 2)[0]
		ids = append(ids, id)
		contacts[id] = string(contact)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, contacts
}

// TestContactIsStoredApartFromTheRecord: a record's contact comes back
// with it from ScanRecords, each with its own record whatever the mix of
// records with and without one, also from a sequence in the middle and
// after a restart; the export never carries it.
func TestContactIsStoredApartFromTheRecord(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	var recs []Record
	want := map[string]string{}
	for i := range 50 {
		id := fmt.Sprintf("e%02d", i)
		r := event(id, now.Add(-time.Hour), 10)
		if i%3 != 1 {
			c := fmt.Sprintf(`{"email":"%s@example.org"}`, id)
			r, want[id] = withContact(r, c), c
		}
		recs = append(recs, r)
	}
	recs = append(recs, answer("r1", now, 9))
	if _, err := s.Submit(ctx, recs[:20]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, recs[20:]); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		ids, got := scanned(t, s)
		if len(ids) != 51 || ids[0] != "e00" || ids[49] != "e49" {
			t.Fatalf("scanned %d records: %v", len(ids), ids)
		}
		for _, id := range ids[:50] {
			if got[id] != want[id] {
				t.Errorf("contact of %s: %q, want %q", id, got[id], want[id])
			}
		}
		// From the middle: the contacts iterator starts there too.
		err := s.ScanRecords(31, func(seq uint64, _ rollup.Kind, _ string, js, contact []byte) error {
			id := fmt.Sprintf("e%02d", seq-1)
			if seq <= 50 && string(contact) != want[id] {
				t.Errorf("from 31: contact of %s: %q, want %q", id, contact, want[id])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = s.Export(rollup.KindTouchpoint, "chat", func(js []byte) error {
			if bytes.Contains(js, []byte("example.org")) {
				t.Errorf("exported record carries the contact: %s", js)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	check(s)
}

// TestPruneContactsOldestFirst: contacts committed over 12,000 seconds
// (three batches of the prune) are deleted up to the cutoff by their
// commit time, not the record's event time; the records stay; a crash
// after the first batch keeps every contact inside the retention and the
// next prune finishes the job; a read-only store is never pruned.
func TestPruneContactsOldestFirst(t *testing.T) {
	mem := vfs.NewCrashableMem()
	clock := now
	s := open(t, "", memOptions(mem), func(o *Options) { o.Now = func() time.Time { return clock } })
	ctx := context.Background()
	for b := range 12 {
		recs := make([]Record, 1000)
		for i := range recs {
			n := b*1000 + i
			// The event time says nothing about the contact's age.
			recs[i] = withContact(event(fmt.Sprintf("c-%d", n), now.Add(-300*24*time.Hour), 1), fmt.Sprintf(`{"phone":"%d"}`, n))
		}
		if _, err := s.Submit(ctx, recs); err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Second)
	}
	cutoff := now.Add(11 * time.Second) // before it: the first 11 commits, 11,000 contacts

	var crashed *vfs.MemFS
	batches := 0
	errCrash := errors.New("power loss")
	pruneContactsHook = func() error {
		batches++
		if batches == 2 {
			crashed = mem.CrashClone(vfs.CrashCloneCfg{})
			return errCrash
		}
		return nil
	}
	defer func() { pruneContactsHook = nil }()
	if n, err := s.PruneContacts(cutoff); !errors.Is(err, errCrash) || n != 5000 {
		t.Fatalf("prune: %d, %v; want the first batch of 5000, then the injected crash", n, err)
	}
	_ = s.Close()
	pruneContactsHook = nil

	r := open(t, "", memOptions(crashed))
	_, got := scanned(t, r)
	left := func() (withContact int) {
		for _, c := range got {
			if c != "" {
				withContact++
			}
		}
		return withContact
	}
	if len(got) != 12000 || left() != 7000 || got["c-4999"] != "" || got["c-5000"] != `{"phone":"5000"}` {
		t.Fatalf("after a crash after the first batch: %d records, %d contacts (want 12000 and 7000)", len(got), left())
	}
	if n, err := r.PruneContacts(cutoff); err != nil || n != 6000 {
		t.Fatalf("second prune: %d, %v; want 6000", n, err)
	}
	if n, err := r.PruneContacts(cutoff); err != nil || n != 0 {
		t.Fatalf("third prune: %d, %v; want nothing left to do", n, err)
	}
	_, got = scanned(t, r)
	if len(got) != 12000 || left() != 1000 || got["c-10999"] != "" || got["c-11000"] != `{"phone":"11000"}` {
		t.Fatalf("after the prune: %d records, %d contacts; want 12000 and the last 1000", len(got), left())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	ro := open(t, "", memOptions(crashed), func(o *Options) { o.ReadOnly = true })
	defer ro.Close()
	if n, err := ro.PruneContacts(now.Add(time.Hour)); err == nil || n != 0 {
		t.Errorf("prune of a read-only store: %d, %v; want an error and nothing deleted", n, err)
	}
	if _, got = scanned(t, ro); left() != 1000 {
		t.Errorf("a read-only store lost contacts: %d left", left())
	}
}

// TestRecordAndContactCommitTogether cuts the power at random moments
// while writers store records with contacts: in every clone each record
// has its contact and each contact its record.
func TestRecordAndContactCommitTogether(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s := open(t, "", memOptions(mem))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ctx.Err() == nil; b++ {
				recs := make([]Record, 50)
				for i := range recs {
					id := fmt.Sprintf("w%d-%d-%d", w, b, i)
					recs[i] = withContact(event(id, now, 1), `{"email":"`+id+`@example.org"}`)
				}
				if _, err := s.Submit(ctx, recs); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var clones []*vfs.MemFS
	for range 8 {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		clones = append(clones, mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng}))
	}
	cancel()
	wg.Wait()
	_ = s.Close()
	for i, fs := range clones {
		r := open(t, "", memOptions(fs))
		ids, got := scanned(t, r)
		contacts := contactKeys(t, r)
		for _, id := range ids {
			if got[id] != `{"email":"`+id+`@example.org"}` {
				t.Errorf("clone %d: record %s has contact %q", i, id, got[id])
			}
		}
		if contacts != len(ids) {
			t.Errorf("clone %d: %d contacts for %d records", i, contacts, len(ids))
		}
		t.Logf("clone %d: %d records, each with its contact", i, len(ids))
		_ = r.Close()
	}
}

// contactKeys counts the stored contacts, whether a record has them or
// not.
func contactKeys(t *testing.T, s *Store) int {
	t.Helper()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixContact}, UpperBound: []byte{prefixContact + 1}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPrunedRecordTakesItsContact: a record given with an event time
// near the end of the retention is pruned before its contact would be,
// and takes the contact along; a kept record keeps its own.
func TestPrunedRecordTakesItsContact(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	recs := []Record{
		withContact(event("old", now.Add(-29*24*time.Hour), 1), `{"email":"old@example.org"}`),
		withContact(event("new", now.Add(-time.Hour), 1), `{"email":"new@example.org"}`),
		event("plain", now.Add(-29*24*time.Hour), 1),
	}
	if _, err := s.Submit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if n := contactKeys(t, s); n != 2 {
		t.Fatalf("%d contacts stored, want 2", n)
	}
	res, err := s.PruneExpired(now.Add(-28*24*time.Hour), now.Add(-24*time.Hour))
	if err != nil || res.Deleted != 2 {
		t.Fatalf("prune: %+v, %v; want 2 deleted", res, err)
	}
	ids, got := scanned(t, s)
	if n := contactKeys(t, s); n != 1 || len(ids) != 1 || got["new"] != `{"email":"new@example.org"}` {
		t.Errorf("after the prune: %d contacts, records %v with %v; want new's alone", n, ids, got)
	}
}
