package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/score"
)

func (f *fixture) listCustomer(customer string) customerdata.Counts {
	f.t.Helper()
	n := customerdata.Counts{}
	err := f.e.ListCustomer(context.Background(), customer, func(kind string, item json.RawMessage) error {
		if !json.Valid(item) || !strings.Contains(string(item), customer) && kind != customerdata.FollowUps {
			f.t.Errorf("%s item of %s: %s", kind, customer, item)
		}
		n[kind]++
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// TestEraseCustomerFromTheEngine: a customer's due entries, invitations,
// contact history, parked messages, detractor and follow-up go; another
// customer's stay, and so do the per-day counters; the closed loop's
// totals count the detractors kept.
func TestEraseCustomerFromTheEngine(t *testing.T) { onBothStores(t, testEraseCustomerFromTheEngine) }

func testEraseCustomerFromTheEngine(t *testing.T, kind storeKind) {
	rcv := newReceiver(t, 500, 500, 500, 500)
	f := newFixtureOn(t, kind, Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		// No webhook: invitations are parked.
		{Name: "nps", Kind: score.NPS, Touchpoints: []string{"chat"}, SamplePercent: 100, DetractorWebhook: rcv.endpoint()},
		{Name: "later", Kind: score.NPS, Touchpoints: []string{"chat"}, Delay: time.Hour, SamplePercent: 100},
	}})
	f.interact("chat", "c1", "c2")
	f.answer("nps", "d1", 2) // customer c-d1, a detractor
	f.answer("nps", "d2", 3) // customer c-d2
	f.answer("nps", "d3", 1) // customer c-d3, never followed up
	f.step()
	f.followUp("nps", "d1", f.now.Add(time.Minute))
	if _, err := f.e.Wave("nps", "w1", []Member{{Customer: "c1", Contact: &Contact{Phone: "+4930123"}}}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint(customerdata.Counts{customerdata.DueEntries: 2, customerdata.Invitations: 1, customerdata.ContactHistory: 1, customerdata.Parked: 1})
	if got := f.listCustomer("c1"); fmt.Sprint(got) != want {
		t.Fatalf("c1 before the erasure: %v, want %s", got, want)
	}
	if got := f.listCustomer("c-d1"); got[customerdata.Detractors] != 1 || got[customerdata.FollowUps] != 1 || got[customerdata.Outbox] != 1 {
		t.Fatalf("c-d1 before the erasure: %v", got)
	}
	stats, loop := f.stats("nps"), f.closedLoop("nps", f.now.Add(-time.Hour))

	for _, c := range []string{"c1", "c-d1", "c-d3"} {
		n, err := f.e.EraseCustomer(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]customerdata.Counts{"c1": {customerdata.DueEntries: 2, customerdata.Invitations: 1, customerdata.ContactHistory: 1, customerdata.Parked: 1},
			"c-d1": {customerdata.Detractors: 1, customerdata.FollowUps: 1, customerdata.Outbox: 1},
			"c-d3": {customerdata.Detractors: 1, customerdata.Outbox: 1}}[c]
		if fmt.Sprint(n) != fmt.Sprint(listed) {
			t.Errorf("erased %s: %v, want %v", c, n, listed)
		}
		if got := f.listCustomer(c); len(got) != 0 {
			t.Errorf("%s after the erasure: %v", c, got)
		}
		if again, err := f.e.EraseCustomer(context.Background(), c); err != nil || again.Total() != 0 {
			t.Errorf("erasing %s again: %v %v", c, again, err)
		}
	}
	if got := f.listCustomer("c2"); got[customerdata.Invitations] != 1 || got[customerdata.DueEntries] != 1 || got[customerdata.Parked] != 1 {
		t.Errorf("c2 after c1's erasure: %v", got)
	}
	if got := f.listCustomer("c-d2"); got[customerdata.Detractors] != 1 {
		t.Errorf("c-d2 after c-d1's erasure: %v", got)
	}
	if got := f.stats("nps"); fmt.Sprint(got) != fmt.Sprint(stats) {
		t.Errorf("counters after the erasure: %v, want them kept: %v", got, stats)
	}
	// The closed loop counts what is kept: c-d3's open detractor is no
	// longer open, c-d1's follow-up no longer counted.
	if got := f.closedLoop("nps", f.now.Add(-time.Hour)); got.Open != loop.Open-1 || got.FollowedUp != loop.FollowedUp-1 {
		t.Errorf("closed loop after the erasure: %+v, before %+v", got, loop)
	}
	for what, want := range map[string]uint64{loopDetractors: 1, loopFollowed: 0} {
		if n, err := f.e.getUint(loopKey("nps", what)); err != nil || n != want {
			t.Errorf("closed-loop total %s = %d (%v), want %d", what, n, err, want)
		}
	}
	// The engine goes on: the remaining due entries are invited, none for c1.
	f.now = f.now.Add(2 * time.Hour)
	f.step()
	if got := f.listCustomer("c1"); len(got) != 0 {
		t.Errorf("c1 after more steps: %v", got)
	}
}

// TestEraseReachesRecordsNotYetRead: on PostgreSQL the records reach the
// engine through its feed; an erasure between the append and the next step
// removes the customer's entries there, so the step invites only the
// others.
func TestEraseReachesRecordsNotYetRead(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixtureOn(t, onPostgres, Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}})
	f.interact("chat", "gone", "kept")
	if _, err := f.e.EraseCustomer(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	f.step()
	got := rcv.got()
	if len(got) != 1 || got[0].body.Customer != "kept" {
		t.Fatalf("deliveries %+v; want the kept customer's only", got)
	}
}
