package collector

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// TestInteractionContactExpiresFromDisk: an interaction with a contact
// triggers a survey (no webhook: its message is parked at once, contact
// and all). A week and a day later the collector's hourly prune, then a
// forced compaction, leave no byte of the e-mail address or phone number
// anywhere in the data directory, while the record is still exported and
// its customer id still on disk; a day before, the contact was still
// there for delivery.
func TestInteractionContactExpiresFromDisk(t *testing.T) {
	now := testNow
	clock := func() time.Time { return now }
	cfg := testConfig(t, "  - name: mail\n    type: NPS\n    trigger: {touchpoints: [chat]}\nretention: 30d\ncontactRetention: 7d\npageURL: https://cx.example.com\n")
	dir := t.TempDir()
	srv := NewServer(slog.New(slog.DiscardHandler), cfg, prometheus.NewRegistry(), clock)
	st, err := store.Open(store.Options{Dir: dir, Now: clock, Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.store.Store(st)
	ts := httptest.NewServer(srv.Handler())
	c := &testCollector{t: t, srv: srv, url: ts.URL, dir: dir, st: st, ts: ts}
	t.Cleanup(c.stop)
	e, err := engine.New(st.DB(), st, nil, engine.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := parseSecrets([]byte("linkKeys: {current: " + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 32))) + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv.surveys.Store(e)
	srv.applySurveys(cfg, sec)
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
	// The engine read the contact from the store for the invitation.
	if found := filesContaining(t, dir, []string{canaryEmail, canaryPhone}); len(found) != 2 {
		t.Fatalf("the contact is not on disk before its retention: %v", found)
	}

	now = testNow.Add(6 * 24 * time.Hour)
	srv.prune(ctx)
	var contacts int
	countContacts := func() {
		contacts = 0
		if err := st.ScanRecords(0, func(_ uint64, _ rollup.Kind, _ string, _, contact []byte) error {
			if len(contact) > 0 {
				contacts++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if countContacts(); contacts != 1 {
		t.Errorf("after 6 days: %d stored contacts, want the interaction's", contacts)
	}

	now = testNow.Add(8 * 24 * time.Hour)
	srv.prune(ctx)
	if countContacts(); contacts != 0 {
		t.Errorf("after 8 days: %d stored contacts, want none", contacts)
	}
	code, body := c.exportBody("/v1/export?touchpoint=chat")
	if want := `{"id":"e1","touchpoint":"chat","customer":"cust-5e0c2b","time":"` + testNow.Format(time.RFC3339Nano) + `"}` + "\n"; code != 200 || body != want {
		t.Errorf("export after the prune: %d %q, want %q", code, body, want)
	}
	if err := st.DB().Compact(ctx, []byte{0}, bytes.Repeat([]byte{0xff}, 32), true); err != nil {
		t.Fatal(err)
	}
	c.stop()
	found := filesContaining(t, dir, []string{canaryEmail, canaryPhone, "cust-5e0c2b"})
	for _, s := range []string{canaryEmail, canaryPhone} {
		if f, ok := found[s]; ok {
			t.Errorf("%q is still on disk after contactRetention, a prune and a compaction (in %s)", s, f)
		}
	}
	if _, ok := found["cust-5e0c2b"]; !ok {
		t.Errorf("the record's customer id is not on disk: the scan does not work")
	}
}
