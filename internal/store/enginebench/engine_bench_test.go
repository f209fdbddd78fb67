// Package enginebench measures the two embedded engines the collector could
// use, Pebble v2 and bbolt v1.5, on the collector's real write path.
//
// The collector takes interaction events in HTTP requests of 100 records,
// each with an idempotency key "evt-<16 hex>"; a 2xx means the request is
// fsync'd. One writer goroutine drains whatever requests are queued (a group
// of up to 64 requests here) and, for each record, checks whether its id is
// already stored (a point read), then writes the id key i/e/<id> -> seq(8)
// and the raw record r/<seq(8), big endian> -> ~150 bytes. The group is one
// batch (Pebble) or one transaction (bbolt), committed with fsync, before
// any request of the group is answered.
//
// BenchmarkGroupCommit runs that loop on an empty database for groups of 1,
// 16 and 64 requests; BenchmarkGroupCommitPrefilled runs groups of 64 on a
// database that already holds -prefill records (2,000,000 by default), which
// is where idempotency lookups and write amplification start to cost.
// Every benchmark reports events/s (records over the time spent in groups)
// and the latency of a group, from the first lookup to the end of the sync,
// as p50-ms and p99-ms: that is what a request waits once it is dequeued.
// BenchmarkFsync measures a 4 KiB write plus fsync on the same disk, which
// bounds every group commit.
//
//	go test ./internal/store/enginebench/ -run '^$' -bench . -benchtime 3s -count 3
//	go test ./internal/store/enginebench/ -run '^$' -bench Prefilled -prefill 1000000
package enginebench

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/cxop-dev/cxop/internal/store"
)

var (
	prefill       = flag.Int("prefill", 2_000_000, "records stored before BenchmarkGroupCommitPrefilled")
	pebbleCompact = flag.Bool("pebble-compact", false, "compact the whole prefilled Pebble database before measuring (an LSM at rest)")
	pebbleGet     = flag.Bool("pebble-get", false, "look ids up in Pebble with DB.Get instead of one iterator per group")
)

const recordsPerRequest = 100

// engine is what the collector's writer needs from a store.
type engine interface {
	// update runs fn in one batch or transaction and commits it, with
	// fsync when sync is true.
	update(sync bool, fn func(group) error) error
	close() error
}

// group is one batch or transaction.
type group interface {
	// has reports whether id is stored (before this group).
	has(id []byte) (bool, error)
	// put stores id -> seq and seq -> record.
	put(id []byte, seq uint64, record []byte) error
}

func idKey(buf, id []byte) []byte { return append(append(buf[:0], "i/e/"...), id...) }

func seqBytes(seq uint64) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b
}

// Pebble, configured as internal/store configures it, with a quiet logger.

type pebbleEngine struct{ db *pebble.DB }

func openPebble(dir string) (*pebbleEngine, error) {
	o := store.PebbleOptions(128 << 20)
	defer o.Cache.Unref()
	o.Logger = quietLogger{}
	db, err := pebble.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db: db}, nil
}

type pebbleGroup struct {
	db    *pebble.DB
	batch *pebble.Batch
	ids   *pebble.Iterator // one iterator per group, as internal/store does
	key   []byte
}

func (e *pebbleEngine) update(sync bool, fn func(group) error) error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("i/"), UpperBound: []byte("i0")})
	if err != nil {
		return err
	}
	g := &pebbleGroup{db: e.db, batch: e.db.NewBatch(), ids: it}
	defer func() { _ = g.batch.Close() }()
	err = fn(g)
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	return g.batch.Commit(opt)
}

func (g *pebbleGroup) has(id []byte) (bool, error) {
	g.key = idKey(g.key, id)
	if *pebbleGet {
		_, closer, err := g.db.Get(g.key)
		if err == pebble.ErrNotFound {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return true, closer.Close()
	}
	// The default comparer's prefix is the whole key, so SeekPrefixGE
	// consults the bloom filters and is a point lookup.
	if g.ids.SeekPrefixGE(g.key) && bytes.Equal(g.ids.Key(), g.key) {
		return true, nil
	}
	return false, g.ids.Error()
}

func (g *pebbleGroup) put(id []byte, seq uint64, record []byte) error {
	g.key = idKey(g.key, id)
	s := seqBytes(seq)
	if err := g.batch.Set(g.key, s[:], nil); err != nil {
		return err
	}
	rk := append([]byte("r/"), s[:]...)
	return g.batch.Set(rk, record, nil)
}

func (e *pebbleEngine) close() error { return e.db.Close() }

// settle flushes the memtable and waits (up to 30s) for compactions, so
// the disk usage is that of a database at rest.
func (e *pebbleEngine) settle() error {
	if err := e.db.Flush(); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if m := e.db.Metrics(); m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// bbolt: one db.Update per group, buckets "i" (e/<id> -> seq) and "r"
// (seq -> record), NoFreelistSync.

type boltEngine struct{ db *bolt.DB }

var bucketI, bucketR = []byte("i"), []byte("r")

func openBolt(dir string) (*boltEngine, error) {
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bolt.Options{
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType, // the faster free list for large files
		Timeout:        time.Second,
	})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketI, bucketR} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &boltEngine{db: db}, nil
}

