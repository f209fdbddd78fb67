package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// crashingKV stands for a replica that dies: once crashed, none of its
// batches commit and it never gives its lease back.
type crashingKV struct {
	kv.KV
	crashed atomic.Bool
	// partitioned makes renewals of the lease fail while set, as for a
	// replica cut off from the database for a while: its batches still
	// reach the database, where the fencing token must refuse them.
	partitioned atomic.Bool
	// renewed receives a value after each renewal that succeeded.
	renewed chan struct{}
}

func (c *crashingKV) RenewLock(ctx context.Context) error {
	if c.crashed.Load() || c.partitioned.Load() {
		return errors.New("the replica cannot reach the database")
	}
	err := c.KV.RenewLock(ctx)
	if err == nil && c.renewed != nil {
		select {
		case c.renewed <- struct{}{}:
		default:
		}
	}
	return err
}

func (c *crashingKV) Unlock() {
	if !c.crashed.Load() {
		c.KV.Unlock()
	}
}

func (c *crashingKV) NewBatch() kv.Batch { return crashingBatch{c.KV.NewBatch(), c} }

type crashingBatch struct {
	kv.Batch
	c *crashingKV
}

func (b crashingBatch) Commit() error {
	if b.c.crashed.Load() {
		return errors.New("the replica crashed")
	}
	return b.Batch.Commit()
}

// crashAfter is a sender that crashes its replica right after its nth
// attempt went out: the receiver has the message, the engine never
// records it.
type crashAfter struct {
	Sender
	kv    *crashingKV
	armed atomic.Bool
	n     atomic.Int64
}

func (s *crashAfter) Send(ctx context.Context, ep webhook.Endpoint, m webhook.Message) webhook.Result {
	r := s.Sender.Send(ctx, ep, m)
	if s.armed.Load() && s.n.Add(1) == 5 {
		s.kv.crashed.Store(true)
	}
	return r
}

// TestTwoEnginesOverOneDatabase: two collector replicas, each with its own
// engine, over one PostgreSQL. Interactions arrive through both while both
// engines step at once: every customer is invited once. Then one engine
// dies mid-delivery holding the lease, some of its messages sent but not
// recorded; the other does nothing until the lease expires, then delivers
// everything left: every message arrives at least once, always under the
// same webhook-id, and none is lost.
//
// It runs straight on the server, and through a PgBouncer in transaction
// pooling mode with pgx's statement cache off (four server connections).
func TestTwoEnginesOverOneDatabase(t *testing.T) {
	t.Run("direct", func(t *testing.T) { testTwoEngines(t, testPostgres(t).NewDatabase(t), false) })
	t.Run("pgbouncer", func(t *testing.T) {
		srv := testPostgres(t)
		bouncer := pgtest.StartPgBouncer(t, srv, 4)
		testTwoEngines(t, bouncer.DSN(srv.CreateDatabase(t)), true)
	})
}

// replicaClock is the one clock of two replicas' stores and engines in a
// test, set by the test.
type replicaClock struct{ atomic.Int64 }

func (c *replicaClock) now() time.Time { return time.Unix(0, c.Load()).UTC() }

