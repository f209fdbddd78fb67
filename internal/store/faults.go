package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrReadOnly means the store was opened read-only because its volume had
// no room to write (or a write failed while opening); it serves reads and
// refuses records until it is reopened with room to spare.
var ErrReadOnly = errors.New("the store is read-only")

// DefaultMinFreeBytes is the free space below which Open does not open the
// store for writing: Pebble needs room for at least one memtable flush
// (64 MiB) besides its write-ahead log, or its background work fails and
// retries forever.
const DefaultMinFreeBytes = 2 * memTableBytes

// readOnlyError says why a store is read-only.
type readOnlyError struct{ reason string }

func (e *readOnlyError) Error() string { return "the store is read-only: " + e.reason }
func (e *readOnlyError) Unwrap() error { return ErrReadOnly }

// DiskUsage reports the usage of the volume holding dir; ok is false when
// the filesystem does not say (an in-memory one).
func DiskUsage(fs vfs.FS, dir string) (u vfs.DiskUsage, ok bool) {
	if fs == nil {
		fs = vfs.Default
	}
	u, err := fs.GetDiskUsage(dir)
	if err != nil || u.TotalBytes == 0 {
		return vfs.DiskUsage{}, false
	}
	return u, true
}

// RoomToWrite says why the volume of opts.Dir has too little room for a
// store opened with opts to write, or "" when it has enough or the
// filesystem does not say: the check Open makes before opening for writing.
func RoomToWrite(opts Options) string {
	opts.defaults()
	return roomToWrite(opts.FS, opts.Dir, opts.MinFreeBytes)
}

// roomToWrite says why dir's volume has too little room for the store to
// write, or "" when it has enough or the filesystem does not say.
func roomToWrite(fs vfs.FS, dir string, minFree int64) string {
	u, ok := DiskUsage(fs, dir)
	if !ok || minFree <= 0 || u.AvailBytes >= uint64(minFree) {
		return ""
	}
	return fmt.Sprintf("the data volume has %d bytes free of %d, less than the %d it needs to write", u.AvailBytes, u.TotalBytes, minFree)
}

// IsDiskFault reports whether err is the disk refusing a write: full, out
// of quota, read-only or failing.
func IsDiskFault(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// FaultMetrics count the store's disk faults. The collector creates them
// once: a store reopened after its volume had room again keeps counting
// in them.
type FaultMetrics struct {
	backgroundErrors prometheus.Counter
	writeFaults      prometheus.Counter
}

// NewFaultMetrics registers the fault counters with reg (nil registers
// nothing).
func NewFaultMetrics(reg prometheus.Registerer) *FaultMetrics {
	m := &FaultMetrics{
		backgroundErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cxop_collector_store_background_errors_total",
			Help: "Errors of the store engine's background work (flushes, compactions); each one is retried.",
		}),
		writeFaults: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cxop_collector_store_write_faults_total",
			Help: "Writes, syncs and file creations on the data volume that failed (a full or failing disk).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.backgroundErrors, m.writeFaults)
	}
	return m
}

// faultBackoff is the shortest and longest pause between attempts to
// create a file once the volume refused a write, and between two log lines
// of the same trouble.
const (
	minFaultBackoff = 100 * time.Millisecond
	maxFaultBackoff = 30 * time.Second
	maxLogBackoff   = 10 * time.Minute
)

// faultFS wraps the store's filesystem. After a write fails it makes the
// next file creation wait, with an exponential backoff, so that Pebble's
// flushes and compactions, which retry a failed attempt at once, do not
// spin at a core against a full disk. A write that succeeds clears it.
type faultFS struct {
	vfs.FS
	metrics *FaultMetrics
	sleep   func(time.Duration)

	mu      sync.Mutex
	backoff time.Duration // 0 while writes succeed
	faults  int
	first   error
}

func newFaultFS(fs vfs.FS, m *FaultMetrics) *faultFS {
	return &faultFS{FS: fs, metrics: m, sleep: time.Sleep}
}

// failed records a failed write and grows the backoff.
func (f *faultFS) failed(err error) error {
	if err == nil {
		return nil
	}
	f.mu.Lock()
	f.faults++
	if f.first == nil {
		f.first = err
	}
	switch {
	case f.backoff == 0:
		f.backoff = minFaultBackoff
	case f.backoff < maxFaultBackoff:
		f.backoff = min(2*f.backoff, maxFaultBackoff)
	}
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.writeFaults.Inc()
	}
	return err
}