type boltGroup struct {
	i, r *bolt.Bucket
	key  []byte
}

func (e *boltEngine) update(sync bool, fn func(group) error) error {
	if !sync {
		e.db.NoSync = true
		defer func() { e.db.NoSync = false }()
	}
	return e.db.Update(func(tx *bolt.Tx) error {
		g := &boltGroup{i: tx.Bucket(bucketI), r: tx.Bucket(bucketR)}
		g.r.FillPercent = 1 // keys are sequential: fill pages, split at the end
		return fn(g)
	})
}

func (g *boltGroup) has(id []byte) (bool, error) {
	g.key = append(append(g.key[:0], "e/"...), id...)
	return g.i.Get(g.key) != nil, nil
}

func (g *boltGroup) put(id []byte, seq uint64, record []byte) error {
	key := append([]byte("e/"), id...) // bbolt keeps the slices until commit
	s := seqBytes(seq)
	if err := g.i.Put(key, s[:]); err != nil {
		return err
	}
	return g.r.Put(s[:], record)
}

func (e *boltEngine) close() error { return e.db.Close() }

func open(tb testing.TB, name, dir string) engine {
	tb.Helper()
	var e engine
	var err error
	switch name {
	case "pebble":
		e, err = openPebble(dir)
	case "bbolt":
		e, err = openBolt(dir)
	default:
		err = fmt.Errorf("unknown engine %q", name)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

var engines = []string{"pebble", "bbolt"}

// The workload.

// writer is the collector's single writer: it owns the sequence.
type writer struct {
	e   engine
	seq uint64
	// work is the time the last commit spent looking up and writing,
	// before the commit and its sync.
	work time.Duration
}

// commit is one group commit: look up every id, store the new ones, sync.
// It returns how many records were new.
func (w *writer) commit(requests [][]record) (int, error) {
	stored := 0
	seq := w.seq
	err := w.e.update(true, func(g group) error {
		start := time.Now()
		defer func() { w.work = time.Since(start) }()
		pending := make(map[string]struct{}, len(requests)*recordsPerRequest)
		for _, req := range requests {
			for _, r := range req {
				if _, dup := pending[string(r.id)]; dup {
					continue
				}
				found, err := g.has(r.id)
				if err != nil {
					return err
				}
				if found {
					continue
				}
				pending[string(r.id)] = struct{}{}
				seq++
				if err := g.put(r.id, seq, r.value); err != nil {
					return err
				}
				stored++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	w.seq = seq
	return stored, nil
}

type record struct{ id, value []byte }

func newID(rng *rand.Rand) []byte { return fmt.Appendf(nil, "evt-%016x", rng.Uint64()) }

// newRecord is ~150 bytes shaped like internal/store's encoding: a fixed
// header (version, kind, flags, time, customer hash, wait, score), subject,
// id and the normalised JSON.
func newRecord(rng *rand.Rand, id []byte) record {
	v := make([]byte, 0, 160)
	v = append(v, 1, 0, 0x1f)
	ts := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(86400e3)) * time.Millisecond)
	v = binary.BigEndian.AppendUint64(v, uint64(ts.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, rng.Uint64())
	v = binary.BigEndian.AppendUint64(v, uint64(rng.IntN(600)))
	v = append(v, 0, 4)
	v = append(v, "chat"...)
	v = append(v, byte(len(id)))
	v = append(v, id...)
	v = fmt.Appendf(v, `{"id":%q,"touchpoint":"chat","customer":"c-%d","time":%q,"waitSeconds":%d}`,
		id, rng.IntN(1e6), ts.Format(time.RFC3339Nano), rng.IntN(600))
	return record{id: id, value: v}
}

func newRequests(rng *rand.Rand, n int) [][]record {
	reqs := make([][]record, n)
	for i := range reqs {
		reqs[i] = make([]record, recordsPerRequest)
		for j := range reqs[i] {
			reqs[i][j] = newRecord(rng, newID(rng))
		}
	}
	return reqs
}

// run is the benchmark loop: a group of `requests` requests per iteration.
func run(b *testing.B, w *writer, rng *rand.Rand, requests int) {
	var lat, work []time.Duration
	var busy time.Duration
	events := 0
	for b.Loop() {
		reqs := newRequests(rng, requests) // what the HTTP handlers decoded
		start := time.Now()
		n, err := w.commit(reqs)
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if n != requests*recordsPerRequest {
			b.Fatalf("stored %d of %d new records", n, requests*recordsPerRequest)
		}
		lat = append(lat, d)
		work = append(work, w.work)
		busy += d
		events += n
	}
	slices.Sort(lat)
	slices.Sort(work)
	b.ReportMetric(float64(events)/busy.Seconds(), "events/s")
	// The part of a group spent in lookups and writes; the rest is the
	// commit and its sync.
	b.ReportMetric(ms(percentile(work, 0.50)), "work-p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func BenchmarkGroupCommit(b *testing.B) {
	for _, name := range engines {
		for _, requests := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/group=%d", name, requests), func(b *testing.B) {
				e := open(b, name, b.TempDir())
				defer func() { _ = e.close() }()
				run(b, &writer{e: e}, rand.New(rand.NewPCG(1, uint64(requests))), requests)
			})
		}
	}
}

// A prefilled database per engine, filled once and shared by every run of
// BenchmarkGroupCommitPrefilled (each run adds its own records to it).
type filled struct {
	once    sync.Once
	dir     string
	w       *writer
	took    time.Duration
	diskMiB float64
	note    string
	err     error
}

var (
	prefilled = map[string]*filled{"pebble": {}, "bbolt": {}}
	tempRoot  string
)

func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	tempRoot, err = os.MkdirTemp("", "enginebench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	for _, f := range prefilled {
		if f.w != nil {
			_ = f.w.e.close()
		}
	}
	_ = os.RemoveAll(tempRoot)
	os.Exit(code)
}

// fill stores n records without per-batch fsync, in large groups with the
// ids sorted (a bulk load, not the ingest path), then syncs once.
func fill(e engine, rng *rand.Rand, n int) (uint64, error) {
	const chunk = 50_000
	var seq uint64
	recs := make([]record, 0, chunk)
	for done := 0; done < n; done += chunk {
		recs = recs[:0]
		for range min(chunk, n-done) {
			recs = append(recs, newRecord(rng, newID(rng)))
		}
		slices.SortFunc(recs, func(a, b record) int { return bytes.Compare(a.id, b.id) })
		err := e.update(false, func(g group) error {
			for _, r := range recs {
				seq++
				if err := g.put(r.id, seq, r.value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	switch e := e.(type) {
	case *pebbleEngine:
		if *pebbleCompact {
			if err := e.db.Compact(context.Background(), []byte("i/"), []byte("s"), true); err != nil {
				return 0, err
			}
		}
		return seq, e.settle()
	case *boltEngine:
		return seq, e.db.Sync()
	}
	return seq, nil
}

func (f *filled) get(b *testing.B, name string) *writer {
	f.once.Do(func() {
		f.dir = filepath.Join(tempRoot, name)
		if f.err = os.Mkdir(f.dir, 0o700); f.err != nil {
			return
		}
		e := open(b, name, f.dir)
		start := time.Now()
		seq, err := fill(e, rand.New(rand.NewPCG(7, 8)), *prefill)
		f.took = time.Since(start)
		f.w, f.err = &writer{e: e, seq: seq}, err
		f.diskMiB = float64(du(f.dir)) / (1 << 20)
		if p, ok := e.(*pebbleEngine); ok {
			m := p.db.Metrics()
			f.note = fmt.Sprintf("; read amplification %d, L0 files %d, compactions running %d, debt %d MiB",
				m.ReadAmp(), m.Levels[0].TablesCount, m.Compact.NumInProgress, m.Compact.EstimatedDebt>>20)
		}
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	b.Logf("%s: %d records filled in %s, %.1f MiB on disk after the fill%s",
		name, *prefill, f.took.Round(time.Millisecond), f.diskMiB, f.note)
	return f.w
}

func BenchmarkGroupCommitPrefilled(b *testing.B) {
	const requests = 64
	for _, name := range engines {
		b.Run(fmt.Sprintf("%s/records=%d/group=%d", name, *prefill, requests), func(b *testing.B) {
			f := prefilled[name]
			w := f.get(b, name)
			run(b, w, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9)), requests)
			b.ReportMetric(f.diskMiB, "fill-MiB")
			b.ReportMetric(f.took.Seconds(), "fill-s")
		})
	}
}

// du is the bytes allocated on disk under dir (sparse files count what is
// allocated, not their length).
func du(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// BenchmarkFsync writes 4 KiB and fsyncs: appending (the file grows, like a
// WAL that is not preallocated) and overwriting the same block.
func BenchmarkFsync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			buf := bytes.Repeat([]byte{0xa5}, 4096)
			var lat []time.Duration
			var off int64
			for b.Loop() {
				start := time.Now()
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				if mode == "append" {
					off += int64(len(buf))
				}
			}
			slices.Sort(lat)
			b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		})
	}
}

// TestEnginesAgree stores the same requests in both engines, with
// duplicates inside a group and across groups, and checks that both store
// the same records and find the same ids, so the benchmark measures correct
// code.
func TestEnginesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	first := newRequests(rng, 5)
	// The second group repeats 150 stored ids, repeats one of its own ids
	// and brings 250 new ones.
	second := newRequests(rng, 3)
	copy(second[0], first[2])
	second[1][50] = first[4][50]
	second[2][7] = second[2][6]
	unknown := newRequests(rng, 1)[0]

	stored := map[string][]byte{} // id -> record, from the first engine
	for _, name := range engines {
		e := open(t, name, t.TempDir())
		w := &writer{e: e}
		if n, err := w.commit(first); err != nil || n != 500 {
			t.Fatalf("%s: first group stored %d of 500 new records (%v)", name, n, err)
		}
		if n, err := w.commit(second); err != nil || n != 300-100-1-1 {
			t.Fatalf("%s: second group stored %d, want 198 (%v)", name, n, err)
		}
		got := map[string][]byte{}
		err := e.update(false, func(g group) error {
			for _, reqs := range [][][]record{first, second} {
				for _, req := range reqs {
					for _, r := range req {
						ok, err := g.has(r.id)
						if err != nil {
							return err
						}
						if !ok {
							t.Errorf("%s: stored id %s not found", name, r.id)
						}
						got[string(r.id)] = nil
					}
				}
			}
			for _, r := range unknown {
				if ok, err := g.has(r.id); err != nil || ok {
					t.Errorf("%s: id %s never stored: has = %v, %v", name, r.id, ok, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if w.seq != 698 {
			t.Errorf("%s: sequence %d after 698 records", name, w.seq)
		}
		// Read every record back through the engine's own API.
		records := readAll(t, e)
		if len(records) != 698 {
			t.Errorf("%s: %d records stored, want 698", name, len(records))
		}
		for id, rec := range records {
			if want, ok := stored[id]; ok && !bytes.Equal(want, rec) {
				t.Errorf("%s: record of %s differs from %s's", name, id, engines[0])
			}
			if _, ok := got[id]; !ok {
				t.Errorf("%s: stored an id never submitted: %s", name, id)
			}
		}
		if name == engines[0] {
			stored = records
		} else if len(stored) != len(records) {
			t.Errorf("%s stored %d records, %s %d", name, len(records), engines[0], len(stored))
		}
		if err := e.close(); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll maps each stored id to its record, following id -> seq -> record.
func readAll(t *testing.T, e engine) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	switch e := e.(type) {
	case *pebbleEngine:
		it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("i/e/"), UpperBound: []byte("i/e0")})
		if err != nil {
			t.Fatal(err)
		}
		for it.First(); it.Valid(); it.Next() {
			v, closer, err := e.db.Get(append([]byte("r/"), it.Value()...))
			if err != nil {
				t.Fatalf("pebble: record of %s: %v", it.Key(), err)
			}
			out[string(it.Key()[len("i/e/"):])] = bytes.Clone(v)
			_ = closer.Close()
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	case *boltEngine:
		err := e.db.View(func(tx *bolt.Tx) error {
			r := tx.Bucket(bucketR)
			return tx.Bucket(bucketI).ForEach(func(k, v []byte) error {
				rec := r.Get(v)
				if rec == nil {
					return fmt.Errorf("bbolt: no record for %s", k)
				}
				out[string(k[len("e/"):])] = bytes.Clone(rec)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}
