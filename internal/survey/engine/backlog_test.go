package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// countingSender accepts every message and counts deliveries per
// customer index ("b0000042" is 42), so that 300,000 of them cost 1.2 MB
// of the heap being measured.
type countingSender struct {
	counts []atomic.Uint32
	ids    []atomic.Pointer[string]
	bad    atomic.Int64
}

var customerField = []byte(`"customer":"b`)

func (s *countingSender) Send(_ context.Context, _ webhook.Endpoint, m webhook.Message) webhook.Result {
	i := bytes.Index(m.Body, customerField)
	if i < 0 || len(m.Body) < i+len(customerField)+8 {
		s.bad.Add(1)
		return webhook.Result{Outcome: webhook.Delivered}
	}
	n, err := strconv.Atoi(string(m.Body[i+len(customerField) : i+len(customerField)+8]))
	if err != nil || n >= len(s.counts) {
		s.bad.Add(1)
		return webhook.Result{Outcome: webhook.Delivered}
	}
	if s.counts[n].Add(1) == 1 {
		id := m.ID
		s.ids[n].Store(&id)
	}
	return webhook.Result{Outcome: webhook.Delivered}
}

// cpuTime is the process's user and system CPU time so far, which a
// loaded machine does not inflate as it does wall-clock time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapPeak samples the Go heap's object bytes until stopped.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	peak atomic.Uint64
}

func watchHeap() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			rtmetrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > h.peak.Load() {
				h.peak.Store(v)
			}
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) finish() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak.Load()
}