func (f *faultFS) succeeded() {
	f.mu.Lock()
	f.backoff = 0
	f.mu.Unlock()
}

// faulted is the first write the volume refused, or nil.
func (f *faultFS) faulted() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first
}

func (f *faultFS) wait() {
	f.mu.Lock()
	d := f.backoff
	f.mu.Unlock()
	if d > 0 {
		f.sleep(d)
	}
}

func (f *faultFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f.wait()
	file, err := f.FS.Create(name, c)
	if err != nil {
		return nil, f.failed(err)
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f.wait()
	file, err := f.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, f.failed(err)
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, fs: f}, nil
}

// Unwrap lets Pebble see the filesystem underneath (vfs.Root).
func (f *faultFS) Unwrap() vfs.FS { return f.FS }

type faultFile struct {
	vfs.File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, f.fs.failed(err)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, f.fs.failed(err)
}

func (f *faultFile) Preallocate(off, n int64) error { return f.fs.failed(f.File.Preallocate(off, n)) }

func (f *faultFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return f.fs.failed(err)
	}
	f.fs.succeeded()
	return nil
}

func (f *faultFile) SyncData() error {
	if err := f.File.SyncData(); err != nil {
		return f.fs.failed(err)
	}
	f.fs.succeeded()
	return nil
}

func (f *faultFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err != nil {
		return full, f.fs.failed(err)
	}
	f.fs.succeeded()
	return full, nil
}

// throttledLog logs one kind of trouble at most once per backoff, which
// doubles up to maxLogBackoff, and says how many it left out meanwhile.
type throttledLog struct {
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	next       time.Time
	backoff    time.Duration
	suppressed int
}

func (t *throttledLog) error(msg string, err error) {
	t.mu.Lock()
	now := t.now()
	if now.Before(t.next) {
		t.suppressed++
		t.mu.Unlock()
		return
	}
	suppressed := t.suppressed
	t.suppressed = 0
	t.backoff = min(max(2*t.backoff, time.Second), maxLogBackoff)
	t.next = now.Add(t.backoff)
	next := t.backoff
	t.mu.Unlock()
	t.log.Error(msg, "err", err, "suppressed_since_last", suppressed, "next_log_in", next.String())
}

// eventListener counts the engine's background errors and logs them with a
// backoff: a flush against a full disk fails and is retried thousands of
// times a second, which must not become thousands of log lines.
func (s *Store) eventListener() *pebble.EventListener {
	bg := &throttledLog{log: s.opts.Logger, now: time.Now}
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			if s.opts.FaultMetrics != nil {
				s.opts.FaultMetrics.backgroundErrors.Inc()
			}
			bg.error("store background work failed; retrying with a backoff", err)
		},
		// A compaction the disk refused only leaves data where it is and
		// is tried again (BackgroundError above counts and logs it); the
		// store keeps writing. Failing it would restart a collector whose
		// volume is close to full in a loop: each restart has room to open
		// for writing, and the first large compaction fails it again. A
		// flush the disk refused is different: the memtables cannot drain,
		// and writes would stall behind them with no answer. Refuse records
		// now (503) and let liveness ask for the restart, which opens
		// read-only on a full volume.
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err != nil && IsDiskFault(info.Err) && s.readOnly == nil {
				s.setFailed(fmt.Errorf("background write: flush: %w", info.Err))
			}
		},
		// Pebble's default ends the process from whatever goroutine read
		// the bad block. The store stops writing instead and says which
		// file and key range are damaged: reads of other ranges keep
		// working, Open refuses the store, and the collector's liveness
		// probe asks for the restart that reports it again.
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			s.setFailed(fmt.Errorf("on-disk corruption in %s, keys %s: %v", info.Path, info.Bounds, info.Details))
		},
	}
}

// DiskBytes is how many bytes the store's files take on the volume; false
// once the store is closed.
func (s *Store) DiskBytes() (uint64, bool) {
	s.readers.RLock()
	defer s.readers.RUnlock()
	if s.dbClosed {
		return 0, false
	}
	return s.db.Metrics().DiskSpaceUsage(), true
}
