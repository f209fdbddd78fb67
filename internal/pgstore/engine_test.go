package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

func TestEngineKVOrderPagesRangesAndSnapshots(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	e := s.EngineKV()
	ctx := context.Background()
	if ok, err := e.Lock(ctx, false); err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	b := e.NewBatch()
	for i := range 1300 {
		_ = b.Set(fmt.Appendf(nil, "s/x/%05d", i), fmt.Appendf(nil, "v%d", i))
	}
	_ = b.Set([]byte("s/y"), nil) // an empty value is a value
	_ = b.Delete([]byte("s/x/00003"))
	_ = b.Set([]byte("s/x/00004"), []byte("again")) // the last write wins
	if b.Count() != 1303 {
		t.Fatalf("count %d", b.Count())
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if v, err := e.Get([]byte("s/y")); err != nil || len(v) != 0 || v == nil {
		t.Fatalf("empty value: %q %v", v, err)
	}
	if _, err := e.Get([]byte("s/x/00003")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	// Across pages, in byte order, within bounds.
	it, _ := e.NewIter([]byte("s/x/00002"), []byte("s/x/01200"))
	var n int
	var last []byte
	for it.First(); it.Valid(); it.Next() {
		if bytes.Compare(it.Key(), last) <= 0 {
			t.Fatalf("out of order: %q after %q", it.Key(), last)
		}
		last = append(last[:0], it.Key()...)
		n++
	}
	if err := it.Close(); err != nil || n != 1200-2-1 || string(last) != "s/x/01199" {
		t.Fatalf("iterated %d to %q: %v", n, last, err)
	}
	if !it.SeekGE([]byte("s/x/00004")) || string(it.Value()) != "again" {
		t.Fatalf("seek: %q", it.Value())
	}
	// A range deletion, then a write inside the range in the same batch.
	snap, err := e.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	b = e.NewBatch()
	_ = b.DeleteRange([]byte("s/x/"), []byte("s/x0"))
	_ = b.Set([]byte("s/x/00007"), []byte("kept"))
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := count(t, s, `SELECT count(*) FROM cxop_engine_kv WHERE key >= 's/x/'::bytea AND key < 's/x0'::bytea`); got != 1 {
		t.Fatalf("%d keys left in the range", got)
	}
	// The snapshot still sees the keys as they were.
	if v, err := snap.Get([]byte("s/x/00010")); err != nil || string(v) != "v10" {
		t.Fatalf("snapshot: %q %v", v, err)
	}
	e.Unlock()
	if err := e.NewBatch().Commit(); !errors.Is(err, kv.ErrNotHeld) {
		t.Fatalf("commit without the lock: %v", err)
	}
}

// A replica whose lease expired and was taken over commits nothing; the
// lease comes back to another replica only after it expires.
func TestEngineLeaseFencesAReplicaThatLostIt(t *testing.T) {
	dsn := server.NewDatabase(t)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	mod := func(name string) func(*Options) {
		return func(o *Options) { o.Holder, o.EngineClock, o.EngineLeaseTTL = name, now, 10*time.Second }
	}
	a, b := open(t, dsn, mod("a")).EngineKV(), open(t, dsn, mod("b")).EngineKV()
	ctx := context.Background()
	if ok, err := a.Lock(ctx, false); err != nil || !ok {
		t.Fatalf("a: %v %v", ok, err)
	}
	if ok, err := b.Lock(ctx, false); err != nil || ok {
		t.Fatalf("b took a held lease: %v %v", ok, err)
	}
	// Tokens tell whether another replica wrote in between.
	if !a.OthersWrote() {
		t.Fatal("a's first hold: what it remembers cannot be trusted yet")
	}
	a.Unlock()
	if ok, _ := a.Lock(ctx, false); !ok || a.OthersWrote() {
		t.Fatalf("a again, nobody in between: held %v, others wrote %v", ok, a.OthersWrote())
	}
	a.Unlock()
	if ok, _ := b.Lock(ctx, false); !ok {
		t.Fatal("b: free lease not taken")
	}
	b.Unlock()
	if ok, _ := a.Lock(ctx, false); !ok || !a.OthersWrote() {
		t.Fatalf("a after b: held %v, others wrote %v", ok, a.OthersWrote())
	}
	batch := a.NewBatch()
	_ = batch.Set([]byte("s/k"), []byte("a1"))
	if err := batch.Commit(); err != nil { // renews to now+10s
		t.Fatal(err)
	}
	clock.Add(int64(9 * time.Second))
	if ok, _ := b.Lock(ctx, false); ok {
		t.Fatal("b took the lease before it expired")
	}
	clock.Add(int64(2 * time.Second))
	if ok, err := b.Lock(ctx, false); err != nil || !ok {
		t.Fatalf("b after expiry: %v %v", ok, err)
	}
	batch = a.NewBatch()
	_ = batch.Set([]byte("s/k"), []byte("a2"))
	if err := batch.Commit(); !errors.Is(err, kv.ErrNotHeld) {
		t.Fatalf("a committed after losing the lease: %v", err)
	}
	if v, _ := b.Get([]byte("s/k")); string(v) != "a1" {
		t.Fatalf("value %q", v)
	}
	// A waiting Lock gets it once the holder lets go.
	done := make(chan error, 1)
	go func() {
		ok, err := a.Lock(ctx, true)
		if err == nil && !ok {
			err = errors.New("not held")
		}
		done <- err
	}()
	b.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Every append writes each record's feed entry in its transaction.
func TestAppendWritesTheEngineFeed(t *testing.T) {
	s := open(t, server.NewDatabase(t))
	recs := []store.Record{event("chat", "e1", t0, 1, 5), answer("nps", "r1", t0, 2, 9)}
	if _, err := s.Submit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(context.Background(), recs[:1]); err != nil { // a duplicate writes nothing
		t.Fatal(err)
	}
	it, _ := s.EngineKV().NewIter([]byte(kv.FeedPrefix), []byte("s/feed0"))
	var got []string
	for it.First(); it.Valid(); it.Next() {
		kind, subject, contact, body, err := kv.DecodeFeed(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		seq := binary.BigEndian.Uint64(it.Key()[len(kv.FeedPrefix):])
		got = append(got, fmt.Sprintf("%d %c %s %q %s", seq, kind, subject, contact, body))
	}
	want := []string{`1 e chat "" ` + string(recs[0].JSON), `2 r nps "" ` + string(recs[1].JSON)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("feed\n got %q\nwant %q", got, want)
	}
	s2 := open(t, server.NewDatabase(t), func(o *Options) { o.NoEngineFeed = true })
	if _, err := s2.Submit(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s2, `SELECT count(*) FROM cxop_engine_kv`); n != 0 {
		t.Fatalf("%d feed entries with NoEngineFeed", n)
	}
}

// TestConfigRevisionOnlyRises: the revision the engine compares its config
// with is the greatest any replica recorded; an older replica recording
// its own (a late reload) does not lower it.
func TestConfigRevisionOnlyRises(t *testing.T) {
	dsn := server.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := context.Background()
	if rev, err := a.EngineKV().ConfigRevision(); err != nil || rev != 0 {
		t.Fatalf("fresh database: revision %d, %v; want 0", rev, err)
	}
	for _, step := range []struct {
		s    *Store
		rev  int64
		want int64
	}{{a, 5, 5}, {b, 7, 7}, {a, 6, 7}, {a, 0, 7}, {b, 8, 8}} {
		if err := step.s.RecordConfigRevision(ctx, step.rev); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Store{a, b} {
			if rev, err := s.EngineKV().ConfigRevision(); err != nil || rev != step.want {
				t.Fatalf("after recording %d: revision %d, %v; want %d", step.rev, rev, err, step.want)
			}
		}
	}
}

// TestFeedMarkCoversAppendsInFlight: an append holding a transaction id
// newer than every transaction that has ended (the common case for the
// newest append) keeps a mark taken after it unsettled until it ends. The
// snapshot's xmax is one past the newest ended transaction, not past the
// newest running one, so a mark taken from it would call this append ended.
func TestFeedMarkCoversAppendsInFlight(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t))
	e := s.EngineKV()
	w, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Rollback(ctx) }()
	if _, err := w.Exec(ctx, `INSERT INTO cxop_ids (kind, subject, id, fingerprint, event_time) VALUES ('e', 'chat', 'in-flight', 0, 1)`); err != nil {
		t.Fatal(err)
	}
	mark, ok, err := e.FeedMark()
	if err != nil || !ok {
		t.Fatalf("mark: %v %v", ok, err)
	}
	if settled, err := e.FeedSettled(mark); err != nil || settled {
		t.Fatalf("settled = %v (%v) while an append that began before the mark runs", settled, err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if settled, err := e.FeedSettled(mark); err != nil || !settled {
		t.Fatalf("settled = %v (%v) after the append ended", settled, err)
	}
}
