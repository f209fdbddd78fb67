// Package enginebench compares the two embedded engines the collector
// could use, Pebble and bbolt, on its write path: a group commit of
// requests of 100 records, each record an idempotency lookup plus two
// writes (id key, raw record), then one fsync.
//
//	go test ./internal/store/enginebench -run '^$' -bench . -benchtime 2s -count 3
package enginebench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	bolt "go.etcd.io/bbolt"
)

type engine interface {
	// commit looks up every id, writes the new ones with a record each,
	// syncs, and returns how many were new.
	commit(ids [][]byte, record []byte) (int, error)
	close() error
}

type pebbleEngine struct {
	db  *pebble.DB
	seq uint64
}

func openPebble(dir string) (*pebbleEngine, error) {
	cache := pebble.NewCache(128 << 20)
	defer cache.Unref()
	o := &pebble.Options{Cache: cache, MemTableSize: 64 << 20, Logger: quiet{}}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, o)
	return &pebbleEngine{db: db}, err
}

func (e *pebbleEngine) commit(ids [][]byte, record []byte) (int, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'i'}, UpperBound: []byte{'j'}})
	if err != nil {
		return 0, err
	}
	b := e.db.NewBatch()
	defer b.Close()
	n := 0
	for _, id := range ids {
		if it.SeekPrefixGE(id) && bytes.Equal(it.Key(), id) {
			continue
		}
		e.seq++
		v := binary.BigEndian.AppendUint64(nil, e.seq)
		_ = b.Set(id, v, nil)
		_ = b.Set(append([]byte{'r'}, v...), record, nil)
		n++
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	return n, b.Commit(pebble.Sync)
}

func (e *pebbleEngine) close() error { return e.db.Close() }

type boltEngine struct {
	db  *bolt.DB
	seq uint64
}

func openBolt(dir string) (*boltEngine, error) {
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"i", "r"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	return &boltEngine{db: db}, err
}

func (e *boltEngine) commit(ids [][]byte, record []byte) (int, error) {
	n := 0
	err := e.db.Update(func(tx *bolt.Tx) error {
		ib, rb := tx.Bucket([]byte("i")), tx.Bucket([]byte("r"))
		rb.FillPercent = 1 // sequential keys
		for _, id := range ids {
			if ib.Get(id) != nil {
				continue
			}
			e.seq++
			v := binary.BigEndian.AppendUint64(nil, e.seq)
			if err := ib.Put(id, v); err != nil {
				return err
			}
			if err := rb.Put(v, record); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

func (e *boltEngine) close() error { return e.db.Close() }

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

func ids(rng *rand.Rand, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf([]byte("ie"), "load\x00evt-%016x", rng.Uint64())
	}
	return out
}

var record = bytes.Repeat([]byte("x"), 150)

func open(b testing.TB, name string) engine {
	dir := b.TempDir()
	var e engine
	var err error
	if name == "pebble" {
		e, err = openPebble(dir)
	} else {
		e, err = openBolt(dir)
	}
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkGroupCommit: one op is one group of `group` requests of 100
// records; prefill stored records come first, in groups of 10,000.
func BenchmarkGroupCommit(b *testing.B) {
	for _, prefill := range []int{0, 1_000_000} {
		for _, name := range []string{"pebble", "bbolt"} {
			for _, group := range []int{1, 16, 64} {
				if prefill > 0 && group != 64 {
					continue
				}
				b.Run(fmt.Sprintf("%s/prefill=%d/group=%d", name, prefill, group), func(b *testing.B) {
					e := open(b, name)
					defer e.close()
					rng := rand.New(rand.NewPCG(1, 2))
					for done := 0; done < prefill; done += 10000 {
						if _, err := e.commit(ids(rng, 10000), record); err != nil {
							b.Fatal(err)
						}
					}
					b.ResetTimer()
					for range b.N {
						if _, err := e.commit(ids(rng, group*100), record); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*group*100)/b.Elapsed().Seconds(), "events/s")
				})
			}
		}
	}
}

// TestEnginesAgree checks both implementations find what they stored.
func TestEnginesAgree(t *testing.T) {
	for _, name := range []string{"pebble", "bbolt"} {
		e := open(t, name)
		set := ids(rand.New(rand.NewPCG(3, 4)), 500)
		if n, err := e.commit(set, record); err != nil || n != 500 {
			t.Fatalf("%s: first commit stored %d, %v", name, n, err)
		}
		if n, err := e.commit(append(set[:250:250], ids(rand.New(rand.NewPCG(5, 6)), 10)...), record); err != nil || n != 10 {
			t.Errorf("%s: second commit stored %d new of 10, %v", name, n, err)
		}
		_ = e.close()
	}
}