// openReplicas opens two stores over dsn as replicas "replica-a" and
// "replica-b" on one clock starting at t0, with an engine lease of ttl;
// mod adjusts their options.
func openReplicas(t *testing.T, dsn string, ttl time.Duration, mod func(*pgstore.Options)) (*replicaClock, *pgstore.Store, *pgstore.Store) {
	clock := &replicaClock{}
	clock.Store(t0.UnixNano())
	open := func(holder string) *pgstore.Store {
		o := pgstore.Options{DSN: dsn, FoldInterval: -1, Now: clock.now, EngineClock: clock.now, EngineLeaseTTL: ttl, Holder: holder}
		mod(&o)
		s, err := pgstore.Open(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return clock, open("replica-a"), open("replica-b")
}

func testTwoEngines(t *testing.T, dsn string, noStatementCache bool) {
	const ttl = 30 * time.Second
	clock, sa, sb := openReplicas(t, dsn, ttl, func(o *pgstore.Options) { o.NoStatementCache = noStatementCache })
	now := clock.now
	rcv := newReceiver(t)
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Throttle: 30 * 24 * time.Hour, Webhook: rcv.endpoint()}}}
	client := webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
	akv := &crashingKV{KV: sa.EngineKV()}
	asend := &crashAfter{Sender: client, kv: akv}
	ea, eb := replicaEngine(t, akv, asend, now, cfg), replicaEngine(t, sb.EngineKV(), client, now, cfg)

	// ingest submits n interactions from first on, alternately through
	// each replica, both at once.
	ingest := func(first, n int) {
		var wg sync.WaitGroup
		for r, s := range []*pgstore.Store{sa, sb} {
			wg.Go(func() {
				for i := first + r; i < first+n; i += 2 {
					id := fmt.Sprintf("ev-%d", i)
					js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"c-%d","time":%q}`, id, i, now().Format(time.RFC3339Nano))
					rec := store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js),
						Event: rollup.Event{Time: now().UnixNano(), CustomerHash: uint64(i)}}
					if _, err := s.Submit(context.Background(), []store.Record{rec}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	step := func(e *Engine) error { return e.Step(context.Background()) }

	// Both engines step while interactions arrive through both replicas.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, e := range []*Engine{ea, eb} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := step(e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// The same wave reaches both replicas (a retried job): taken once.
	members := make([]Member, 50)
	for i := range members {
		members[i] = Member{Customer: fmt.Sprintf("w-%d", i)}
	}
	var waves atomic.Int64
	for _, e := range []*Engine{ea, eb} {
		wg.Go(func() {
			taken, err := e.Wave("nps", "spring", members)
			if err != nil {
				t.Error(err)
			}
			if taken {
				waves.Add(1)
			}
		})
	}
	ingest(0, 200)
	close(stop)
	wg.Wait()
	if waves.Load() != 1 {
		t.Fatalf("the wave was taken %d times, want once", waves.Load())
	}
	if err := step(eb); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.got()); n != 250 {
		t.Fatalf("after the first 200 interactions and the wave of 50: %d deliveries, want 250", n)
	}

	// Engine a dies after its fifth attempt of the next batch.
	ingest(200, 200)
	asend.armed.Store(true)
	if err := step(ea); err == nil || !akv.crashed.Load() {
		t.Fatalf("engine a did not crash: %v", err)
	}
	sentByA := len(rcv.got()) - 250
	if sentByA < 5 {
		t.Fatalf("engine a sent %d before it crashed", sentByA)
	}
	// Its lease holds the other off until it expires.
	if err := step(eb); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.got()); n != 250+sentByA {
		t.Fatalf("engine b worked while a's lease held: %d deliveries, want %d", n, 250+sentByA)
	}
	clock.Add(int64(ttl + time.Second))
	if err := step(eb); err != nil {
		t.Fatal(err)
	}

	ids := map[string]map[string]bool{} // customer -> webhook-ids
	invs := map[string]map[string]bool{}
	for _, r := range rcv.got() {
		if ids[r.body.Customer] == nil {
			ids[r.body.Customer], invs[r.body.Customer] = map[string]bool{}, map[string]bool{}
		}
		ids[r.body.Customer][r.id] = true
		invs[r.body.Customer][r.body.Invitation] = true
	}
	var customers []string
	for i := range 400 {
		customers = append(customers, fmt.Sprintf("c-%d", i))
	}
	for _, m := range members {
		customers = append(customers, m.Customer)
	}
	for _, c := range customers {
		if len(ids[c]) != 1 || len(invs[c]) != 1 {
			t.Errorf("%s: webhook-ids %v, invitations %v; want one of each", c, ids[c], invs[c])
		}
	}
	if len(ids) != 450 {
		t.Errorf("%d customers reached, want 450", len(ids))
	}
	if n, err := eb.Outbox(); err != nil || n != 0 {
		t.Errorf("outbox: %d, %v; want empty", n, err)
	}
	stats, err := eb.Stats("nps", t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if stats[CounterInvited] != 450 || stats[CounterDelivered] != 450 || stats[CounterWaveMembers] != 1 {
		t.Errorf("counters %v; want 450 invited and delivered, one wave part", stats)
	}
	it, err := sb.EngineKV().NewIter([]byte(kv.FeedPrefix), prefixEnd([]byte(kv.FeedPrefix)))
	if err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Errorf("feed entries left: %q", it.Key())
	}
	_ = it.Close()
	t.Logf("deliveries %d for 450 messages; %d sent by the crashed engine and sent again", len(rcv.got()), sentByA)
}

// TestFeedCarriesTheContactStoredApart: a feed entry's contact (the one a
// store keeps apart from the record) reaches the invitation, over one in
// the record's JSON.
func TestFeedCarriesTheContactStoredApart(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixtureOn(t, onPostgres, Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}})
	entry := func(seq uint64, customer, contact, inJSON string) {
		js := fmt.Sprintf(`{"id":"e%d","touchpoint":"chat","customer":%q,"time":%q%s}`, seq, customer, f.now.Format(time.RFC3339Nano), inJSON)
		var c []byte
		if contact != "" {
			c = []byte(contact)
		}
		f.write(func(b kv.Batch) {
			_ = b.Set(binary.BigEndian.AppendUint64([]byte(kv.FeedPrefix), seq), kv.EncodeFeed(byte(rollup.KindTouchpoint), "chat", c, []byte(js)))
		})
	}
	entry(1, "apart", `{"email":"apart@example.org"}`, `,"contact":{"email":"old@example.org"}`)
	entry(2, "legacy", "", `,"contact":{"email":"legacy@example.org"}`)
	entry(3, "none", "", "")
	f.step()
	got := map[string]string{}
	for _, r := range rcv.got() {
		got[r.body.Customer] = "-"
		if r.body.Contact != nil {
			got[r.body.Customer] = r.body.Contact.Email
		}
	}
	if want := "map[apart:apart@example.org legacy:legacy@example.org none:-]"; fmt.Sprint(got) != want {
		t.Errorf("contacts %v, want %s", got, want)
	}
}

// gatedSender holds each attempt, once armed, until the test lets it go:
// a webhook receiver slower than the engine's lease lasts.
type gatedSender struct {
	Sender
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedSender) Send(ctx context.Context, ep webhook.Endpoint, m webhook.Message) webhook.Result {
	if s.armed.Load() {
		s.entered <- struct{}{}
		<-s.gate
	}
	return s.Sender.Send(ctx, ep, m)
}

// TestLeaseRenewedWhileAStepWaits: the engine's lease (30s on the injected
// clock) is renewed in the background while its holder's step waits on a
// receiver for three times as long, so the other replica does not take it
// over, and the step's outcome commits. A holder whose renewals stop (cut
// off from the database) loses the lease once it expires; the other replica
// takes over and delivers, and the first one, back, commits nothing: its
// renewal reports the loss and its step fails with kv.ErrNotHeld.
func TestLeaseRenewedWhileAStepWaits(t *testing.T) {
	dsn := testPostgres(t).NewDatabase(t)
	const ttl = 30 * time.Second
	clock, sa, sb := openReplicas(t, dsn, ttl, func(o *pgstore.Options) { o.EngineLeaseRenew = 5 * time.Millisecond })
	now := clock.now
	rcv := newReceiver(t)
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}}
	client := webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
	akv := &crashingKV{KV: sa.EngineKV(), renewed: make(chan struct{}, 1)}
	asend := &gatedSender{Sender: client, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	ea, eb := replicaEngine(t, akv, asend, now, cfg), replicaEngine(t, sb.EngineKV(), client, now, cfg)
	ingest := func(s *pgstore.Store, customer string) {
		js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"time":%q}`, customer, customer, now().Format(time.RFC3339Nano))
		rec := store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: customer, JSON: []byte(js),
			Event: rollup.Event{Time: now().UnixNano()}}
		if _, err := s.Submit(context.Background(), []store.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	stepA := func() chan error {
		done := make(chan error, 1)
		go func() { done <- ea.Step(context.Background()) }()
		<-asend.entered
		return done
	}
	// renewedAfter waits for a renewal that began after the call: the
	// second one to end from now on (renewals run one after another).
	renewedAfter := func() {
		for range 2 {
			select {
			case <-akv.renewed:
			case <-time.After(time.Minute):
				t.Fatal("no renewal of the lease in a minute")
			}
		}
	}
	delivered := func() uint64 {
		stats, err := eb.Stats("nps", t0.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return stats[CounterDelivered]
	}

	ingest(sa, "c-1")
	asend.armed.Store(true)
	doneA := stepA()
	// Three lease lifetimes pass while the attempt waits, half a
	// lifetime after each renewal.
	for range 6 {
		clock.Add(int64(ttl / 2))
		renewedAfter()
	}
	if err := eb.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.got()); n != 0 {
		t.Fatalf("replica b took the lease from a step that renews it: %d deliveries", n)
	}
	asend.gate <- struct{}{}
	if err := <-doneA; err != nil {
		t.Fatalf("the slow step: %v", err)
	}
	if got := rcv.got(); len(got) != 1 || got[0].body.Customer != "c-1" || delivered() != 1 {
		t.Fatalf("after the slow step: %d deliveries, %d counted; want c-1 delivered and counted once", len(got), delivered())
	}

	// Replica a is cut off from the database mid-step: its lease expires
	// and b takes over within it.
	ingest(sb, "c-2")
	doneA = stepA()
	akv.partitioned.Store(true)
	clock.Add(int64(ttl / 2))
	if err := eb.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.got()); n != 1 {
		t.Fatalf("replica b took the lease before it expired: %d deliveries", n)
	}
	clock.Add(int64(ttl/2 + time.Second))
	if err := eb.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.got(); len(got) != 2 || got[1].body.Customer != "c-2" {
		t.Fatalf("replica b did not take over the expired lease: %d deliveries", len(got))
	}
	// Back, replica a learns from its next renewal that it lost the
	// lease, and its step commits nothing.
	akv.partitioned.Store(false)
	for testutil.ToFloat64(ea.metrics.leaseRenewals.WithLabelValues("lost")) != 1 {
		select {
		case <-doneA:
			t.Fatal("replica a's step ended while its attempt was held")
		case <-time.After(time.Millisecond):
		}
	}
	asend.gate <- struct{}{}
	if err := <-doneA; !errors.Is(err, kv.ErrNotHeld) {
		t.Fatalf("the step of the replica that lost the lease: %v, want kv.ErrNotHeld", err)
	}
	got := rcv.got()
	if len(got) != 3 || got[2].body.Customer != "c-2" || got[2].id != got[1].id {
		t.Fatalf("deliveries %v; want c-2 sent again by a under the same webhook-id", got)
	}
	if n := delivered(); n != 2 {
		t.Errorf("%d deliveries counted, want 2: the replica that lost the lease committed its outcome", n)
	}
	if n, err := eb.Outbox(); err != nil || n != 0 {
		t.Errorf("outbox %d, %v; want empty", n, err)
	}
}

// TestOlderConfigLeavesTheFeed: two replicas over one database whose
// configs differ while a new one reaches them: a has revision 1 (no survey
// yet), b revision 2 (a survey triggered by chat). Interactions arrive
// through both. Replica a's engine, holding the lease, consumes none of the
// feed (b loaded a newer config); b's engine then invites every customer
// once. Once a has revision 2 too, its engine consumes again; and an engine
// whose config is the newest consumes entries no survey wants, inviting no
// one.
func TestOlderConfigLeavesTheFeed(t *testing.T) {
	dsn := testPostgres(t).NewDatabase(t)
	now := func() time.Time { return t0 }
	openStore := func(holder string) *pgstore.Store {
		s, err := pgstore.Open(context.Background(), pgstore.Options{DSN: dsn, FoldInterval: -1, Now: now, EngineClock: now, Holder: holder})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	sa, sb := openStore("replica-a"), openStore("replica-b")
	rcv := newReceiver(t)
	rev1 := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Revision: 1}
	rev2 := rev1
	rev2.Revision = 2
	rev2.Surveys = []Survey{{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}
	client := webhook.NewClient(&webhook.Guard{AllowLoopback: true, AllowHTTP: true}, 5*time.Second)
	newEngine := func(s *pgstore.Store, cfg Config) *Engine {
		if err := s.RecordConfigRevision(context.Background(), cfg.Revision); err != nil {
			t.Fatal(err)
		}
		e, err := NewOn(s.EngineKV(), nil, client, Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		e.SetConfig(cfg)
		return e
	}
	ea := newEngine(sa, rev1)
	eb := newEngine(sb, rev2)
	ingest := func(s *pgstore.Store, customers ...string) {
		for _, c := range customers {
			js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"time":%q}`, c, c, t0.Format(time.RFC3339Nano))
			rec := store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: c, JSON: []byte(js), Event: rollup.Event{Time: t0.UnixNano()}}
			if _, err := s.Submit(context.Background(), []store.Record{rec}); err != nil {
				t.Fatal(err)
			}
		}
	}
	feed := func() int {
		it, err := sa.EngineKV().NewIter([]byte(kv.FeedPrefix), prefixEnd([]byte(kv.FeedPrefix)))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = it.Close() }()
		n := 0
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		return n
	}
	customers := func() []string {
		var out []string
		for _, r := range rcv.got() {
			out = append(out, r.body.Customer)
		}
		slices.Sort(out)
		return out
	}
	step := func(e *Engine) {
		t.Helper()
		if err := e.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	ingest(sa, "c-1")
	ingest(sb, "c-2")
	step(ea)
	if n := feed(); n != 2 {
		t.Fatalf("the engine with the older config consumed the feed: %d entries left, want 2", n)
	}
	if held := testutil.ToFloat64(ea.metrics.feedHeld); held != 1 || testutil.ToFloat64(ea.metrics.feedHeldRevision) != 2 {
		t.Errorf("feed held %v times waiting for revision %v; want once, for 2", held, testutil.ToFloat64(ea.metrics.feedHeldRevision))
	}
	step(eb)
	if got := fmt.Sprint(customers()); got != "[c-1 c-2]" || feed() != 0 {
		t.Fatalf("after the engine with the newer config stepped: invited %s, %d feed entries; want [c-1 c-2] and none", got, feed())
	}

	// Replica a loads revision 2: its engine consumes again.
	ea = newEngine(sa, rev2)
	ingest(sa, "c-3")
	step(ea)
	if got := fmt.Sprint(customers()); got != "[c-1 c-2 c-3]" || feed() != 0 {
		t.Fatalf("after a loaded revision 2: invited %s, %d feed entries; want [c-1 c-2 c-3] and none", got, feed())
	}

	// Revision 3 drops the survey: its entries are consumed, inviting
	// no one.
	rev3 := rev1
	rev3.Revision = 3
	eb = newEngine(sb, rev3)
	ingest(sb, "c-4")
	step(eb)
	if got := fmt.Sprint(customers()); got != "[c-1 c-2 c-3]" || feed() != 0 {
		t.Fatalf("under revision 3 without the survey: invited %s, %d feed entries; want [c-1 c-2 c-3] and none", got, feed())
	}
}

// replicaEngine is one replica's engine over store, configured with cfg,
// retrying deliveries from a second up to ten.
func replicaEngine(t *testing.T, store KV, sender Sender, now func() time.Time, cfg Config) *Engine {
	t.Helper()
	e, err := NewOn(store, nil, sender, Options{RetryBase: time.Second, RetryMax: 10 * time.Second, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	e.SetConfig(cfg)
	return e
}
