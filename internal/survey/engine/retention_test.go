package engine

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/canaryscan"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/store"
)

// person is a customer whose every trace a test looks for on disk.
type person struct {
	id, email, phone, comment string
}

func newPerson(name string) person {
	return person{
		id:      "cust-" + name + "-7d1f3a9e",
		email:   name + ".7d1f3a9e@example.org",
		phone:   fmt.Sprintf("+4930%08d", crc32.ChecksumIEEE([]byte(name))%100_000_000),
		comment: "the " + name + " agent never called back about order 7d1f3a9e",
	}
}

func (p person) strings() []string { return []string{p.id, p.email, p.phone, p.comment} }

func (p person) contact() *Contact { return &Contact{Email: p.email, Phone: p.phone} }

// visit stores an interaction of p at touchpoint, now, with p's contact
// (apart from the record, as the collector stores it).
func (f *fixture) visit(touchpoint string, p person) {
	f.t.Helper()
	f.seq++
	id := fmt.Sprintf("ev-%d", f.seq)
	js := fmt.Sprintf(`{"id":%q,"touchpoint":%q,"customer":%q,"time":%q}`,
		id, touchpoint, p.id, f.now.Format(time.RFC3339Nano))
	rec := store.Record{Kind: rollup.KindTouchpoint, Subject: touchpoint, ID: id, JSON: []byte(js),
		Contact: []byte(fmt.Sprintf(`{"email":%q,"phone":%q}`, p.email, p.phone)),
		Event:   rollup.Event{Time: f.now.UnixNano(), CustomerHash: uint64(f.seq)}}
	f.submit([]store.Record{rec})
}

// answerWithComment stores p's NPS answer with p's comment, now.
func (f *fixture) answerWithComment(survey string, p person, value int) string {
	f.t.Helper()
	f.seq++
	id := fmt.Sprintf("resp-%d", f.seq)
	js := fmt.Sprintf(`{"id":%q,"survey":%q,"customer":%q,"score":%d,"comment":%q,"time":%q}`,
		id, survey, p.id, value, p.comment, f.now.Format(time.RFC3339Nano))
	rec := store.Record{Kind: rollup.KindSurvey, Subject: survey, ID: id, JSON: []byte(js),
		Response: rollup.Response{Time: f.now.UnixNano(), CustomerHash: uint64(f.seq), Score: value}}
	f.submit([]store.Record{rec})
	return id
}

// stepFor steps the engine once a minute for d.
func (f *fixture) stepFor(d time.Duration) {
	f.t.Helper()
	for end := f.now.Add(d); f.now.Before(end); {
		f.now = f.now.Add(time.Minute)
		f.step()
	}
}

// prune prunes the records and the engine as the collector does, then
// compacts the whole database so that what was deleted or rewritten
// leaves the tables, and closes the store so that every obsolete file is
// gone.
//
// On PostgreSQL it prunes the records and the engine, then closes the
// store; traces then reads the rows.
func (f *fixture) pruneCompactClose(r Retention) Pruned {
	f.t.Helper()
	if f.kind == onPostgres {
		if _, err := f.pg.PruneExpired(context.Background(), f.now.Add(-r.Keep), f.now.Add(-24*time.Hour)); err != nil {
			f.t.Fatal(err)
		}
		pruned, err := f.e.Prune(context.Background(), r)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := f.pg.Close(); err != nil {
			f.t.Fatal(err)
		}
		return pruned
	}
	if _, err := f.st.PruneExpired(f.now.Add(-r.Keep), f.now.Add(-24*time.Hour)); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.st.PruneContacts(f.now.Add(-r.Contact)); err != nil {
		f.t.Fatal(err)
	}
	pruned, err := f.e.Prune(context.Background(), r)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.DB().Compact(context.Background(), []byte{0}, bytes.Repeat([]byte{0xff}, 32), true); err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.Close(); err != nil {
		f.t.Fatal(err)
	}
	return pruned
}

// traces returns, for each string still stored, where: on Pebble the file
// it was found in (onDisk); on PostgreSQL the column of a table whose rows
// hold it, in any of its forms, then, when the fixture has its own server
// (pgFiles), the files of the server holding it once the server has been
// made to forget (pgtest.Forget: VACUUM FULL, CHECKPOINT, a WAL switch).
func (f *fixture) traces(strs ...string) map[string]string {
	f.t.Helper()
	if f.kind != onPostgres {
		return onDisk(f.t.(*testing.T), f.dir, strs...)
	}
	ctx := context.Background()
	found, _, err := pgtest.ScanTables(ctx, f.dsn, strs...)
	if err != nil {
		f.t.Fatal(err)
	}
	if f.pgFiles == "" || len(found) == len(strs) {
		return found
	}
	// Then the bytes of the server's files, once it has forgotten what was
	// deleted.
	if err := pgtest.Forget(ctx, f.dsn); err != nil {
		f.t.Fatal(err)
	}
	files, err := canaryscan.Files(f.pgFiles, nil, strs...)
	if err != nil {
		f.t.Fatal(err)
	}
	for s, in := range files {
		if _, ok := found[s]; !ok {
			found[s] = strings.Join(in, ", ")
		}
	}
	return found
}

