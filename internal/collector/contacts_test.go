package collector

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

const (
	canaryEmail = "canary.5e0c2b@example.org"
	canaryPhone = "+49 30 5550 2b71"
)

// TestExportedRecordsCarryNoContact: an interaction's contact is stored,
// yet neither export format carries it; a record stored before contacts
// moved out of records (its contact in its JSON) is exported without it.
func TestExportedRecordsCarryNoContact(t *testing.T) {
	c := startCollector(t, t.TempDir(), testConfig(t, ""))
	ev := fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"c1","time":"2026-11-23T11:00:00Z","segment":"gold","contact":{"email":%q,"phone":%q}}`, canaryEmail, canaryPhone)
	if code, body, _ := c.post("/v1/events", chatToken, "", ev); code != 200 {
		t.Fatalf("event: %d %v", code, body)
	}
	// As stored before: the contact last in the record's JSON.
	legacy := fmt.Sprintf(`{"id":"old","touchpoint":"chat","customer":"c2","time":"2026-11-23T10:00:00Z","contact":{"email":%q,"phone":%q}}`, canaryEmail, canaryPhone)
	if _, err := c.st.Submit(context.Background(), []store.Record{{Kind: rollup.KindTouchpoint, Subject: "chat", ID: "old", JSON: []byte(legacy),
		Event: rollup.Event{Time: testNow.Add(-2 * time.Hour).UnixNano()}}}); err != nil {
		t.Fatal(err)
	}
	var contacts []string
	err := c.st.ScanRecords(0, func(_ uint64, _ rollup.Kind, _ string, _, contact []byte) error {
		contacts = append(contacts, string(contact))
		return nil
	})
	if want := fmt.Sprintf(`{"email":%q,"phone":%q}`, canaryEmail, canaryPhone); err != nil || len(contacts) != 2 || contacts[0] != want || contacts[1] != "" {
		t.Fatalf("stored contacts: %q, %v; want the event's apart from its record, and none apart for the old record", contacts, err)
	}
	code, body := c.exportBody("/v1/export?touchpoint=chat")
	if want := `{"id":"e1","touchpoint":"chat","customer":"c1","time":"2026-11-23T11:00:00Z","segment":"gold"}` + "\n" +
		`{"id":"old","touchpoint":"chat","customer":"c2","time":"2026-11-23T10:00:00Z"}` + "\n"; code != 200 || body != want {
		t.Errorf("NDJSON export: %d\n%s\nwant\n%s", code, body, want)
	}
	code, body = c.exportBody("/v1/export?touchpoint=chat&format=csv")
	if want := "id,time,customer,touchpoint,waitSeconds,handleSeconds,resolved,segment\n" +
		"e1,2026-11-23T11:00:00Z,c1,chat,,,,gold\nold,2026-11-23T10:00:00Z,c2,chat,,,,\n"; code != 200 || body != want {
		t.Errorf("CSV export: %d\n%s\nwant\n%s", code, body, want)
	}
}

// TestFingerprintCoversTheContact: the fingerprint of an event with a
// contact is that of its JSON with the contact inside, as it was stored
// before contacts moved out, so that a retry across the change is a
// duplicate; and another contact is another payload.
func TestFingerprintCoversTheContact(t *testing.T) {
	v := &validator{cfg: testConfig(t, ""), now: testNow, authorized: func(string) bool { return true }, seen: map[string]int{}}
	id, tp, customer, email, phone, other := "a", "chat", "c1", canaryEmail, canaryPhone, "other@example.org"
	wait := 30.0
	rec, ierr := v.event(0, &eventIn{ID: &id, Touchpoint: &tp, Customer: &customer, WaitSeconds: &wait, Contact: &contactIn{Email: &email, Phone: &phone}})
	if ierr != nil {
		t.Fatal(ierr)
	}
	before, _ := json.Marshal(struct {
		eventOut
		Contact *contactIn `json:"contact,omitempty"`
	}{eventOut{ID: id, Touchpoint: tp, Customer: customer, Time: testNow.Format(time.RFC3339Nano), WaitSeconds: &wait}, &contactIn{Email: &email, Phone: &phone}})
	if got, want := rec.Fingerprint, fingerprint(before, true); got != want {
		t.Errorf("fingerprint %x, want %x, that of %s", got, want, before)
	}
	if bytes.Contains(rec.JSON, []byte("example.org")) || string(rec.Contact) != fmt.Sprintf(`{"email":%q,"phone":%q}`, email, phone) {
		t.Errorf("record JSON %s, contact %s; want the contact apart", rec.JSON, rec.Contact)
	}
	v.seen = map[string]int{}
	rec2, ierr := v.event(0, &eventIn{ID: &id, Touchpoint: &tp, Customer: &customer, WaitSeconds: &wait, Contact: &contactIn{Email: &other, Phone: &phone}})
	if ierr != nil {
		t.Fatal(ierr)
	}
	if rec2.Fingerprint == rec.Fingerprint {
		t.Errorf("another e-mail address gives the same fingerprint")
	}
}

// contactStore is where a contact retention test's collector keeps its
// data and how the test reads it.
type contactStore struct {
	// start starts a collector with cfg on the clock, and its survey
	// engine (no sender: messages are parked), stepped by the test.
	start func(t *testing.T, cfg *settings, clock func() time.Time) (*testCollector, *engine.Engine)
	// before, kept and dropped fail the test unless the contact is
	// stored after the invitation read it and 6 days later (before
	// contactRetention), and unless it is gone 8 days later, the record
	// still stored.
	before, kept, dropped func(t *testing.T, c *testCollector)
	// forget stops the collector and makes the store forget what was
	// deleted (a compaction; VACUUM FULL, CHECKPOINT and a WAL switch) and
	// returns, for each of strs still in the bytes of its files, where.
	forget func(t *testing.T, c *testCollector, strs ...string) map[string][]string
}

// onDiskContacts is the embedded store, with table compression off so
// that the scan of its files sees every value.
var onDiskContacts = contactStore{
	start: func(t *testing.T, cfg *settings, clock func() time.Time) (*testCollector, *engine.Engine) {
		c := startCollectorAt(t, t.TempDir(), cfg, clock, func(o *store.Options) { o.Uncompressed = true })
		return c, c.newSurveyEngine(nil, engine.Options{Now: clock})
	},
	// The engine read the contact from the store for the invitation.
	before: func(t *testing.T, c *testCollector) {
		t.Helper()
		if found := filesContaining(t, c.dir, []string{canaryEmail, canaryPhone}); len(found) != 2 {
			t.Fatalf("the contact is not on disk before its retention: %v", found)
		}
	},
	kept: func(t *testing.T, c *testCollector) {
		t.Helper()
		if n := storedContacts(t, c.st); n != 1 {
			t.Errorf("after 6 days: %d stored contacts, want the interaction's", n)
		}
	},
	dropped: func(t *testing.T, c *testCollector) {
		t.Helper()
		if n := storedContacts(t, c.st); n != 0 {
			t.Errorf("after 8 days: %d stored contacts, want none", n)
		}
	},
	forget: func(t *testing.T, c *testCollector, strs ...string) map[string][]string {
		t.Helper()
		if err := c.st.DB().Compact(context.Background(), []byte{0}, bytes.Repeat([]byte{0xff}, 32), true); err != nil {
			t.Fatal(err)
		}
		c.stop()
		return filesContaining(t, c.dir, strs)
	},
}

// storedContacts counts the contacts stored with the records of st.
func storedContacts(t *testing.T, st *store.Store) int {
	t.Helper()
	n := 0
	if err := st.ScanRecords(0, func(_ uint64, _ rollup.Kind, _ string, _, contact []byte) error {
		if len(contact) > 0 {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInteractionContactExpiresFromDisk: an interaction with a contact
// triggers a survey (no webhook: its message is parked at once, contact
// and all). A week and a day later the collector's hourly prune, then a
// forced compaction, leave no byte of the e-mail address or phone number
// anywhere in the data directory, while the record is still exported and
// its customer id still on disk; a day before, the contact was still
// there for delivery.
func TestInteractionContactExpiresFromDisk(t *testing.T) {
	testInteractionContactExpires(t, onDiskContacts)
}

// testInteractionContactExpires is the contact retention proof on a store.
func testInteractionContactExpires(t *testing.T, cs contactStore) {
	now := testNow
	clock := func() time.Time { return now }
	cfg := testConfig(t, "  - name: mail\n    type: NPS\n    trigger: {touchpoints: [chat]}\nretention: 30d\ncontactRetention: 7d\npageURL: https://cx.example.com\n")
	c, e := cs.start(t, cfg, clock)
	sec, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.srv.surveys.Store(e)
	c.srv.applySurveys(cfg, sec)
	ev := fmt.Sprintf(`{"id":"e1","touchpoint":"chat","customer":"cust-5e0c2b","contact":{"email":%q,"phone":%q}}`, canaryEmail, canaryPhone)
	if code, body, _ := c.post("/v1/events", chatToken, "", ev); code != 200 {
		t.Fatalf("event: %d %v", code, body)
	}
	ctx := context.Background()
	if err := e.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Outbox(); err != nil || n != 1 {
		t.Fatalf("outbox: %d, %v; want the parked invitation", n, err)
	}
	cs.before(t, c)
	now = testNow.Add(6 * 24 * time.Hour)
	c.srv.prune(ctx)
	cs.kept(t, c)
	now = testNow.Add(8 * 24 * time.Hour)
	c.srv.prune(ctx)
	cs.dropped(t, c)
	code, body := c.exportBody("/v1/export?touchpoint=chat")
	if want := `{"id":"e1","touchpoint":"chat","customer":"cust-5e0c2b","time":"` + testNow.Format(time.RFC3339Nano) + `"}` + "\n"; code != 200 || body != want {
		t.Errorf("export after the prune: %d %q, want %q", code, body, want)
	}
	files := cs.forget(t, c, canaryEmail, canaryPhone, "cust-5e0c2b")
	for _, s := range []string{canaryEmail, canaryPhone} {
		if len(files[s]) > 0 {
			t.Errorf("%q is still on disk after contactRetention, a prune and the store forgetting what was deleted (in %v)", s, files[s])
		}
	}
	if len(files["cust-5e0c2b"]) == 0 {
		t.Errorf("the record's customer id is not on disk: the scan does not work")
	}
}
