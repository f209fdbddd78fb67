package collector

import (
	"reflect"
	"strings"
	"testing"
)

// The one-pass decoder must accept exactly what the per-record path would
// decode the same way, and hand everything else to that path, whose
// messages name the record and field.
func TestDecodeStreamMatchesThePerRecordPath(t *testing.T) {
	a := `{"id":"a","touchpoint":"chat","customer":"c1","time":"2026-11-20T10:00:00Z","waitSeconds":30}`
	b := `{"id":"b","touchpoint":"chat","customer":"c2","contact":{"email":"x@example.com"},"resolved":true}`
	for _, body := range []string{
		a,
		"  " + a + "\n",
		a + "\n" + b + "\n",
		a + b,
		"[" + a + "]",
		"[ " + a + " ,\n " + b + " ]\n",
	} {
		fast, ok := decodeStream[eventIn]([]byte(body))
		if !ok {
			t.Errorf("%s: one-pass decoder refused it", body)
			continue
		}
		raws, ierr := splitRecords([]byte(body))
		if ierr != nil {
			t.Fatalf("%s: %v", body, ierr)
		}
		if len(raws) != len(fast) {
			t.Fatalf("%s: %d records, per-record path %d", body, len(fast), len(raws))
		}
		for i, raw := range raws {
			var slow eventIn
			if err := decodeStrict(i, raw, &slow); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if !reflect.DeepEqual(fast[i], &slow) {
				t.Errorf("%s: record %d decoded as %+v, per-record path %+v", body, i, fast[i], slow)
			}
		}
	}
	for _, body := range []string{
		"",
		"   ",
		"[]",
		"null",
		"[null]",
		"[" + a + ",null]",
		a + "\nnull",
		`"text"`,
		"[" + a + "] []",
		"[" + a + "] x",
		"[" + a,
		a + " garbage",
		a + "\n[" + b + "]",
		`{"id":"a","color":"red"}`,
		`{"id":"a","waitSeconds":"30"}`,
		`{"id":"a","waitSeconds":1e999}`,
		"{\"id\":\"a\xff\"}",
		strings.Repeat(`{"id":"x"}`, MaxRecords+1),
	} {
		if got, ok := decodeStream[eventIn]([]byte(body)); ok {
			t.Errorf("%.60q: one-pass decoder accepted %d records; want the per-record path", body, len(got))
		}
	}
}