// onDisk returns, for each string found in any of its forms in the bytes
// of the files under dir, the first file it was found in.
func onDisk(t *testing.T, dir string, strs ...string) map[string]string {
	t.Helper()
	files, err := canaryscan.Files(dir, nil, strs...)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for s, in := range files {
		found[s] = in[0]
	}
	return found
}

const (
	testKeep    = 30 * 24 * time.Hour
	testContact = 7 * 24 * time.Hour
)

// TestRetentionLeavesNoTraceOnDisk writes, for each class of data, the
// entries of a canary customer (with e-mail, phone and a comment), and 20
// days later those of a second customer; 31 days after the first, it
// prunes with a 30-day retention, compacts, and reads every byte of the
// data directory (on PostgreSQL: every column of every table, then every
// file of the server after VACUUM FULL, a checkpoint and a WAL switch):
// nothing of the canary is left, while the second
// customer's strings are found (so the scan works) and its entries are
// still readable.
func TestRetentionLeavesNoTraceOnDisk(t *testing.T) {
	ownServer := pgtest.Start(t)
	for _, tc := range []struct {
		name string
		cfg  func(ok, failing, det *receiver) Config
		// visit writes p's entries of the class.
		visit func(f *fixture, p person)
		// kept checks that the second customer's entries are readable.
		kept func(t *testing.T, f *fixture, p person, ok *receiver)
	}{
		{
			name: "interaction, delivered invitation, contact history, counters and rate buckets",
			cfg: func(ok, _, _ *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "nps", Touchpoints: []string{"chat"}, Webhook: ok.endpoint()}}}
			},
			visit: func(f *fixture, p person) { f.visit("chat", p); f.step() },
			kept: func(t *testing.T, f *fixture, p person, ok *receiver) {
				inv := invitationOf(t, f, ok, p)
				// Delivered 11 days ago: its contact is gone, not the rest.
				if inv.Contact != nil || !inv.Delivered {
					t.Errorf("kept invitation: %+v; want it delivered, without its contact", inv)
				}
				var h contactHistory
				if found, err := f.e.getJSON(contactKey(p.id), &h); err != nil || !found {
					t.Errorf("kept contact history: %v, %v", found, err)
				}
				if s := f.stats("nps"); s[CounterInvited] != 1 || s[CounterDelivered] != 1 {
					t.Errorf("counters of the kept customer's day: %v, want 1 invited and delivered", s)
				}
			},
		},
		{
			name: "message parked for want of a webhook",
			cfg: func(_, _, _ *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "mail", Touchpoints: []string{"chat"}}}}
			},
			visit: func(f *fixture, p person) { f.visit("chat", p); f.step() },
			kept: func(t *testing.T, f *fixture, p person, _ *receiver) {
				if n, err := f.e.Outbox(); err != nil || n != 1 {
					t.Errorf("outbox: %d, %v; want the kept customer's parked message", n, err)
				}
			},
		},
		{
			name: "message whose retries ran out",
			cfg: func(_, failing, _ *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "nps", Touchpoints: []string{"chat"}, Webhook: failing.endpoint()}}}
			},
			visit: func(f *fixture, p person) { f.visit("chat", p); f.stepFor(70 * time.Minute) },
			kept: func(t *testing.T, f *fixture, p person, _ *receiver) {
				if n, err := f.countKeys(prefixFailed); err != nil || n != 1 {
					t.Errorf("failed messages: %d, %v; want the kept customer's", n, err)
				}
			},
		},
		{
			name: "detractor with a comment, followed up",
			cfg: func(_, _, det *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "nps", Kind: score.NPS, DetractorWebhook: det.endpoint()}}}
			},
			visit: func(f *fixture, p person) {
				id := f.answerWithComment("nps", p, 2)
				f.step()
				f.followUp("nps", id, f.now.Add(time.Hour))
			},
			kept: func(t *testing.T, f *fixture, p person, _ *receiver) {
				c := f.closedLoop("nps", t0)
				if c.Open != 0 || c.FollowedUp != 1 {
					t.Errorf("closed loop after the prune: %+v; want the kept customer's one follow-up and none open", c)
				}
				if n, err := f.countKeys(prefixDet); err != nil || n != 1 {
					t.Errorf("detractors: %d, %v; want 1", n, err)
				}
			},
		},
		{
			name: "wave",
			cfg: func(ok, _, _ *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "nps", Webhook: ok.endpoint()}}}
			},
			visit: func(f *fixture, p person) {
				if _, err := f.e.Wave("nps", "wave-"+p.id[5:9], []Member{{Customer: p.id, Contact: p.contact()}}); err != nil {
					f.t.Fatal(err)
				}
				f.step()
			},
			kept: func(t *testing.T, f *fixture, p person, ok *receiver) {
				invitationOf(t, f, ok, p)
				if n, err := f.countKeys(prefixWave); err != nil || n != 1 {
					t.Errorf("wave ids: %d, %v; want the kept customer's", n, err)
				}
			},
		},
		{
			name: "due entry never taken",
			cfg: func(ok, _, _ *receiver) Config {
				return Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "nps", Touchpoints: []string{"chat"}, Webhook: ok.endpoint()}}}
			},
			// The engine reads the interaction but never gets to invite
			// (its invite step failing, say): the entry waits.
			visit: func(f *fixture, p person) {
				f.visit("chat", p)
				if err := f.e.lockWait(context.Background()); err != nil {
					f.t.Fatal(err)
				}
				defer f.e.unlock()
				if _, err := f.e.consume(f.e.cfg.Load()); err != nil {
					f.t.Fatal(err)
				}
			},
			kept: func(t *testing.T, f *fixture, p person, _ *receiver) {
				if n, err := f.countKeys(prefixDue); err != nil || n != 1 {
					t.Errorf("due entries: %d, %v; want the kept customer's", n, err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onBothStores(t, func(t *testing.T, kind storeKind) {
				ok, failing, det := newReceiver(t), newReceiver(t, repeat(500, 1000)...), newReceiver(t)
				f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: tc.cfg(ok, failing, det),
					opts:      &Options{RetryBase: time.Second, RetryMax: 10 * time.Second, RetryFor: time.Hour, TouchpointRate: 1000},
					storeOpts: func(o *store.Options) { o.Uncompressed = true }}
				if kind == onPostgres {
					// A server of the test's own, whose files hold only
					// its databases.
					f.dsn, f.pgFiles = ownServer.NewDatabase(t), filepath.Dir(ownServer.DataDir())
				}
				f.open()
				canary, keeper := newPerson("canary"), newPerson("keeper")
				tc.visit(f, canary)
				f.now = t0.Add(20 * 24 * time.Hour)
				tc.visit(f, keeper)
				f.now = t0.Add(31 * 24 * time.Hour)
				pruned := f.pruneCompactClose(Retention{Keep: testKeep, Contact: testContact})
				t.Logf("pruned: %v", pruned)

				if left := f.traces(canary.strings()...); len(left) > 0 {
					t.Errorf("the canary's data is still stored after the prune: %v", left)
				}
				if found := f.traces(keeper.id); len(found) == 0 {
					t.Errorf("the kept customer's id is not found: the scan does not work")
				}
				if f.pgFiles != "" {
					// The file scan works too: the kept customer's id is
					// in a table file.
					if files, err := canaryscan.Files(f.pgFiles, nil, keeper.id); err != nil || !slices.ContainsFunc(files[keeper.id], func(p string) bool { return strings.HasPrefix(p, "data/base/") }) {
						t.Errorf("the kept customer's id is in no table file (%v, %v): the scan does not work", files, err)
					}
				}
				f.open()
				tc.kept(t, f, keeper, ok)
			})
		})
	}
}

