package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// customerEvent is an event of customer; hashOf is the customer whose hash
// it carries (another one fakes a hash collision).
func customerEvent(id, customer, hashOf string) store.Record {
	js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","time":%q,"customer":%q}`, id, t0.Format(time.RFC3339Nano), customer)
	return store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Event: rollup.Event{Time: t0.UnixNano(), CustomerHash: xxhash.Sum64String(hashOf)}}
}

func TestEraseAndListCustomer(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	ctx := context.Background()
	var recs []store.Record
	for i := range 2500 { // more than one page of eraseBatch
		recs = append(recs, customerEvent(fmt.Sprintf("a%d", i), "alice", "alice"))
	}
	recs = append(recs, customerEvent("b1", "bob", "bob"),
		// Bob's record carrying Alice's hash: the JSON decides, so it stays.
		customerEvent("b2", "bob", "alice"))
	js := fmt.Sprintf(`{"id":"r1","survey":"nps","time":%q,"score":9,"customer":"alice"}`, t0.Format(time.RFC3339Nano))
	recs = append(recs, store.Record{Kind: rollup.KindSurvey, Subject: "nps", ID: "r1", JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Response: rollup.Response{Time: t0.UnixNano(), CustomerHash: xxhash.Sum64String("alice"), Score: 9}})
	for i := 0; i < len(recs); i += 1000 {
		if _, err := s.Submit(ctx, recs[i:min(i+1000, len(recs))]); err != nil {
			t.Fatal(err)
		}
	}
	listed := customerdata.Counts{}
	if err := s.ListCustomer(ctx, "alice", func(kind string, item json.RawMessage) error {
		var v struct{ Customer string }
		if err := json.Unmarshal(item, &v); err != nil || v.Customer != "alice" {
			t.Fatalf("listed %s for alice: %v", item, err)
		}
		listed[kind]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if listed[customerdata.Events] != 2500 || listed[customerdata.Responses] != 1 {
		t.Fatalf("listed %v, want 2500 events and 1 response", listed)
	}
	counts, err := s.EraseCustomer(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if counts[customerdata.Events] != 2500 || counts[customerdata.Responses] != 1 {
		t.Fatalf("erased %v, want 2500 events and 1 response", counts)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_records`); n != 2 {
		t.Fatalf("%d records left, want bob's 2", n)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 2 {
		t.Fatalf("%d idempotency keys left, want bob's 2", n)
	}
	if has, _ := s.Has(ctx, rollup.KindTouchpoint, "chat", "a7"); has {
		t.Fatal("an erased record's id is still stored")
	}
	again, err := s.EraseCustomer(ctx, "alice")
	if err != nil || again.Total() != 0 {
		t.Fatalf("second erasure: %v %v, want nothing", again, err)
	}
	// The erased records still count in the summaries: the rollups keep
	// counts, no personal data.
	foldAll(t, s)
	a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, time.Hour, t0.Add(time.Minute), t0.Add(time.Minute))
	if err != nil || a.Interactions != 2502 {
		t.Fatalf("interactions after erasure: %v %v, want 2502", a, err)
	}
}

func TestAuditLog(t *testing.T) {
	dsn := server.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ha, err := a.CustomerHash("alice")
	if err != nil {
		t.Fatal(err)
	}
	hb, err := b.CustomerHash("alice")
	if err != nil {
		t.Fatal(err)
	}
	if ha != hb || len(ha) != 64 {
		t.Fatalf("replicas hash alice as %q and %q; want one 64-digit hash", ha, hb)
	}
	if other, _ := a.CustomerHash("bob"); other == ha {
		t.Fatal("bob hashes as alice")
	}
	for i, at := range []time.Time{t0, t0.Add(time.Hour), t0.Add(2 * time.Hour)} {
		if err := []*Store{a, b}[i%2].AppendErasure(customerdata.Erasure{Time: at, CustomerHash: ha, Erased: customerdata.Counts{"events": i}}); err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	if err := b.Erasures(t0.Add(time.Hour), func(e customerdata.Erasure) error {
		got = append(got, e.Erased["events"])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("erasures since t0+1h: %v, want [1 2]", got)
	}
	if err := a.PruneErasures(t0.Add(90 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, a, `SELECT count(*) FROM cxop_erasures`); n != 1 {
		t.Fatalf("%d entries after pruning, want 1", n)
	}
}
