package engine

import (
	"bytes"
	"strings"
)

// Floors keep the engine's queues cheap to read once drained. A step
// deletes what it took from the front of a queue (due entries, the
// outbox, a survey's parked messages), and Pebble keeps those deletions as
// tombstones until a compaction: an iterator that starts at the queue's
// first key walks all of them again, so a backlog of n costs n²/batch. A
// floor is the lowest key of a queue that may still be live, kept in
// memory: raised past the last key a step took (every key before it was
// taken too), lowered by any write below it. Writes and reads of the
// queues all happen under Engine.mu. A restart starts from the queue's
// first key once.
type floors map[string][]byte

// queueOf names the queue a key belongs to: its prefix, or for parked
// messages the survey's and kind's range; "" for other keys.
func queueOf(key []byte) string {
	k := string(key)
	switch {
	case strings.HasPrefix(k, prefixDue):
		return prefixDue
	case strings.HasPrefix(k, prefixOut):
		return prefixOut
	case strings.HasPrefix(k, prefixPark), strings.HasPrefix(k, prefixFailed):
		prefix := prefixPark
		if strings.HasPrefix(k, prefixFailed) {
			prefix = prefixFailed
		}
		if i := strings.IndexByte(k[len(prefix):], 0); i >= 0 && len(k) > len(prefix)+i+1 {
			return k[:len(prefix)+i+2]
		}
	}
	return ""
}

// from is where reading queue should start.
func (f floors) from(queue []byte) []byte {
	if fl, ok := f[string(queue)]; ok {
		return fl
	}
	return queue
}

// wrote lowers the floor of key's queue to key.
func (f floors) wrote(key []byte) {
	q := queueOf(key)
	if fl, ok := f[q]; ok && q != "" && bytes.Compare(key, fl) < 0 {
		f[q] = append([]byte(nil), key...)
	}
}

// took raises the floor of queue past last, once every key of the queue
// up to last is deleted and committed.
func (f floors) took(queue, last []byte) {
	if last == nil {
		return
	}
	fl := append(append([]byte(nil), last...), 0)
	if cur, ok := f[string(queue)]; !ok || bytes.Compare(fl, cur) > 0 {
		f[string(queue)] = fl
	}
}
