package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// TestInvitationTakesTheContactStoredWithTheInteraction: the contact
// stored apart from an interaction's record, and the one inside the JSON
// of a record stored before contacts moved out, both reach the
// invitation's webhook; an interaction whose stored contact expired
// before the engine read it is invited without one.
func TestInvitationTakesTheContactStoredWithTheInteraction(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixture(t, Config{PageURL: "https://cx.example.com", LinkKeys: keys,
		Surveys: []Survey{{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}})
	submit := func(id, contact, legacy string) {
		t.Helper()
		f.seq++
		js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"c-%s","time":%q%s}`, id, id, f.now.Format(time.RFC3339Nano), legacy)
		rec := store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js),
			Event: rollup.Event{Time: f.now.UnixNano(), CustomerHash: uint64(f.seq)}}
		if contact != "" {
			rec.Contact = []byte(contact)
		}
		if _, err := f.st.Submit(context.Background(), []store.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	contacts := func() map[string]string {
		got := map[string]string{}
		for _, r := range rcv.got() {
			c := "none"
			if r.body.Contact != nil {
				c = r.body.Contact.Email + " " + r.body.Contact.Phone
			}
			got[r.body.Customer] = c
		}
		return got
	}
	submit("apart", `{"email":"apart@example.org","phone":"+49 30 1"}`, "")
	submit("legacy", "", `,"contact":{"email":"legacy@example.org","phone":"+49 30 2"}`)
	submit("without", "", "")
	f.step()
	want := map[string]string{"c-apart": "apart@example.org +49 30 1", "c-legacy": "legacy@example.org +49 30 2", "c-without": "none"}
	if got := contacts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("invitations' contacts: %v, want %v", got, want)
	}

	submit("expired", `{"email":"expired@example.org"}`, "")
	// Pruned before the engine read it: a contactRetention shorter than
	// the engine's lag.
	if n, err := f.st.PruneContacts(f.now.Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("prune contacts: %d, %v; want apart's and expired's", n, err)
	}
	f.step()
	want["c-expired"] = "none"
	if got := contacts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("invitations' contacts: %v, want %v", got, want)
	}
}
