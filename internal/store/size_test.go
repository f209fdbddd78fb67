package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// maxDiskBytesPerRecord is what docs/design-notes.md sizes the default
// data volume with ("Data volume size"); this test keeps it true.
const maxDiskBytesPerRecord = 200

// TestDiskBytesPerRecord stores 100,000 typical interaction events (the
// collector's normalised JSON with a UUID id, a customer id, a time, a
// wait, a resolution, a handle time and a segment; one in four with an
// e-mail contact), compacts, and measures the bytes the store's files
// take per record: value, record key, idempotency key and the tables'
// index, filter and compression.
func TestDiskBytesPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 100,000 records")
	}
	const n = 100000
	mem := vfs.NewMem()
	s := open(t, "", memOptions(mem), func(o *Options) { o.MemTableBytes = 64 << 20 })
	defer s.Close()
	start := now.Add(-24 * time.Hour)
	for b := range n / 1000 {
		recs := make([]Record, 1000)
		for i := range recs {
			k := b*1000 + i
			at := start.Add(time.Duration(k) * 24 * time.Hour / n)
			id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(k*2654435761), k%65536, k%4096, (k*7)%4096, uint64(k)*0x9e3779b97f4a7c15>>16)
			contact := ""
			if k%4 == 0 {
				contact = fmt.Sprintf(`,"contact":{"email":"customer%d@example.com"}`, k)
			}
			js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","customer":"cust-%09d","time":%q,"waitSeconds":%d,"resolved":%t,"handleSeconds":%d,"segment":"gold"%s}`,
				id, k*7919%1000000000, at.Format(time.RFC3339), k%600, k%3 != 0, 60+k%900, contact)
			recs[i] = Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js),
				Event: rollup.Event{Time: at.UnixNano(), CustomerHash: uint64(k * 7919), HasWait: true, WaitSeconds: float64(k % 600), Assessed: true, Compliant: k%600 <= 120, HasResolved: true, Resolved: k%3 != 0}}
		}
		if _, err := s.Submit(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	db := s.DB()
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	tables := db.Metrics().Total().TablesSize
	per := float64(tables) / n
	t.Logf("%d records: %d bytes of tables, %.1f bytes per record", n, tables, per)
	if per > maxDiskBytesPerRecord {
		t.Errorf("%.1f bytes per record on disk, more than the %d the default volume size assumes", per, maxDiskBytesPerRecord)
	}
}
