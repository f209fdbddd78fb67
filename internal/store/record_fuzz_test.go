package store

import (
	"bytes"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// FuzzDecodeRecord feeds arbitrary bytes to the decoder of stored record
// values (what a damaged disk or a bug could leave under an 'r' key). It
// must never panic or read out of bounds, must refuse a survey score above
// 10 and an unknown kind, and whatever it accepts must encode and decode
// back to the same record: a replay counts it as the first time.
//
// Seeds are in testdata/fuzz/FuzzDecodeRecord; a longer run:
//
//	go test ./internal/store -run '^$' -fuzz FuzzDecodeRecord -fuzztime 10m
func FuzzDecodeRecord(f *testing.F) {
	at := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for _, r := range []Record{
		event("e-1", at, 12.5),
		answer("r-1", at, 10),
		{Kind: rollup.KindTouchpoint, Subject: "phone", ID: "x", JSON: []byte(`{}`),
			Event: rollup.Event{Time: -1, HasResolved: true, Resolved: true}},
		{Kind: rollup.KindSurvey, Subject: "", ID: "", JSON: nil},
	} {
		f.Add(appendRecord(nil, &r))
	}
	f.Add([]byte{})
	f.Add([]byte{recordV1, 'e'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		switch r.Kind {
		case rollup.KindTouchpoint:
		case rollup.KindSurvey:
			if r.Response.Score < 0 || r.Response.Score > 10 {
				t.Fatalf("accepted survey score %d", r.Response.Score)
			}
		default:
			t.Fatalf("accepted kind %q", r.Kind)
		}
		again, err := decodeRecord(appendRecord(nil, &r))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again.Kind != r.Kind || again.Subject != r.Subject || again.ID != r.ID || !bytes.Equal(again.JSON, r.JSON) ||
			again.Response != r.Response || !sameEvent(again.Event, r.Event) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
		}
	})
}

// sameEvent compares events bit for bit, so that a NaN wait equals
// itself.
func sameEvent(a, b rollup.Event) bool {
	aw, bw := a.WaitSeconds, b.WaitSeconds
	a.WaitSeconds, b.WaitSeconds = 0, 0
	return a == b && (aw == bw || aw != aw && bw != bw)
}
