package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
)

// customerEvent is an event of customer; hash overrides the customer hash
// the record carries, to fake a collision.
func customerEvent(id, customer string, hash uint64) Record {
	if hash == 0 {
		hash = xxhash.Sum64String(customer)
	}
	return Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id,
		JSON:  []byte(fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":%q,"contact":{"email":"%s@example.com"}}`, id, customer, customer)),
		Event: rollup.Event{Time: now.Add(-time.Hour).UnixNano(), CustomerHash: hash}}
}

func customerAnswer(id, customer, comment string) Record {
	return Record{Kind: rollup.KindSurvey, Subject: "nps", ID: id,
		JSON:     []byte(fmt.Sprintf(`{"id":%q,"survey":"nps","customer":%q,"score":3,"comment":%q}`, id, customer, comment)),
		Response: rollup.Response{Time: now.Add(-time.Hour).UnixNano(), CustomerHash: xxhash.Sum64String(customer), Score: 3}}
}

func listCustomer(t *testing.T, s *Store, customer string) []string {
	t.Helper()
	var out []string
	if err := s.ListCustomer(context.Background(), customer, func(kind string, item json.RawMessage) error {
		out = append(out, kind+" "+string(item))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEraseCustomerDeletesTheirRecordsOnly: the customer's events and
// answers go with their ids; another customer whose records carry the
// same 64-bit hash stays; a second erasure erases nothing; the counts stay.
func TestEraseCustomerDeletesTheirRecordsOnly(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	alice := xxhash.Sum64String("alice")
	if _, err := s.Submit(ctx, []Record{
		customerEvent("e1", "alice", 0), customerEvent("e2", "bob", 0), customerEvent("e3", "alice", 0),
		customerEvent("e4", "mallory", alice), // same hash as alice, another customer
		customerAnswer("r1", "alice", "slow and rude"), customerAnswer("r2", "bob", "fine"),
	}); err != nil {
		t.Fatal(err)
	}
	if got := listCustomer(t, s, "alice"); len(got) != 3 || !strings.HasPrefix(got[2], "responses ") || !strings.Contains(got[2], "slow and rude") {
		t.Fatalf("alice's records before erasure: %q", got)
	}
	n, err := s.EraseCustomer(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if n[customerdata.Events] != 2 || n[customerdata.Responses] != 1 || n.Total() != 3 {
		t.Errorf("erased %v, want 2 events and 1 response", n)
	}
	if got := listCustomer(t, s, "alice"); len(got) != 0 {
		t.Errorf("alice's records after erasure: %q", got)
	}
	if has, err := s.Has(rollup.KindTouchpoint, "chat", "e4"); err != nil || !has {
		t.Errorf("mallory's record, which carries alice's hash, is gone (%v, %v)", has, err)
	}
	if got := listCustomer(t, s, "bob"); len(got) != 2 {
		t.Errorf("bob's records: %q", got)
	}
	for _, id := range []string{"e1", "e3"} {
		if has, err := s.Has(rollup.KindTouchpoint, "chat", id); err != nil || has {
			t.Errorf("id %s still stored (%v, %v)", id, has, err)
		}
	}
	// The rollups keep the counts.
	if n, _, sc := counts(t, s); n != 4 || sc[3] != 2 {
		t.Errorf("after erasure: %d interactions and %d answers of 3, want 4 and 2", n, sc[3])
	}
	again, err := s.EraseCustomer(ctx, "alice")
	if err != nil || again.Total() != 0 {
		t.Errorf("second erasure: %v %v, want nothing erased", again, err)
	}
	<-s.CompactionsIdle()

	// The audit log's hash is keyed per store and stable across restarts.
	h1, err := s.CustomerHash("alice")
	if err != nil {
		t.Fatal(err)
	}
	if h1 == fmt.Sprintf("%x", alice) || len(h1) != 64 {
		t.Errorf("hash %s", h1)
	}
	if err := s.AppendErasure(customerdata.Erasure{Time: now, CustomerHash: h1, Erased: n}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	h2, _ := s.CustomerHash("alice")
	other := open(t, t.TempDir())
	defer other.Close()
	h3, _ := other.CustomerHash("alice")
	if h1 != h2 || h1 == h3 {
		t.Errorf("hash of alice: %s, after restart %s (want equal), in another store %s (want different)", h1, h2, h3)
	}
	var log []customerdata.Erasure
	if err := s.Erasures(time.Time{}, func(e customerdata.Erasure) error { log = append(log, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(log) != 1 || log[0].CustomerHash != h1 || log[0].Erased[customerdata.Events] != 2 || !log[0].Time.Equal(now) {
		t.Errorf("audit log %+v", log)
	}
	if err := s.PruneErasures(now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	log = nil
	_ = s.Erasures(time.Time{}, func(e customerdata.Erasure) error { log = append(log, e); return nil })
	if len(log) != 0 {
		t.Errorf("audit log after pruning: %+v", log)
	}
}

// TestWriteAheadLogsAreNotRecycled: an obsolete log is deleted, not kept
// for reuse with its old records in it.
func TestWriteAheadLogsAreNotRecycled(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for i := range 5 {
		if _, err := s.Submit(context.Background(), []Record{customerEvent(fmt.Sprintf("e%d", i), "alice", 0)}); err != nil {
			t.Fatal(err)
		}
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if m := s.db.Metrics(); m.WAL.ObsoleteFiles != 0 || m.WAL.Files != 1 {
		t.Errorf("%d obsolete write-ahead logs kept for recycling and %d live, want 0 and 1", m.WAL.ObsoleteFiles, m.WAL.Files)
	}
}

// TestEraseDuringIngestOfTheSameCustomer: records of the customer keep
// arriving while it is erased. Every record acknowledged before the
// erasure started is gone, the erasure's count is exactly what it deleted,
// and what remains is what was acknowledged after it started.
func TestEraseDuringIngestOfTheSameCustomer(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	const before = 5000
	batch := make([]Record, 0, 500)
	for i := range before {
		batch = append(batch, customerEvent(fmt.Sprintf("b%d", i), "alice", 0))
		if len(batch) == cap(batch) {
			if _, err := s.Submit(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	started := make(chan struct{})
	done := make(chan int)
	go func() {
		// Ingest goes on during the erasure, one record per request.
		<-started
		n := 0
		for i := 0; ; i++ {
			select {
			case <-done:
				done <- n
				return
			default:
			}
			if _, err := s.Submit(ctx, []Record{customerEvent(fmt.Sprintf("d%d", i), "alice", 0)}); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	close(started)
	erased, err := s.EraseCustomer(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	done <- 0
	during := <-done
	remaining := len(listCustomer(t, s, "alice"))
	for i := range before {
		if has, _ := s.Has(rollup.KindTouchpoint, "chat", fmt.Sprintf("b%d", i)); has {
			t.Fatalf("record b%d, acknowledged before the erasure, is still stored", i)
		}
	}
	if erased[customerdata.Events]+remaining != before+during || erased[customerdata.Events] < before {
		t.Errorf("erased %d, %d remain, of %d stored before and %d during the erasure", erased[customerdata.Events], remaining, before, during)
	}
	t.Logf("%d records acknowledged during the erasure, %d of them erased", during, erased[customerdata.Events]-before)
}

// TestACompactionCutShortIsResumedOnStart: the store closes before the
// compaction after an erasure is done; the marker it left makes the next
// start compact the erased ranges, and the marker goes once that is done.
func TestACompactionCutShortIsResumedOnStart(t *testing.T) {
	dir := t.TempDir()
	logs := &strings.Builder{}
	var mu sync.Mutex
	logTo := func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), nil))
	}
	pending := func(s *Store) bool {
		_, closer, err := s.db.Get(keyCompactionPending)
		if err == nil {
			_ = closer.Close()
		}
		return err == nil
	}
	s := open(t, dir, logTo)
	ctx := context.Background()
	if _, err := s.Submit(ctx, []Record{customerEvent("e1", "alice", 0), customerEvent("e2", "bob", 0)}); err != nil {
		t.Fatal(err)
	}
	// The compaction is cancelled before it starts, as Close does.
	s.compactCtx, s.compactCancel = context.WithCancel(context.Background())
	s.compactCancel()
	if n, err := s.EraseCustomer(ctx, "alice"); err != nil || n.Total() != 1 {
		t.Fatalf("erased %v %v", n, err)
	}
	<-s.CompactionsIdle()
	if !pending(s) {
		t.Fatal("a compaction cut short is not marked pending")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, logTo)
	defer s.Close()
	<-s.CompactionsIdle()
	if pending(s) {
		t.Error("the compaction is still marked pending after the start compacted")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"stay on disk until the next start", "compacting the erased ranges", "compacted after an erasure"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs.String())
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
