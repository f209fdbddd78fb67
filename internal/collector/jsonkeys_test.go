package collector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

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
		if got, ok := repeatedKeyByTokens([]byte(tc.body)); !ok || got != tc.path {
			t.Errorf("oracle on %s: %q %v, want %q", tc.body, got, ok, tc.path)
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

// repeatedKeyByTokens is repeatedKey written the slow, obvious way on
// encoding/json's tokenizer: the oracle FuzzIngestBody holds it to.
func repeatedKeyByTokens(data []byte) (string, bool) {
	type frame struct {
		object bool
		keys   [][]byte
		index  int
		key    string
		wantK  bool // an object's next string is a key
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*frame
	path := func(last string) string {
		var b strings.Builder
		for _, f := range stack[:len(stack)-1] {
			if f.object {
				b.WriteString("." + f.key)
			} else {
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		b.WriteString("." + last)
		return strings.TrimPrefix(b.String(), ".")
	}
	// value is called after a complete value inside the top frame.
	value := func() {
		if len(stack) == 0 {
			return
		}
		if top := stack[len(stack)-1]; top.object {
			top.wantK = true
		} else {
			top.index++
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				stack = append(stack, &frame{object: t == '{', wantK: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				value()
			}
		case string:
			if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].wantK {
				f := stack[top]
				for _, k := range f.keys {
					if bytes.EqualFold(k, []byte(t)) {
						name := t
						if name == "" {
							name = `""`
						}
						return path(name), true
					}
				}
				f.keys = append(f.keys, []byte(t))
				f.key, f.wantK = t, false
				if f.key == "" {
					f.key = `""`
				}
				continue
			}
			value()
		default:
			value()
		}
	}
}
