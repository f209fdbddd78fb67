package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// An interaction's contact lives in its feed entry only; one the engine
// has not read by contactRetention loses its contact, keeps its record,
// and a newer one keeps both.
func TestPruneContactsDropsOldFeedContacts(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	old, recent := event("chat", "old", t0.Add(-10*24*time.Hour), 1, 5), event("chat", "recent", t0, 2, 5)
	old.Contact = []byte(`{"email":"old@example.com"}`)
	recent.Contact = []byte(`{"email":"recent@example.com"}`)
	if _, err := s.Submit(context.Background(), append(manyEvents(t, 1500), old, recent)); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneContacts(context.Background(), t0.Add(-7*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneContacts: %d, %v; want 1", n, err)
	}
	contacts := map[string]string{}
	it, _ := s.EngineKV().NewIter([]byte(kv.FeedPrefix), []byte("s/feed0"))
	entries := 0
	for it.First(); it.Valid(); it.Next() {
		entries++
		_, _, contact, body, err := kv.DecodeFeed(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		contacts[string(body)] = string(contact)
	}
	if entries != 1502 {
		t.Fatalf("%d feed entries after the prune, want all 1502 (records stay for the engine)", entries)
	}
	if c := contacts[string(old.JSON)]; c != "" {
		t.Errorf("the old interaction's contact is still there: %s", c)
	}
	if c := contacts[string(recent.JSON)]; c != string(recent.Contact) {
		t.Errorf("the recent interaction's contact: %q, want %s", c, recent.Contact)
	}
	if n, err := s.PruneContacts(context.Background(), t0.Add(-7*24*time.Hour)); err != nil || n != 0 {
		t.Errorf("a second prune: %d, %v; want nothing left to prune", n, err)
	}
}

// manyEvents are more interactions than one page of the prune, without
// contacts, so the prune pages past them.
func manyEvents(t *testing.T, n int) []store.Record {
	t.Helper()
	out := make([]store.Record, n)
	for i := range out {
		out[i] = event("chat", fmt.Sprint("bulk-", i), t0.Add(-9*24*time.Hour), uint64(i), 1)
	}
	return out
}
