package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/cxop-dev/cxop/internal/rollup"
)

const memDir = "/data"

// refuse is an injector that fails the operations of the kinds given on
// files whose name ends in suffix ("" for every file) with errno, while
// it is on.
type refuse struct {
	on     sync.Mutex
	active bool
	suffix string
	errno  syscall.Errno
	kinds  map[errorfs.OpKind]bool
	hits   int
}

func (r *refuse) String() string { return "refuse " + r.errno.Error() }

func (r *refuse) MaybeError(op errorfs.Op) error {
	r.on.Lock()
	defer r.on.Unlock()
	if !r.active || !r.kinds[op.Kind] || !strings.HasSuffix(op.Path, r.suffix) {
		return nil
	}
	r.hits++
	return fmt.Errorf("%s: %w", op.Path, r.errno)
}

func (r *refuse) set(active bool) {
	r.on.Lock()
	r.active = active
	r.on.Unlock()
}

func (r *refuse) count() int {
	r.on.Lock()
	defer r.on.Unlock()
	return r.hits
}

// syncs are the operations that make data durable; writes every operation
// that puts bytes or names on the disk.
var (
	syncs  = map[errorfs.OpKind]bool{errorfs.OpFileSync: true, errorfs.OpFileSyncData: true, errorfs.OpFileSyncTo: true}
	writes = map[errorfs.OpKind]bool{errorfs.OpCreate: true, errorfs.OpLink: true, errorfs.OpRename: true, errorfs.OpReuseForWrite: true,
		errorfs.OpMkdirAll: true, errorfs.OpFileWrite: true, errorfs.OpFileWriteAt: true, errorfs.OpFilePreallocate: true,
		errorfs.OpFileSync: true, errorfs.OpFileSyncData: true, errorfs.OpFileSyncTo: true, errorfs.OpFileFlush: true}
)

func memOptions(fs vfs.FS) func(*Options) {
	return func(o *Options) {
		o.Dir, o.FS = memDir, fs
		o.MemTableBytes, o.CacheBytes = 256<<10, 1<<20
		o.CheckpointInterval = time.Hour
	}
}

func batchOf(prefix string, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = event(fmt.Sprintf("%s-%d", prefix, i), now.Add(-time.Duration(i+1)*time.Minute), float64(i))
	}
	return recs
}

// stored returns how many records of each id prefix ("a" of "a-3") are
// stored.
func stored(t *testing.T, s *Store) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := s.Export(rollup.KindTouchpoint, "chat", func(js []byte) error {
		id := strings.SplitN(strings.TrimPrefix(string(js), `{"id":"`), `"`, 2)[0]
		out[strings.SplitN(id, "-", 2)[0]]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSyncFailureStopsIngestAndLosesNothingAcknowledged fails the
// write-ahead log's fsync (EIO) under a batch: the batch is answered with
// the error, the store refuses everything after it, and after a power
// loss every acknowledged record is there once and the failed batch is
// there whole or not at all.
func TestSyncFailureStopsIngestAndLosesNothingAcknowledged(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
		t.Run(errno.Error(), func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			inj := &refuse{suffix: ".log", errno: errno, kinds: syncs}
			if errno == syscall.ENOSPC {
				inj.kinds = map[errorfs.OpKind]bool{errorfs.OpFileWrite: true, errorfs.OpFileWriteAt: true}
			}
			s := open(t, "", memOptions(errorfs.Wrap(mem, inj)))
			ctx := context.Background()
			if _, err := s.Submit(ctx, batchOf("a", 50)); err != nil {
				t.Fatal(err)
			}
			inj.set(true)
			_, err := s.Submit(ctx, batchOf("b", 50))
			if err == nil {
				t.Fatal("a batch whose fsync failed was acknowledged")
			}
			if !errors.Is(err, errno) || !IsDiskFault(err) {
				t.Errorf("error %v does not carry %v", err, errno)
			}
			if s.Failed() == nil || s.ReadOnly() != nil {
				t.Errorf("after the failed commit: Failed() = %v, ReadOnly() = %v; want a failure and not a read-only opening", s.Failed(), s.ReadOnly())
			}
			inj.set(false)
			// The disk works again, but the log's state is unknown: the
			// store refuses until it is reopened.
			if _, err := s.Submit(ctx, batchOf("c", 5)); err == nil || !errors.Is(err, errno) {
				t.Errorf("submit after the failure: %v, want the first failure again", err)
			}
			if _, err := s.PruneRecords(now); err == nil {
				t.Error("prune wrote to a failed store")
			}
			// Reads still work.
			if got := stored(t, s)["a"]; got != 50 {
				t.Errorf("export from the failed store: %d records of batch a, want 50", got)
			}
			crashed := mem.CrashClone(vfs.CrashCloneCfg{})
			_ = s.Close()

			r := open(t, "", memOptions(crashed))
			defer r.Close()
			got := stored(t, r)
			if got["a"] != 50 {
				t.Errorf("after a power loss: %d of the 50 acknowledged records", got["a"])
			}
			if got["b"] != 0 && got["b"] != 50 {
				t.Errorf("after a power loss: %d of the 50 records of the failed batch; want all or none", got["b"])
			}
			if got["c"] != 0 {
				t.Errorf("%d records submitted after the failure were stored", got["c"])
			}
			if n, _, _ := counts(t, r); n != uint64(got["a"]+got["b"]) {
				t.Errorf("counted %d interactions, stored %d", n, got["a"]+got["b"])
			}
			if res, err := r.Submit(ctx, batchOf("d", 10)); err != nil || res.Accepted != 10 {
				t.Errorf("reopened store: %+v, %v; want 10 accepted", res, err)
			}
		})
	}
}

