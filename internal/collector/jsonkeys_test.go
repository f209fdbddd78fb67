package collector

import "testing"

func TestRepeatedKey(t *testing.T) {
	for _, tc := range []struct {
		body, path string
	}{
		{`{"id":"a","id":"b"}`, "id"},
		{`{"id":"a","ID":"b"}`, "ID"},
		{`{"id":"a","i\u0064":"b"}`, "id"},
		{`{"id":"a","contact":{"email":"x@y","phone":"1","email":"z@y"}}`, "contact.email"},
		{`[{"id":"a"},{"id":"b","customer":"c","customer":"d"}]`, "[1].customer"},
		{`{"id":"a"}` + "\n" + `{"id":"b","b":1,"b":2}`, "b"},
		{`{"survey":"s","audience":[{"customer":"a"},{"customer":"b","contact":{"email":"e","Email":"f"}}]}`, "audience[1].contact.Email"},
		{`{"":1,"":2}`, `""`},
		{`{"a":"x\"y","a":1}`, "a"},
		{`{"a\\":1,"a\\":2}`, `a\`},
		{`{"é":1,"É":2}`, "É"},
		{`{"k":1,"K":2}`, "K"}, // U+212A KELVIN SIGN folds to k in encoding/json
	} {
		got, ok := repeatedKey([]byte(tc.body))
		if !ok || got != tc.path {
			t.Errorf("%s: %q %v, want %q", tc.body, got, ok, tc.path)
		}
	}
	for _, body := range []string{
		`{"id":"a","contact":{"id":"b"}}`,
		`[{"id":"a"},{"id":"b"}]`,
		`{"a":{"b":1},"b":{"a":1}}`,
		`{"a":"\"a\":1","b":"a"}`,
		`{"a":[{"a":1},{"a":2}]}`,
		`{"ab":1,"ba":2,"a":3,"b":4}`,
		``, `{`, `{"a":`, `[[[`, `}}]]`, `{"a" 1 "a"}`, `"\`, `{"a":1,}`,
	} {
		if got, ok := repeatedKey([]byte(body)); ok {
			t.Errorf("%s: reports %q repeated", body, got)
		}
	}
}
