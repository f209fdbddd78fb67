package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func event(id string, at time.Time, wait float64) Record {
	return Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id,
		JSON:  []byte(fmt.Sprintf(`{"id":%q,"touchpoint":"chat"}`, id)),
		Event: rollup.Event{Time: at.UnixNano(), CustomerHash: uint64(len(id)) * 0x9e3779b97f4a7c15, HasWait: true, WaitSeconds: wait, Assessed: true, Compliant: wait <= 120}}
}

func answer(id string, at time.Time, score int) Record {
	return Record{Kind: rollup.KindSurvey, Subject: "nps", ID: id, JSON: []byte(fmt.Sprintf(`{"id":%q}`, id)),
		Response: rollup.Response{Time: at.UnixNano(), CustomerHash: 7, Score: score}}
}

func open(t *testing.T, dir string, mod ...func(*Options)) *Store {
	t.Helper()
	o := Options{Dir: dir, Now: func() time.Time { return now }}
	for _, m := range mod {
		m(&o)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func counts(t *testing.T, s *Store) (uint64, uint64, [11]uint64) {
	t.Helper()
	a, _, err := s.Rollups().TouchpointWindow([]string{"chat"}, 28*24*time.Hour, now, now)
	if err != nil {
		t.Fatal(err)
	}
	sv, _, err := s.Rollups().SurveyWindow("nps", 28*24*time.Hour, now, now)
	if err != nil {
		t.Fatal(err)
	}
	return a.Interactions, a.Compliant, sv.Counts
}

func TestSubmitCountsOnceAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	res, err := s.Submit(ctx, []Record{event("a", now.Add(-time.Hour), 30), event("b", now.Add(-time.Hour), 300), event("a", now.Add(-time.Hour), 30), answer("r1", now.Add(-time.Minute), 9)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 3 || res.Duplicates != 1 || !res.Duplicate[2] || res.Duplicate[0] {
		t.Errorf("first submit: %+v, want 3 accepted and 1 duplicate (a twice in one request)", res)
	}
	res, err = s.Submit(ctx, []Record{event("b", now.Add(-time.Hour), 300), event("c", now.Add(-2*time.Hour), 10)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 1 || res.Duplicates != 1 || !res.Duplicate[0] {
		t.Errorf("retry: %+v, want c accepted and b a duplicate", res)
	}
	n, ok, sc := counts(t, s)
	if n != 3 || ok != 2 || sc[9] != 1 {
		t.Fatalf("before restart: %d interactions, %d compliant, %v", n, ok, sc)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	if n2, ok2, sc2 := counts(t, s); n2 != n || ok2 != ok || sc2 != sc {
		t.Errorf("after restart: %d, %d, %v; want %d, %d, %v", n2, ok2, sc2, n, ok, sc)
	}
	if res, _ := s.Submit(ctx, []Record{event("a", now, 1)}); res.Duplicates != 1 {
		t.Errorf("after restart, id a again: %+v, want a duplicate", res)
	}
}

// TestReplayAfterCrash copies the live database (as a crash would leave
// it: records synced, rollups only as of the last checkpoint) and expects
// the copy to count the same as the original.
func TestReplayAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(o *Options) { o.CheckpointInterval = time.Hour })
	defer s.Close()
	for i := range 50 {
		if _, err := s.Submit(context.Background(), []Record{event(fmt.Sprint("e", i), now.Add(-time.Duration(i+1)*time.Hour), float64(i*10))}); err != nil {
			t.Fatal(err)
		}
	}
	crashed := filepath.Join(t.TempDir(), "copy")
	if err := s.Copy(crashed); err != nil {
		t.Fatal(err)
	}
	c := open(t, crashed)
	defer c.Close()
	n1, ok1, _ := counts(t, s)
	n2, ok2, _ := counts(t, c)
	if n1 != 50 || n2 != n1 || ok2 != ok1 {
		t.Errorf("replayed copy counts %d/%d, original %d/%d (want 50 interactions)", n2, ok2, n1, ok1)
	}
}

func TestRebuildRecountsRawRecords(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for i := range 20 {
		if _, err := s.Submit(context.Background(), []Record{answer(fmt.Sprint("r", i), now.Add(-time.Duration(i)*time.Minute), i%11)}); err != nil {
			t.Fatal(err)
		}
	}
	_, _, want := counts(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, func(o *Options) { o.Rebuild = true })
	defer s.Close()
	if _, _, got := counts(t, s); got != want {
		t.Errorf("rebuilt %v, want %v", got, want)
	}
}

func TestOverloadAnswersErrOverloaded(t *testing.T) {
	s := open(t, t.TempDir(), func(o *Options) { o.QueueLength = 1; o.MaxGroupRecords = 1 })
	defer s.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, overloaded := 0, 0
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				recs := make([]Record, 50)
				for j := range recs {
					recs[j] = event(fmt.Sprintf("w%d-%d-%d", w, i, j), now.Add(-time.Minute), 1)
				}
				res, err := s.Submit(context.Background(), recs)
				mu.Lock()
				switch {
				case errors.Is(err, ErrOverloaded):
					overloaded++
				case err != nil:
					t.Error(err)
				default:
					accepted += res.Accepted
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if overloaded == 0 {
		t.Errorf("no request was refused with a queue of one")
	}
	if n, _, _ := counts(t, s); n != uint64(accepted) {
		t.Errorf("counted %d interactions, acknowledged %d", n, accepted)
	}
}

func TestExportAndPrune(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	old := event("old", now.Add(-500*24*time.Hour), 1)
	if _, err := s.Submit(context.Background(), []Record{old, event("new", now, 1), answer("x", now, 3)}); err != nil {
		t.Fatal(err)
	}
	var got []string
	export := func() {
		got = nil
		if err := s.Export(rollup.KindTouchpoint, "chat", func(b []byte) error { got = append(got, string(b)); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	export()
	if len(got) != 2 || got[0] != `{"id":"old","touchpoint":"chat"}` {
		t.Fatalf("export: %q", got)
	}
	n, err := s.PruneRecords(now.Add(-400 * 24 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want 1 record deleted", n, err)
	}
	export()
	if len(got) != 1 || got[0] != `{"id":"new","touchpoint":"chat"}` {
		t.Errorf("export after prune: %q", got)
	}
}

func TestRecordCodecRoundTrip(t *testing.T) {
	for _, r := range []Record{event("e-1", now, 12.5), answer("r-1", now, 10)} {
		got, err := decodeRecord(appendRecord(nil, &r))
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != r.ID || got.Subject != r.Subject || string(got.JSON) != string(r.JSON) || got.Event != r.Event || got.Response != r.Response {
			t.Errorf("round trip: %+v, want %+v", got, r)
		}
	}
	if _, err := decodeRecord([]byte{recordV1, 'e'}); err == nil {
		t.Error("decoded a truncated record")
	}
}

// Pebble carves the live memtables out of the block cache; the store sizes
// the cache so that cacheBytes remain for blocks when both memtables are
// full, or every idempotency lookup would read its bloom filter from disk
// (at 64 MiB memtables and a 128 MiB cache, the cache held nothing).
func TestPebbleOptionsLeaveTheBlockCacheItsBytes(t *testing.T) {
	const cacheBytes = 128 << 20
	po := PebbleOptions(cacheBytes)
	defer po.Cache.Unref()
	reserved := int64(po.MemTableStopWritesThreshold) * int64(po.MemTableSize)
	if left := po.Cache.MaxSize() - reserved; left != cacheBytes {
		t.Fatalf("cache %d bytes less %d of memtables leaves %d for blocks; want %d", po.Cache.MaxSize(), reserved, left, cacheBytes)
	}
}