// A backlog of 300,000 due invitations (CXOP_BACKLOG sets another size) is
// read from the log, invited and delivered under a 256 MiB heap limit, in
// bounded batches: the heap's peak stays under the limit, every customer
// gets exactly one invitation, and a restart in the middle goes on where
// the last batch ended instead of redoing the backlog.
func TestBacklogIsWorkedOffInBoundedMemory(t *testing.T) {
	n := 300_000
	if v := os.Getenv("CXOP_BACKLOG"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("CXOP_BACKLOG=%q", v)
		}
	}
	const heapLimit = 256 << 20
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(heapLimit))

	dir := t.TempDir()
	now := t0
	sender := &countingSender{counts: make([]atomic.Uint32, n), ids: make([]atomic.Pointer[string], n)}
	cfg := Config{PageURL: "https://cx.example.com", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Question: "How likely…?", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: &webhook.Endpoint{URL: "https://mailer.example.com", Key: hookKey}},
	}}
	var st *store.Store
	var e *Engine
	open := func() {
		var err error
		// A small block cache, so that a build without cgo (Pebble's
		// caches on the Go heap) measures the engine, not the cache.
		st, err = store.Open(store.Options{Dir: dir, CacheBytes: 8 << 20, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		e, err = New(st.DB(), st, sender, Options{DeliveryBatch: 2000, InviteBatch: 5000})
		if err != nil {
			t.Fatal(err)
		}
		e.now = func() time.Time { return now }
		e.SetConfig(cfg)
	}
	open()
	defer func() { _ = st.Close() }()

	// The backlog: n interactions, stored in chunks.
	const chunk = 10_000
	records := make([]store.Record, 0, chunk)
	for i := 0; i < n; i += chunk {
		records = records[:0]
		for j := i; j < min(i+chunk, n); j++ {
			id := fmt.Sprintf("ev-%d", j)
			js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"b%08d","time":%q}`, id, j, now.Format(time.RFC3339Nano))
			records = append(records, store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js),
				Contact: []byte(fmt.Sprintf(`{"email":"b%08d@example.com"}`, j)),
				Event:   rollup.Event{Time: now.UnixNano(), CustomerHash: uint64(j)}})
		}
		if _, err := st.Submit(context.Background(), records); err != nil {
			t.Fatal(err)
		}
	}
	records = nil
	runtime.GC()
	now = now.Add(time.Minute)

	stats := func() Stats {
		s, err := e.Stats("nps", now.Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// step runs one engine step a millisecond after the last, as time
	// passes while the engine works.
	step := func() bool {
		now = now.Add(time.Millisecond)
		more, err := e.step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return more
	}
	heap := watchHeap()
	start, cpuStart := time.Now(), cpuTime()
	// Work until a third of the backlog is invited, then restart.
	steps := 0
	for stats()[CounterInvited] < uint64(n/3) {
		step()
		steps++
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	open()
	before := stats()
	step()
	after := stats()
	if d := after[CounterInvited] - before[CounterInvited]; d == 0 || d > uint64(e.opts.InviteBatch) {
		t.Errorf("the first step after the restart invited %d, want one batch of at most %d", d, e.opts.InviteBatch)
	}
	for step() {
	}
	peak := heap.finish()
	elapsed, cpu := time.Since(start), cpuTime()-cpuStart

	s := stats()
	t.Logf("%d invitations in %v, %v of CPU (%d steps before the restart); heap peak %.1f MiB under a %d MiB limit",
		n, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), steps, float64(peak)/(1<<20), heapLimit>>20)
	if s[CounterInvited] != uint64(n) || s[CounterDelivered] != uint64(n) {
		t.Errorf("counters = %v, want %d invited and delivered", s, n)
	}
	if peak >= heapLimit {
		t.Errorf("heap peak %d MiB, limit %d MiB", peak>>20, heapLimit>>20)
	}
	if b := sender.bad.Load(); b != 0 {
		t.Errorf("%d bodies without a known customer", b)
	}
	ids := make(map[string]struct{}, 0)
	missing, twice := 0, 0
	for i := range sender.counts {
		switch c := sender.counts[i].Load(); {
		case c == 0:
			missing++
		case c > 1:
			twice++
		}
		if p := sender.ids[i].Load(); p != nil {
			ids[*p] = struct{}{}
		}
	}
	if missing != 0 || twice != 0 || len(ids) != n {
		t.Errorf("%d customers got no invitation, %d more than one; %d distinct webhook-ids of %d", missing, twice, len(ids), n)
	}
	if left, _ := e.Outbox(); left != 0 {
		t.Errorf("%d messages left", left)
	}
	if due, _ := e.countKeys(prefixDue); due != 0 {
		t.Errorf("%d due entries left", due)
	}
}

// The queues' floors never hide work: an interaction that arrives late
// (due before what a step already took), a wave, and messages returned
// from parking, all written below a raised floor, are still invited and
// delivered.
func TestWritesBelowAQueuesFloorAreSeen(t *testing.T) {
	onBothStores(t, testWritesBelowAQueuesFloorAreSeen)
}

func testWritesBelowAQueuesFloorAreSeen(t *testing.T, kind storeKind) {
	rcv := newReceiver(t)
	cfg := Config{PageURL: "http://x", LinkKeys: keys, Surveys: []Survey{
		{Name: "nps", Touchpoints: []string{"chat"}, SamplePercent: 100, Webhook: rcv.endpoint()},
	}}
	f := newFixtureOn(t, kind, cfg)
	f.interact("chat", "c1", "c2")
	f.step()
	if _, raised := f.e.floors[prefixDue]; !raised {
		t.Fatal("no floor raised after a step took the due entries")
	}
	// An interaction from an hour ago: due before everything taken.
	f.now = f.now.Add(-time.Hour)
	f.interact("chat", "late")
	f.now = f.now.Add(time.Hour)
	// And a wave, due now.
	if _, err := f.e.Wave("nps", "w", []Member{{Customer: "w1"}}); err != nil {
		t.Fatal(err)
	}
	f.step()
	got := map[string]bool{}
	for _, r := range rcv.got() {
		got[r.body.Customer] = true
	}
	for _, c := range []string{"c1", "c2", "late", "w1"} {
		if !got[c] {
			t.Errorf("%s not delivered; got %v", c, got)
		}
	}

	// Parked (no webhook) and returned: unparked messages are due now,
	// below the outbox's floor for the same instant's ids.
	cfg.Surveys[0].Webhook = nil
	f.e.SetConfig(cfg)
	f.interact("chat", "p1", "p2", "p3")
	f.step()
	cfg.Surveys[0].Webhook = rcv.endpoint()
	f.e.SetConfig(cfg)
	f.step()
	for _, r := range rcv.got() {
		got[r.body.Customer] = true
	}
	for _, c := range []string{"p1", "p2", "p3"} {
		if !got[c] {
			t.Errorf("%s not delivered after unparking", c)
		}
	}
	if n, _ := f.e.Outbox(); n != 0 {
		t.Errorf("%d messages left", n)
	}
}

func TestQueueOf(t *testing.T) {
	for key, want := range map[string]string{
		prefixDue + "\x00\x00\x00\x00\x00\x00\x00\x01abc": prefixDue,
		prefixOut + "12345678msg":                         prefixOut,
		prefixPark + "nps\x00imsg_inv_1":                  prefixPark + "nps\x00i",
		prefixFailed + "nps\x00dmsg_det_1":                prefixFailed + "nps\x00d",
		prefixFailed + "nps":                              "",
		prefixInv + "0011":                                "",
		prefixFailing + "nps":                             "",
	} {
		if got := queueOf([]byte(key)); got != want {
			t.Errorf("queueOf(%q) = %q, want %q", key, got, want)
		}
	}
}
