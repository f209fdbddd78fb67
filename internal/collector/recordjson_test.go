package collector

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

// The hand-written encoders against json.Marshal, byte for byte: a stored
// record's fingerprint is a hash of these bytes.
func FuzzRecordJSONMatchesMarshal(f *testing.F) {
	f.Add("e-1", "cust-1", "gold", "fine", 12.5, 300.0, byte(0xff), true, 9)
	f.Add("", "", "", "", 0.0, 0.0, byte(0), false, 0)
	f.Add(`<b>&"quote"\`, "\u2028line\u2029sep", "tab\there\nnl\r\b\f\x00\x1f\x7f", "Ünïcødé ☃ 𝄞", 1e-7, 1e21, byte(0xff), false, 10)
	f.Add("bad\xffutf8", "\xc3\x28", "\xed\xa0\x80", "ok", 0.000001, 999999999999999999999.0, byte(5), true, 3)
	f.Add("x", "y", "z", "w", math.Copysign(0, -1), 123456789.123456789, byte(2), false, -1)
	f.Add("x", "y", "", "", 5e-324, 1.7976931348623157e308, byte(3), true, 7)
	f.Fuzz(func(t *testing.T, id, customer, segment, comment string, wait, handle float64, present byte, resolved bool, score int) {
		e := eventOut{ID: id, Touchpoint: "chat", Customer: customer, Time: "2026-11-29T10:00:00.123Z", Segment: segment}
		if present&1 != 0 && !math.IsNaN(wait) && !math.IsInf(wait, 0) {
			e.WaitSeconds = &wait
		}
		if present&2 != 0 {
			e.Resolved = &resolved
		}
		if present&4 != 0 && !math.IsNaN(handle) && !math.IsInf(handle, 0) {
			e.HandleSeconds = &handle
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.appendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("event:\n got %s\nwant %s", got, want)
		}
		r := responseOut{ID: id, Survey: segment, Customer: customer, Score: score, Comment: comment, Time: "2026-11-29T10:00:00Z"}
		want, err = json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.appendJSON([]byte("prefix")); !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("response:\n got %s\nwant %s", got, want)
		}
	})
}
