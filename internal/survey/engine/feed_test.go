package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// lateAppend is an append whose transaction draws a record sequence, writes
// the feed entry and commits only when the test says: sequences are handed
// out before commit, so its entry appears below entries committed after
// it drew.
type lateAppend struct {
	t   *testing.T
	tx  pgx.Tx
	seq uint64
}

// beginLate starts one; xidFirst makes it take its transaction id before
// it draws the sequence, as the store's append does (its key claims write
// first).
func beginLate(t *testing.T, f *fixture, xidFirst bool) *lateAppend {
	conn, err := pgx.Connect(context.Background(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if xidFirst {
		if _, err := tx.Exec(context.Background(), `SELECT pg_current_xact_id()`); err != nil {
			t.Fatal(err)
		}
	}
	var seq int64
	if err := tx.QueryRow(context.Background(), `SELECT nextval('cxop_record_seq')`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return &lateAppend{t: t, tx: tx, seq: uint64(seq)}
}

// commit writes the feed entry of an interaction of customer and commits.
func (l *lateAppend) commit(f *fixture, customer string) {
	js := fmt.Sprintf(`{"id":"late-%d","touchpoint":"chat","customer":%q,"time":%q}`, l.seq, customer, f.now.Format(time.RFC3339Nano))
	key := binary.BigEndian.AppendUint64([]byte(kv.FeedPrefix), l.seq)
	if _, err := l.tx.Exec(context.Background(), `INSERT INTO cxop_engine_kv (key, value) VALUES ($1, $2)`,
		key, kv.EncodeFeed(byte(rollup.KindTouchpoint), "chat", nil, []byte(js))); err != nil {
		l.t.Fatal(err)
	}
	if err := l.tx.Commit(context.Background()); err != nil {
		l.t.Fatal(err)
	}
}

// TestFeedEntriesCommittedOutOfOrder: the engine reads the feed from a
// floor above the entries it consumed, and still consumes an entry that
// commits below entries it already read: every customer is invited once,
// and the floor has moved up (the reads no longer start at the feed's first
// key). A writer that draws its sequence before its transaction id (not
// the store's append) is caught by the rescan from the first key within
// feedRescanEvery.
func TestFeedEntriesCommittedOutOfOrder(t *testing.T) {
	rcv := newReceiver(t)
	f := newFixtureOn(t, onPostgres, Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()}}})
	invited := func() []string {
		var out []string
		for _, r := range rcv.got() {
			out = append(out, r.body.Customer)
		}
		slices.Sort(out)
		return out
	}
	expect := func(want ...string) {
		t.Helper()
		slices.Sort(want)
		if got := invited(); !slices.Equal(got, want) {
			t.Fatalf("invited %v, want %v", got, want)
		}
	}

	late := beginLate(t, f, true)
	f.interact("chat", "early")
	f.step()
	expect("early")
	f.interact("chat", "middle")
	f.step()
	f.step()
	expect("early", "middle")
	late.commit(f, "late")
	f.step()
	expect("early", "late", "middle")
	f.interact("chat", "after")
	f.step()
	f.step()
	expect("after", "early", "late", "middle")
	if f.e.feed.low == nil {
		t.Fatal("the feed is still read from its first key")
	}

	// A writer without a transaction id when it drew its sequence.
	odd := beginLate(t, f, false)
	f.interact("chat", "before-odd")
	f.step()
	f.step()
	odd.commit(f, "odd")
	f.step()
	f.step()
	f.now = f.now.Add(feedRescanEvery)
	f.step()
	expect("after", "before-odd", "early", "late", "middle", "odd")
	if n, err := f.e.countKeys(kv.FeedPrefix); err != nil || n != 0 {
		t.Errorf("%d feed entries left, %v", n, err)
	}
}