// TestFullVolumeOpensReadOnly opens a store whose volume reports less than
// MinFreeBytes free, and one whose every write fails (a volume that does
// not report its usage): both serve their records read-only, refuse new
// ones with ErrReadOnly, and write nothing.
func TestFullVolumeOpensReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name       string
		reportFull bool
		wantReason string
	}{
		{"statfs reports a full volume", true, "bytes free of"},
		{"every write fails", false, "a write failed while opening the store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			s := open(t, "", memOptions(mem))
			if _, err := s.Submit(context.Background(), append(batchOf("a", 30), answer("r1", now.Add(-time.Minute), 9))); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			full := &refuse{errno: syscall.ENOSPC, kinds: writes}
			full.set(true)
			if tc.reportFull {
				mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 4 << 10, TotalBytes: 1 << 30, UsedBytes: 1<<30 - 4<<10})
			}
			var logs bytes.Buffer
			r := open(t, "", memOptions(errorfs.Wrap(mem, full)), func(o *Options) {
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			defer r.Close()
			if err := r.ReadOnly(); err == nil || !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), tc.wantReason) {
				t.Fatalf("ReadOnly() = %v, want ErrReadOnly saying %q", err, tc.wantReason)
			}
			if r.Failed() != nil {
				t.Errorf("Failed() = %v on a store opened read-only", r.Failed())
			}
			if tc.reportFull && full.count() != 0 {
				t.Errorf("the read-only store tried %d writes", full.count())
			}
			if n, _, sc := counts(t, r); n != 30 || sc[9] != 1 {
				t.Errorf("read-only counts: %d interactions, %v; want 30 and one 9", n, sc)
			}
			if got := stored(t, r)["a"]; got != 30 {
				t.Errorf("read-only export: %d records, want 30", got)
			}
			if ok, err := r.Has(rollup.KindSurvey, "nps", "r1"); !ok || err != nil {
				t.Errorf("Has(r1) = %v, %v on the read-only store", ok, err)
			}
			if _, err := r.Submit(context.Background(), batchOf("b", 1)); !errors.Is(err, ErrReadOnly) {
				t.Errorf("submit to the read-only store: %v, want ErrReadOnly", err)
			}
			if _, err := r.PruneRecords(now); !errors.Is(err, ErrReadOnly) {
				t.Errorf("prune on the read-only store: %v, want ErrReadOnly", err)
			}
			if c := strings.Count(logs.String(), "opening the store read-only"); c != 1 {
				t.Errorf("the store said %d times why it is read-only, want once:\n%s", c, logs.String())
			}
			before := full.count()
			// Let the checkpoint ticker and Pebble's background work run:
			// a read-only store writes nothing and retries nothing.
			time.Sleep(50 * time.Millisecond)
			if d := full.count() - before; d != 0 {
				t.Errorf("the read-only store tried %d writes while idle", d)
			}
		})
	}
}