// TestContactRetentionDropsContactsFromDisk: contacts given with a wave
// (which keeps no raw record) are dropped from invitations and messages a
// week after delivery succeeded or was given up, while the invitations
// stay; a delivery given up less than a week ago, and a message still
// being retried, keep theirs.
func TestContactRetentionDropsContactsFromDisk(t *testing.T) {
	onBothStores(t, testContactRetentionDropsContactsFromDisk)
}

// testContactRetentionDropsContactsFromDisk reads, on PostgreSQL, every
// column of every table (traces) where it reads every file on Pebble.
func testContactRetentionDropsContactsFromDisk(t *testing.T, kind storeKind) {
	for _, tc := range []struct {
		name     string
		retryFor time.Duration
		webhook  func(ok, failing *receiver) *Survey
		// stripped: whether the old customer's contact goes.
		stripped bool
	}{
		{"delivered", time.Hour, func(ok, _ *receiver) *Survey { return &Survey{SamplePercent: 100, Name: "nps", Webhook: ok.endpoint()} }, true},
		{"parked for want of a webhook", time.Hour, func(_, _ *receiver) *Survey { return &Survey{SamplePercent: 100, Name: "nps"} }, true},
		{"retries ran out", time.Hour, func(_, failing *receiver) *Survey {
			return &Survey{SamplePercent: 100, Name: "nps", Webhook: failing.endpoint()}
		}, true},
		{"still retried", 30 * 24 * time.Hour, func(_, failing *receiver) *Survey {
			return &Survey{SamplePercent: 100, Name: "nps", Webhook: failing.endpoint()}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, failing := newReceiver(t), newReceiver(t, repeat(500, 1000)...)
			f := &fixture{t: t, kind: kind, dir: t.TempDir(), now: t0, cfg: Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{*tc.webhook(ok, failing)}},
				opts:      &Options{RetryBase: time.Second, RetryMax: 10 * time.Second, RetryFor: tc.retryFor},
				storeOpts: func(o *store.Options) { o.Uncompressed = true }}
			f.open()
			old, recent := newPerson("old"), newPerson("recent")
			wave := func(p person) {
				if _, err := f.e.Wave("nps", "wave-"+p.id[5:8], []Member{{Customer: p.id, Contact: p.contact()}}); err != nil {
					t.Fatal(err)
				}
				f.stepFor(70 * time.Minute)
			}
			wave(old)
			f.now = t0.Add(5 * 24 * time.Hour)
			wave(recent)
			f.now = t0.Add(8 * 24 * time.Hour)
			pruned := f.pruneCompactClose(Retention{Keep: testKeep, Contact: testContact})
			t.Logf("pruned: %v", pruned)

			found := f.traces(old.email, old.phone, old.id, recent.email, recent.phone)
			for _, s := range []string{old.email, old.phone} {
				if _, on := found[s]; on == tc.stripped {
					t.Errorf("%s on disk: %v, want %v (found in %s)", s, on, !tc.stripped, found[s])
				}
			}
			for _, s := range []string{old.id, recent.email, recent.phone} {
				if _, on := found[s]; !on {
					t.Errorf("%s is not on disk; it should stay", s)
				}
			}
			f.open()
			invs := f.invitations()
			if len(invs) != 2 {
				t.Fatalf("%d invitations after the prune, want both", len(invs))
			}
			for _, inv := range invs {
				wantContact := inv.Customer == recent.id || !tc.stripped
				if (inv.Contact != nil) != wantContact {
					t.Errorf("invitation of %s: contact %+v, want one: %v", inv.Customer, inv.Contact, wantContact)
				}
			}
		})
	}
}

