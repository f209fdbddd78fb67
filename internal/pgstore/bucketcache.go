package pgstore

import (
	"container/list"
	"slices"
	"sync"

	"github.com/axiomhq/hyperloglog"
)

// bucketCache keeps decoded rollup buckets in memory, each with the version
// its row had when it was read (migrations 0005 and 0006: every write of a
// bucket row, by any replica, draws a new random version). A summary sends
// the versions it holds with its one statement; the database returns a
// bucket's value only when its row has another version now, or is new, and
// a missing row is a bucket that is gone. So a cached bucket is used only
// when the snapshot the summary reads still has exactly that content:
// nothing depends on time, on clocks, on which replica folded or on the
// database never going back (a restore, a failover that lost writes).
//
// The cached aggregates are shared by concurrent summaries and never
// changed: merges only read the bucket merged in, and a bucket that takes
// tail records is cloned first.
//
// Least recently used buckets go when the estimated size of the decoded
// buckets passes the budget.
type bucketCache struct {
	budget int64

	mu      sync.Mutex
	used    int64
	entries map[cacheKey]*list.Element // of *cachedBucket
	lru     list.List                  // most recently used first
}

// cacheKey names a bucket (tiles 0) or the merge of a run of tiles
// consecutive buckets of its resolution from id's on.
type cacheKey struct {
	id    bucketID
	tiles int
}

type cachedBucket struct {
	key     cacheKey
	version int64   // a bucket's
	parts   []int64 // a run's: its buckets' versions, -1 for one that was not there
	a       agg
	size    int64
}

func newBucketCache(budget int64) *bucketCache {
	if budget <= 0 {
		return nil
	}
	return &bucketCache{budget: budget, entries: map[cacheKey]*list.Element{}}
}

// lookup calls fn with the cached bucket of each of ids that is held.
func (c *bucketCache) lookup(ids []bucketID, fn func(i int, version int64, a agg)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		if e, ok := c.entries[cacheKey{id, 0}]; ok {
			c.lru.MoveToFront(e)
			b := e.Value.(*cachedBucket)
			fn(i, b.version, b.a)
		}
	}
}

// put keeps a bucket read at version.
func (c *bucketCache) put(id bucketID, version int64, a agg, encoded int) {
	c.add(&cachedBucket{key: cacheKey{id, 0}, version: version, a: a, size: decodedSize(a, encoded)})
}

// run returns the merge of the len(versions) buckets from id's on if one
// was kept that was made of exactly these versions.
func (c *bucketCache) run(id bucketID, versions []int64) (agg, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey{id, len(versions)}]
	if !ok {
		return agg{}, false
	}
	b := e.Value.(*cachedBucket)
	if !slices.Equal(b.parts, versions) {
		return agg{}, false
	}
	c.lru.MoveToFront(e)
	return b.a, true
}

// putRun keeps the merge of a run of buckets read at versions.
func (c *bucketCache) putRun(id bucketID, versions []int64, a agg) {
	encoded, err := a.marshal()
	if err != nil {
		return
	}
	c.add(&cachedBucket{key: cacheKey{id, len(versions)}, parts: slices.Clone(versions), a: a,
		size: decodedSize(a, len(encoded)) + 8*int64(len(versions))})
}

func (c *bucketCache) add(b *cachedBucket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.size > c.budget {
		return
	}
	if e, ok := c.entries[b.key]; ok {
		old := e.Value.(*cachedBucket)
		c.used -= old.size
		c.lru.Remove(e)
	}
	c.entries[b.key] = c.lru.PushFront(b)
	c.used += b.size
	for c.used > c.budget {
		e := c.lru.Back()
		old := e.Value.(*cachedBucket)
		c.lru.Remove(e)
		delete(c.entries, old.key)
		c.used -= old.size
	}
}

// stats returns the number of buckets held and their estimated bytes.
func (c *bucketCache) stats() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.used
}

// decodedSize estimates the memory a decoded bucket takes: its encoding
// (a dense customer sketch is its 16 KiB of registers, a sparse one stays
// compressed) plus what decoding expands, the sparse sketch's unsorted
// entries and the wait sketch's bins as float64s, plus the structures.
func decodedSize(a agg, encoded int) int64 {
	size := int64(2*encoded) + 512
	if a.tp != nil {
		for _, st := range []interface {
			MinIndex() (int, error)
			MaxIndex() (int, error)
		}{a.tp.Wait.GetPositiveValueStore(), a.tp.Wait.GetNegativeValueStore()} {
			lo, err1 := st.MinIndex()
			hi, err2 := st.MaxIndex()
			if err1 == nil && err2 == nil {
				size += 8 * int64(hi-lo+1+128) // and the growth margin a dense store keeps
			}
		}
	}
	return size
}

// cloneAgg copies a bucket so that records can be added to the copy.
func cloneAgg(a agg) agg {
	if a.tp != nil {
		c := *a.tp
		c.Wait = a.tp.Wait.Copy()
		c.Customers = cloneSketch(a.tp.Customers)
		return agg{tp: &c}
	}
	c := *a.sv
	c.Customers = cloneSketch(a.sv.Customers)
	return agg{sv: &c}
}

func cloneSketch(s *hyperloglog.Sketch) *hyperloglog.Sketch {
	if s == nil {
		return nil
	}
	return s.Clone()
}
