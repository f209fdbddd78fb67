//go:build cgo

package collector

// pebbleCachesOffHeap: with cgo, Pebble allocates its memtables and block
// cache with malloc, outside the Go heap, so the heap a GOGC percentage
// scales is small.
const pebbleCachesOffHeap = true
