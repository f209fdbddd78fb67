package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestPruneExpiredInBatchesSurvivesACrash prunes 12,000 records past the
// retention and keeps 100 inside it, in batches of 5,000 that each commit
// on their own. A power loss after the first batch loses none of the 100,
// keeps exactly the second and third batches' expired records, and the
// next prune finishes the job and counts what it keeps.
func TestPruneExpiredInBatchesSurvivesACrash(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s := open(t, "", memOptions(mem))
	ctx := context.Background()
	cutoff := now.Add(-30 * 24 * time.Hour)
	for b := 0; b < 12; b++ {
		recs := make([]Record, 1000)
		for i := range recs {
			recs[i] = event(fmt.Sprintf("old-%d", b*1000+i), cutoff.Add(-time.Duration(b*1000+i+1)*time.Second), 1)
		}
		if _, err := s.Submit(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	recent := make([]Record, 100)
	for i := range recent {
		recent[i] = event(fmt.Sprintf("new-%d", i), now.Add(-time.Duration(i+1)*time.Hour), 1)
	}
	if _, err := s.Submit(ctx, recent); err != nil {
		t.Fatal(err)
	}

	var crashed *vfs.MemFS
	batches := 0
	errCrash := errors.New("power loss")
	pruneRecordsHook = func() error {
		batches++
		if batches == 2 {
			crashed = mem.CrashClone(vfs.CrashCloneCfg{})
			return errCrash
		}
		return nil
	}
	defer func() { pruneRecordsHook = nil }()
	if _, err := s.PruneExpired(cutoff, now.Add(-24*time.Hour)); !errors.Is(err, errCrash) {
		t.Fatalf("prune: %v, want the injected crash", err)
	}
	_ = s.Close()
	pruneRecordsHook = nil

	r := open(t, "", memOptions(crashed))
	defer r.Close()
	got := stored(t, r)
	if got["new"] != 100 || got["old"] != 7000 {
		t.Fatalf("after a crash after the first batch: %d recent records (want 100), %d expired (want 7000 left)", got["new"], got["old"])
	}
	res, err := r.PruneExpired(cutoff, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 7000 || res.Kept != 100 || res.Recent != 24 || !res.Oldest.Equal(now.Add(-100*time.Hour)) {
		t.Errorf("second prune: %+v; want 7000 deleted, 100 kept, 24 of the last day, oldest 100h ago", res)
	}
	if got := stored(t, r); got["old"] != 0 || got["new"] != 100 {
		t.Errorf("after the second prune: %v", got)
	}
	if ok, err := r.Has(recent[0].Kind, "chat", "old-1"); err != nil || ok {
		t.Errorf("idempotency key of a pruned record: %v, %v; want gone", ok, err)
	}
}

// TestObsoleteLogsAreDeletedNotRecycled: after flushes only the live
// write-ahead log is in the data directory. A recycled log would keep
// the bytes of records it held before (deleted ones included) on disk.
func TestObsoleteLogsAreDeletedNotRecycled(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	for i := range 5 {
		if _, err := s.Submit(ctx, batchOf(fmt.Sprintf("b%d", i), 100)); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs := 0
	entries, err := vfs.Default.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e, ".log") {
			logs++
		}
	}
	if logs != 1 {
		t.Errorf("%d write-ahead logs in the data directory after 5 flushes, want 1 (the live one): %v", logs, entries)
	}
}
