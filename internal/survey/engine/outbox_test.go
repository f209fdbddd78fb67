package engine

import (
	"context"
	"fmt"
	"testing"
)

// Messages with nowhere to go leave the outbox's timeline, a bounded number
// per step, so that later steps do not walk them; they come back, all of
// them, once the survey has a webhook.
func TestUndeliverableMessagesAreParkedOutOfTheTimeline(t *testing.T) {
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100},
	}}
	f := newFixture(t, cfg)
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