// TestPruneCrashBetweenBatchesLosesNothing prunes 5,000 expired
// invitations and contact histories (three batches of the index each),
// crashes after the first batch of invitations, and checks that the
// reopened engine still has every entry inside the retention and that
// the next prune finishes the job.
func TestPruneCrashBetweenBatchesLosesNothing(t *testing.T) {
	onBothStores(t, testPruneCrashBetweenBatchesLosesNothing)
}

func testPruneCrashBetweenBatchesLosesNothing(t *testing.T, kind storeKind) {
	f := newFixtureOn(t, kind, Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "mail", Touchpoints: []string{"chat"}}}})
	customers := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return out
	}
	f.interact("chat", customers("old", 5000)...)
	f.step()
	f.now = t0.Add(20 * 24 * time.Hour)
	f.interact("chat", customers("new", 10)...)
	f.step()
	f.now = t0.Add(31 * 24 * time.Hour)

	errCrash := fmt.Errorf("crash")
	invitationBatches := 0
	pruneHook = func(class string) error {
		if class == ClassInvitations {
			invitationBatches++
			if invitationBatches == 2 {
				return errCrash
			}
		}
		return nil
	}
	defer func() { pruneHook = nil }()
	if _, err := f.e.Prune(context.Background(), Retention{Keep: testKeep, Contact: testContact}); err == nil {
		t.Fatal("the prune did not stop at the injected crash")
	}
	pruneHook = nil
	f.restart()
	counts := func() (inv, contacts, ixInv, ixContact int) {
		var err error
		for _, c := range []struct {
			n      *int
			prefix string
		}{{&inv, prefixInv}, {&contacts, prefixContactHash}, {&ixInv, prefixIxInv}, {&ixContact, prefixIxContact}} {
			if *c.n, err = f.e.countKeys(c.prefix); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	inv, contacts, ixInv, ixContact := counts()
	if contacts != 10 || ixContact != 10 {
		t.Errorf("after the crash: %d contact histories and %d index keys, want the 10 kept ones (their prune had finished)", contacts, ixContact)
	}
	if inv != 5010-pruneBatch || ixInv != inv {
		t.Errorf("after the crash: %d invitations and %d index keys; want %d of each (one batch pruned)", inv, ixInv, 5010-pruneBatch)
	}
	pruned, err := f.e.Prune(context.Background(), Retention{Keep: testKeep, Contact: testContact})
	if err != nil {
		t.Fatal(err)
	}
	if pruned[ClassInvitations] != 5000-pruneBatch || pruned[ClassMessages] != 5000 {
		t.Errorf("second prune: %v; want the %d invitations left and the 5000 parked messages", pruned, 5000-pruneBatch)
	}
	if inv, contacts, ixInv, ixContact = counts(); inv != 10 || contacts != 10 || ixInv != 10 || ixContact != 10 {
		t.Errorf("after the second prune: %d invitations, %d contact histories, index keys %d and %d; want 10 of each", inv, contacts, ixInv, ixContact)
	}
	for i := range 10 {
		var h contactHistory
		if ok, err := f.e.getJSON(contactKey(fmt.Sprintf("new-%d", i)), &h); err != nil || !ok {
			t.Errorf("contact history of new-%d: %v, %v", i, ok, err)
		}
	}
}

// TestPruneIndexesAStoreWrittenBeforeTheIndexes: invitations, contact
// histories and detractors stored without their time index are indexed
// by the first prune and expire like the others.
func TestPruneIndexesAStoreWrittenBeforeTheIndexes(t *testing.T) {
	f := newFixture(t, Config{LinkKeys: keys, PageURL: "https://cx.example.com", Surveys: []Survey{{SamplePercent: 100, Name: "mail", Touchpoints: []string{"chat"}, Throttle: time.Hour}}})
	f.interact("chat", "a", "b", "c")
	f.step()
	// Drop the index keys and store the contact histories under the
	// customer ids, as a store from before them has them.
	db := f.st.DB()
	if err := db.DeleteRange([]byte("s/ix/"), []byte("s/ix0"), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"a", "b", "c"} {
		v, closer, err := db.Get(contactKey(c))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set([]byte(prefixContact+c), v, nil); err != nil {
			t.Fatal(err)
		}
		_ = closer.Close()
		if err := db.Delete(contactKey(c), nil); err != nil {
			t.Fatal(err)
		}
	}
	// The throttle still finds a history stored the old way.
	f.now = t0.Add(time.Minute)
	f.interact("chat", "c")
	f.step()
	if s := f.stats("mail"); s[CounterSuppressedThrottle] != 1 || s[CounterInvited] != 3 {
		t.Fatalf("counters %v", s)
	}
	f.now = t0.Add(31 * 24 * time.Hour)
	pruned, err := f.e.Prune(context.Background(), Retention{Keep: testKeep, Contact: testContact})
	if err != nil {
		t.Fatal(err)
	}
	if pruned[ClassInvitations] != 3 || pruned[ClassContactHistory] != 3 || pruned[ClassMessages] != 3 {
		t.Errorf("pruned %v; want the 3 invitations, parked messages and contact histories", pruned)
	}
	for _, prefix := range []string{prefixContact, prefixContactHash, prefixInv, prefixIxContact, prefixIxInv} {
		if n, err := f.countKeys(prefix); err != nil || n != 0 {
			t.Errorf("%d keys left under %q (%v)", n, prefix, err)
		}
	}
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// invitations returns every stored invitation.
func (f *fixture) invitations() []Invitation {
	f.t.Helper()
	it, err := f.e.kv.NewIter(nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer it.Close()
	var out []Invitation
	for valid := it.SeekGE([]byte(prefixInv)); valid && bytes.HasPrefix(it.Key(), []byte(prefixInv)); valid = it.Next() {
		inv, _, err := f.e.Invitation(string(it.Key()[len(prefixInv):]))
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, inv)
	}
	return out
}

// invitationOf returns p's one stored invitation.
func invitationOf(t *testing.T, f *fixture, _ *receiver, p person) Invitation {
	t.Helper()
	var found []Invitation
	for _, inv := range f.invitations() {
		if inv.Customer == p.id {
			found = append(found, inv)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d invitations of %s, want 1", len(found), p.id)
	}
	return found[0]
}

func (f *fixture) countKeys(prefix string) (int, error) { return f.e.countKeys(prefix) }