// TestCorruptRecordAtOpenIsAnError stores a record value that does not
// decode where the replay reads it: Open fails and names the key, the
// sequence and the range it was replaying; it never skips the record.
func TestCorruptRecordAtOpenIsAnError(t *testing.T) {
	mem := vfs.NewMem()
	s := open(t, "", memOptions(mem))
	if _, err := s.Submit(context.Background(), batchOf("a", 20)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(memDir, &pebble.Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	// Sequence 7 loses its subject length; the checkpoint goes back to
	// 0 so that the replay reads it.
	if err := db.Set(recordKey(7), []byte{recordV1, byte(rollup.KindTouchpoint), 0, 1, 2, 3}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyCheckpoint, make([]byte, 8), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: memDir, FS: mem, Now: func() time.Time { return now }})
	if err == nil {
		t.Fatal("a store with a corrupt record opened")
	}
	for _, want := range []string{"stored record at key 720000000000000007 (sequence 7)", "corrupt record", "sequence 1 on, keys 720000000000000001 up to 73", "does not open"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestCorruptTableAtOpenIsAnError flips bytes inside a table file: the
// block checksum catches it and Open fails naming the range it read.
func TestCorruptTableAtOpenIsAnError(t *testing.T) {
	mem := vfs.NewMem()
	s := open(t, "", memOptions(mem))
	for i := range 10 {
		if _, err := s.Submit(context.Background(), batchOf(fmt.Sprint("b", i), 200)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(memDir, &pebble.Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyCheckpoint, make([]byte, 8), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := mem.List(memDir)
	if err != nil {
		t.Fatal(err)
	}
	flipped := 0
	for _, n := range names {
		if !strings.HasSuffix(n, ".sst") {
			continue
		}
		p := mem.PathJoin(memDir, n)
		f, err := mem.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		// The first data block starts the file; its records are at the
		// front.
		buf := make([]byte, 64)
		if _, err := f.ReadAt(buf, 100); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] ^= 0xff
		}
		if _, err := f.WriteAt(buf, 100); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		flipped++
	}
	if flipped == 0 {
		t.Fatal("no table file to corrupt")
	}
	_, err = Open(Options{Dir: memDir, FS: mem, Now: func() time.Time { return now }})
	if err == nil {
		t.Fatal("a store with a corrupt table opened")
	}
	// The replay of the records or the load of the rollups meets the
	// damaged block first, whichever reads it; either names its range,
	// and the engine names the file and its key bounds.
	msg := err.Error()
	if !strings.Contains(msg, "(keys ") || !strings.Contains(msg, "checksum mismatch") || !strings.Contains(msg, "on-disk corruption in /data/") {
		t.Errorf("error %q does not name the key range, the file and the corruption", msg)
	}
}

// TestFaultFSBacksOff checks that after a failed write the next file
// creation waits, doubling up to the cap, and a successful sync ends it:
// Pebble's flush, retried at once after ENOSPC, cannot spin.
func TestFaultFSBacksOff(t *testing.T) {
	full := &refuse{errno: syscall.ENOSPC, kinds: map[errorfs.OpKind]bool{errorfs.OpCreate: true}}
	full.set(true)
	m := NewFaultMetrics(nil)
	fs := newFaultFS(errorfs.Wrap(vfs.NewMem(), full), m)
	var waits []time.Duration
	fs.sleep = func(d time.Duration) { waits = append(waits, d) }
	for range 12 {
		if _, err := fs.Create("/x.sst", vfs.WriteCategoryUnspecified); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("create: %v", err)
		}
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond,
		25600 * time.Millisecond, 30 * time.Second, 30 * time.Second}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("waits before each create: %v, want %v", waits, want)
	}
	full.set(false)
	f, err := fs.Create("/y", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	waits = nil
	if _, err := fs.Create("/z", vfs.WriteCategoryUnspecified); err != nil || len(waits) != 0 {
		t.Errorf("after a successful sync: create %v, waited %v; want no wait", err, waits)
	}
	if fs.faulted() == nil || !IsDiskFault(fs.faulted()) {
		t.Errorf("faulted() = %v, want the first ENOSPC", fs.faulted())
	}
}

// TestBackgroundErrorsAreLoggedWithABackoff feeds 8,000 errors in one
// second to the throttled log: one line, then one more after the backoff
// that says how many it left out.
func TestBackgroundErrorsAreLoggedWithABackoff(t *testing.T) {
	var logs bytes.Buffer
	clock := now
	l := &throttledLog{log: slog.New(slog.NewTextHandler(&logs, nil)), now: func() time.Time { return clock }}
	for i := range 8000 {
		clock = now.Add(time.Duration(i) * time.Second / 8000)
		l.error("flush failed", syscall.ENOSPC)
	}
	if n := strings.Count(logs.String(), "flush failed"); n != 1 {
		t.Fatalf("%d lines for 8,000 errors in the first second, want 1:\n%s", n, logs.String())
	}
	clock = now.Add(1500 * time.Millisecond)
	l.error("flush failed", syscall.ENOSPC)
	if !strings.Contains(logs.String(), "suppressed_since_last=7999") || !strings.Contains(logs.String(), "next_log_in=2s") {
		t.Errorf("second line does not count the 7,999 left out or double the backoff:\n%s", logs.String())
	}
}

// TestFlushFailureStopsIngest refuses the creation of table files
// (ENOSPC) while the log still writes: the first failed flush stops ingest
// with an error instead of letting writes stall behind memtables that
// cannot drain, and Pebble's retries wait with a backoff.
func TestFlushFailureStopsIngest(t *testing.T) {
	mem := vfs.NewMem()
	full := &refuse{suffix: ".sst", errno: syscall.ENOSPC, kinds: map[errorfs.OpKind]bool{errorfs.OpCreate: true}}
	metrics := NewFaultMetrics(nil)
	s := open(t, "", memOptions(errorfs.Wrap(mem, full)), func(o *Options) { o.FaultMetrics = metrics })
	defer s.Close()
	full.set(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := 0
	var err error
	for i := 0; err == nil && ctx.Err() == nil; i++ {
		var res Result
		res, err = s.Submit(ctx, batchOf(fmt.Sprint("f", i), 200))
		accepted += res.Accepted
	}
	if ctx.Err() != nil {
		t.Fatalf("ingest still accepted records (%d) or hung after table files could not be created", accepted)
	}
	if !errors.Is(err, syscall.ENOSPC) || s.Failed() == nil {
		t.Errorf("submit after the failed flush: %v, Failed() = %v; want ENOSPC and a failed store", err, s.Failed())
	}
	if accepted == 0 {
		t.Error("nothing was accepted before the flush failed: the test never filled a memtable")
	}
	// Everything acknowledged is readable.
	readable := 0
	for _, n := range stored(t, s) {
		readable += n
	}
	// The batch whose flush failed may be visible in the live store
	// (applied, not acknowledged), whole.
	if readable < accepted || (readable-accepted)%200 != 0 {
		t.Errorf("%d records readable, %d acknowledged in batches of 200", readable, accepted)
	}
	// Pebble retries the flush; the backoff keeps that to a handful of
	// attempts a second instead of a busy loop.
	before := full.count()
	time.Sleep(300 * time.Millisecond)
	if n := full.count() - before; n > 10 {
		t.Errorf("%d table creations in 300ms after the failure: the retries spin", n)
	}
}

// A compaction the disk refuses does not stop ingest: the data it would
// rewrite stays where it is, Pebble tries again later, and records still
// reach the log and the memtables. Failing the store for it made a volume
// close to full restart the collector in a loop: every restart had room to
// open for writing, and the first large compaction failed it again.
func TestCompactionFailureKeepsIngesting(t *testing.T) {
	mem := vfs.NewMem()
	full := &refuse{suffix: ".sst", errno: syscall.ENOSPC, kinds: map[errorfs.OpKind]bool{errorfs.OpCreate: true}}
	s := open(t, "", memOptions(errorfs.Wrap(mem, full)))
	defer s.Close()
	ctx := context.Background()
	accepted := 0
	// The first batch compacted to the bottom, the second flushed above
	// it: their id keys interleave, so merging them must write a new table
	// (no trivial move), whichever compaction does it.
	for i := range 2 {
		res, err := s.Submit(ctx, batchOf(fmt.Sprint("c", i), 200))
		if err != nil {
			t.Fatal(err)
		}
		accepted += res.Accepted
		if err := s.DB().Flush(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := s.DB().Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	full.set(true)
	compacted := make(chan error, 1)
	go func() { compacted <- s.DB().Compact(ctx, []byte{0}, []byte{0xff}, false) }()
	deadline := time.Now().Add(20 * time.Second)
	for full.count() == 0 {
		select {
		case err := <-compacted:
			t.Fatalf("the compaction ended (%v) without creating a table: the test refused nothing", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the compaction created no table in 20s: the test refused nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Failed(); err != nil {
		t.Fatalf("Failed() = %v after a refused compaction; want the store still writing", err)
	}
	res, err := s.Submit(ctx, batchOf("after", 50))
	if err != nil || res.Accepted != 50 {
		t.Fatalf("submit after the refused compaction: %+v, %v; want 50 accepted", res, err)
	}
	accepted += res.Accepted
	full.set(false)
	// The refused manual compaction either reports the error or, retried
	// by Pebble, succeeds once there is room; either way the next one does.
	if err := <-compacted; err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("compaction on a full disk: %v, want ENOSPC or success once there is room", err)
	}
	if err := s.DB().Compact(ctx, []byte{0}, []byte{0xff}, false); err != nil {
		t.Fatalf("compaction once there is room: %v", err)
	}
	if err := s.Failed(); err != nil {
		t.Fatalf("Failed() = %v", err)
	}
	readable := 0
	for _, n := range stored(t, s) {
		readable += n
	}
	if readable != accepted {
		t.Errorf("%d records readable, %d acknowledged", readable, accepted)
	}
}
