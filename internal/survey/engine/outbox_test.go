package engine

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Messages with nowhere to go leave the outbox's timeline, a bounded number
// per step, so that later steps do not walk them; they come back, all of
// them, once the survey has a webhook.
func TestUndeliverableMessagesAreParkedOutOfTheTimeline(t *testing.T) {
	onBothStores(t, testUndeliverableMessagesAreParkedOutOfTheTimeline)
}

func testUndeliverableMessagesAreParkedOutOfTheTimeline(t *testing.T, kind storeKind) {
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100},
	}}
	f := newFixtureOn(t, kind, cfg)
	customers := make([]string, parkBatch+parkBatch/2)
	for i := range customers {
		customers[i] = fmt.Sprintf("c%d", i)
	}
	f.interact("chat", customers...)
	// The first step reads the log, invites, and parks parkBatch messages;
	// the next parks the rest.
	if more, err := f.e.step(context.Background()); err != nil || !more {
		t.Fatalf("first step: more %v, err %v; want it to stop at %d parked", more, err, parkBatch)
	}
	if n, _ := f.e.countKeys(prefixPark); n != parkBatch {
		t.Fatalf("first step parked %d, want %d", n, parkBatch)
	}
	more, err := f.e.step(context.Background())
	if err != nil || more {
		t.Fatalf("second step: more %v, err %v; want the rest parked at once", more, err)
	}
	if n, _ := f.e.countKeys(prefixOut); n != 0 {
		t.Fatalf("%d messages left in the timeline, want 0", n)
	}
	if n, _ := f.e.Outbox(); n != len(customers) {
		t.Fatalf("outbox holds %d, want %d parked", n, len(customers))
	}

	rcv := newReceiver(t)
	cfg.Surveys[0].Webhook = rcv.endpoint()
	f.e.SetConfig(cfg)
	for range 100 {
		if more, err := f.e.step(context.Background()); err != nil {
			t.Fatal(err)
		} else if !more {
			break
		}
	}
	if got := len(rcv.got()); got != len(customers) {
		t.Fatalf("%d delivered once the webhook came, want %d", got, len(customers))
	}
	if n, _ := f.e.Outbox(); n != 0 {
		t.Errorf("%d messages left", n)
	}
}

// Stats sums each counter over the window's days only, however far back
// the survey's counters go.
func TestStatsSumOnlyTheWindowsDays(t *testing.T) { onBothStores(t, testStatsSumOnlyTheWindowsDays) }

func testStatsSumOnlyTheWindowsDays(t *testing.T, kind storeKind) {
	f := newFixtureOn(t, kind, Config{})
	if err := f.e.lockWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.e.unlock()
	w := f.e.newBatch()
	defer w.close()
	for day := range 400 {
		at := t0.Add(-time.Duration(day) * 24 * time.Hour)
		w.count("nps", CounterInvited, at)
		if day%2 == 0 {
			w.count("nps", CounterDelivered, at)
		}
		w.count("csat", CounterInvited, at)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		since              time.Time
		invited, delivered uint64
	}{
		{t0.Add(-27 * 24 * time.Hour), 28, 14}, // days 0..27
		{t0, 1, 1},
		{t0.Add(time.Hour), 1, 1}, // the day of since counts whole
		{time.Time{}, 400, 200},
		{t0.Add(24 * time.Hour), 0, 0},
	} {
		s, err := f.e.Stats("nps", c.since)
		if err != nil {
			t.Fatal(err)
		}
		if s[CounterInvited] != c.invited || s[CounterDelivered] != c.delivered || len(s) > 2 {
			t.Errorf("since %s: %v, want invited %d delivered %d", c.since, s, c.invited, c.delivered)
		}
	}
}
