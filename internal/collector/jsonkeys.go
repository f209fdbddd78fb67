package collector

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// encoding/json keeps the last of two equal keys in one object, so a body
// such as {"score":9,"score":0} would be stored as whatever the last key
// said, while a proxy, a log or another parser in front of the collector
// may have read the first. A repeated key is refused instead. Keys are
// compared as encoding/json matches them to fields: unescaped and
// case-insensitively (bytes.EqualFold), so {"id":"a","ID":"b"} repeats
// the id too.

// maxKeyDepth bounds the scanner's recursion; encoding/json refuses
// bodies nested deeper than 10,000 levels before the scanner runs.
const maxKeyDepth = 10000

// repeatedKey returns the path of the first key that appears twice in one
// JSON object anywhere in data (such as "contact.email" or
// "audience[3].customer"), or false. data is one JSON value or several
// (NDJSON); malformed input never panics, and the scan ends where it stops
// making sense (the decoder reports the syntax error).
func repeatedKey(data []byte) (string, bool) {
	s := keyScanner{data: data}
	for s.i < len(data) {
		start := s.i
		if s.value(0) {
			return strings.TrimPrefix(strings.Join(s.path, ""), "."), true
		}
		s.skipSpace()
		if s.i == start {
			s.i++ // a stray byte: move on
		}
	}
	return "", false
}

// key is one object key as the decoder matches it.
type key struct {
	name  []byte // unescaped
	ascii bool
}

func (a key) matches(b key) bool {
	if len(a.name) == 0 || len(b.name) == 0 {
		return len(a.name) == len(b.name)
	}
	if a.ascii && b.ascii {
		if len(a.name) != len(b.name) || a.name[0]|0x20 != b.name[0]|0x20 {
			return false
		}
	}
	return bytes.EqualFold(a.name, b.name)
}

// String is the key as a field name in an answer; "" for the empty key.
func (a key) String() string {
	if len(a.name) == 0 {
		return `""`
	}
	return string(a.name)
}

type keyScanner struct {
	data []byte
	i    int
	// keys holds the keys of every object open on the way down; each
	// object owns the tail it appended.
	keys []key
	// path is built on the way back up once a repeat is found: ".key"
	// and "[index]" elements.
	path []string
}

func (s *keyScanner) skipSpace() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value and reports whether a repeat was found in it.
func (s *keyScanner) value(depth int) bool {
	s.skipSpace()
	if s.i >= len(s.data) || depth > maxKeyDepth {
		return false
	}
	switch s.data[s.i] {
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case '"':
		s.skipString()
	default: // a number or a literal
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return false
			}
			s.i++
		}
	}
	return false
}

// skipString moves past a string whose opening quote is at s.i and
// returns its raw contents.
func (s *keyScanner) skipString() []byte {
	s.i++
	start := s.i
	for {
		q := bytes.IndexByte(s.data[s.i:], '"')
		if q < 0 {
			s.i = len(s.data)
			return s.data[start:]
		}
		s.i += q + 1
		backslashes := 0
		for j := s.i - 2; j >= start && s.data[j] == '\\'; j-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return s.data[start : s.i-1]
		}
	}
}

func (s *keyScanner) readKey() key {
	raw := s.skipString()
	k := key{name: raw, ascii: true}
	for _, c := range raw {
		if c >= utf8.RuneSelf {
			k.ascii = false
		} else if c == '\\' {
			k.ascii = false
			var name string
			quoted := append(append([]byte{'"'}, raw...), '"')
			if json.Unmarshal(quoted, &name) == nil {
				k.name = []byte(name)
			}
			break
		}
	}
	return k
}

func (s *keyScanner) object(depth int) bool {
	s.i++ // {
	base := len(s.keys)
	defer func() { s.keys = s.keys[:base] }()
	for {
		s.skipSpace()
		if s.i >= len(s.data) {
			return false
		}
		switch s.data[s.i] {
		case '}':
			s.i++
			return false
		case ',':
			s.i++
			continue
		case '"':
		default:
			return false // malformed: the decoder says where
		}
		k := s.readKey()
		for _, prev := range s.keys[base:] {
			if prev.matches(k) {
				s.path = []string{"." + k.String()}
				return true
			}
		}
		s.keys = append(s.keys, k)
		s.skipSpace()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return false // malformed: the decoder says where
		}
		s.i++
		if s.value(depth) {
			s.path = append([]string{"." + k.String()}, s.path...)
			return true
		}
	}
}

func (s *keyScanner) array(depth int) bool {
	s.i++ // [
	for index := 0; ; {
		s.skipSpace()
		if s.i >= len(s.data) {
			return false
		}
		switch s.data[s.i] {
		case ']':
			s.i++
			return false
		case ',':
			s.i++
			index++
			continue
		}
		start := s.i
		if s.value(depth) {
			s.path = append([]string{"[" + strconv.Itoa(index) + "]"}, s.path...)
			return true
		}
		if s.i == start {
			return false // malformed: the decoder says where
		}
	}
}
