package store

import (
	"bytes"
	"context"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// memFilesWith names the files of the in-memory store directory that hold
// needle.
func memFilesWith(t *testing.T, fs vfs.FS, needle string) []string {
	t.Helper()
	names, err := fs.List(memDir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, name := range names {
		f, err := fs.Open(fs.PathJoin(memDir, name))
		if err != nil {
			continue // deleted meanwhile
		}
		data, err := io.ReadAll(f)
		_ = f.Close()
		if err == nil && bytes.Contains(data, []byte(needle)) {
			found = append(found, name)
		}
	}
	return found
}

// TestRefusedErasureCompactionIsRetried: the compaction that removes an
// erasure's bytes from disk is refused by a full disk; while its marker is
// set it is tried again after a backoff, and once the disk takes writes
// the erased bytes leave it, with no restart and no other erasure.
func TestRefusedErasureCompactionIsRetried(t *testing.T) {
	const canary = "canary-5e1d0b"
	mem := vfs.NewMem()
	full := &refuse{suffix: ".sst", errno: syscall.ENOSPC, kinds: map[errorfs.OpKind]bool{errorfs.OpCreate: true}}
	s := open(t, "", memOptions(errorfs.Wrap(mem, full)), func(o *Options) { o.Uncompressed = true })
	defer s.Close()
	// The store's pause before creating a file after a refused write grows
	// to 30s; Pebble's own compactions, refused too, would make the
	// erasure's compaction wait that long for its turn.
	s.fs.sleep = func(time.Duration) { time.Sleep(time.Millisecond) }
	retries := make(chan time.Duration, 16)
	retry := make(chan time.Time)
	s.compactRetryAfter = func(d time.Duration) <-chan time.Time {
		retries <- d
		return retry
	}
	// The disk fills between the erasure's flush and its compaction: the
	// tombstones are in a table, the compaction cannot write its output.
	var armed atomic.Bool
	s.beforeErasureCompaction = func() {
		if !armed.Swap(true) {
			full.set(true)
		}
	}
	ctx := context.Background()
	if _, err := s.Submit(ctx, []Record{customerEvent("e1", canary, 0), customerEvent("e2", "bob", 0)}); err != nil {
		t.Fatal(err)
	}
	// Everything in one table at the bottom: no compaction of Pebble's own
	// is due, so the erasure's compaction is the one the disk refuses.
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatal(err)
	}
	if len(memFilesWith(t, mem, canary)) == 0 {
		t.Fatal("control: the canary is nowhere on disk before the erasure")
	}
	if n, err := s.EraseCustomer(ctx, canary); err != nil || n.Total() != 1 {
		t.Fatalf("erased %v %v", n, err)
	}
	select {
	case d := <-retries:
		if d != minCompactRetry {
			t.Errorf("first retry in %s, want %s", d, minCompactRetry)
		}
	case <-s.CompactionsIdle():
		t.Fatalf("the compaction stopped without a retry (refused %d times); pending: %v", full.count(), compactionPending(s))
	}
	if full.count() == 0 {
		t.Fatal("the compaction wrote no table: the test refused nothing")
	}
	if files := memFilesWith(t, mem, canary); len(files) == 0 {
		t.Fatal("the canary left the disk although its compaction was refused: the test shows nothing")
	}
	if !compactionPending(s) {
		t.Error("the refused compaction is not marked pending")
	}
	if err := s.Failed(); err != nil {
		t.Fatalf("Failed() = %v after a refused compaction; want the store still writing", err)
	}

	full.set(false)
	retry <- time.Time{}
	<-s.CompactionsIdle()
	if files := memFilesWith(t, mem, canary); len(files) != 0 {
		t.Errorf("after the retried compaction the canary is still in %v", files)
	}
	if compactionPending(s) {
		t.Error("the compaction is still marked pending after it succeeded")
	}
	if got := listCustomer(t, s, "bob"); len(got) != 1 {
		t.Errorf("bob's records: %q", got)
	}
	select {
	case d := <-retries:
		t.Errorf("another retry armed (in %s) after the compaction succeeded", d)
	default:
	}
}

func compactionPending(s *Store) bool {
	_, closer, err := s.db.Get(keyCompactionPending)
	if err == nil {
		_ = closer.Close()
	}
	return err == nil
}

// The backoff between attempts doubles up to its ceiling.
func TestCompactRetryBackoff(t *testing.T) {
	var got []time.Duration
	d := time.Duration(0)
	for range 12 {
		d = nextCompactRetry(d)
		got = append(got, d)
	}
	if got[0] != minCompactRetry || got[1] != 2*minCompactRetry || got[len(got)-1] != maxCompactRetry {
		t.Errorf("backoffs %v: want from %s doubling to %s", got, minCompactRetry, maxCompactRetry)
	}
}
