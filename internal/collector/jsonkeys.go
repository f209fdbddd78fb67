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
	s := keyScanner{data: data, keys: make([]key, 0, 32)}
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

// key is one object key as the decoder matches it: offsets into the
// data, or into unescaped when the key has an escape. It holds no
// pointer, so keeping a key costs no GC write barrier.
type key struct {
	start, end int
	escaped    bool // start and end index unescaped
	ascii      bool
}

// name is the key unescaped.
func (s *keyScanner) name(k key) []byte {
	if k.escaped {
		return s.unescaped[k.start:k.end]
	}
	return s.data[k.start:k.end]
}

func (s *keyScanner) matches(a, b key) bool {
	an, bn := s.name(a), s.name(b)
	if len(an) == 0 || len(bn) == 0 {
		return len(an) == len(bn)
	}
	if a.ascii && b.ascii {
		if len(an) != len(bn) || an[0]|0x20 != bn[0]|0x20 {
			return false
		}
	}
	return bytes.EqualFold(an, bn)
}

// keyString is the key as a field name in an answer; "" for the empty key.
func (s *keyScanner) keyString(k key) string {
	if k.start == k.end {
		return `""`
	}
	return string(s.name(k))
}

type keyScanner struct {
	data []byte
	i    int
	// keys holds the keys of every object open on the way down; each
	// object owns the tail it appended.
	keys []key
	// unescaped holds the keys that had an escape, unescaped.
	unescaped []byte
	// path is built on the way back up once a repeat is found: ".key"
	// and "[index]" elements.
	path []string
}

func (s *keyScanner) skipSpace() { s.i = skipJSONSpace(s.data, s.i) }

// skipJSONSpace returns the index of the first byte from i on that is not
// JSON whitespace.
func skipJSONSpace(data []byte, i int) int {
	if i < len(data) && data[i] > ' ' {
		return i // compact JSON: no space to skip
	}
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
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
		s.skipValueString()
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

// byteClass sorts the bytes of a JSON string: most are plain.
var byteClass = func() (c [256]byte) {
	c['"'], c['\\'] = classQuote, classEscape
	for b := utf8.RuneSelf; b < 256; b++ {
		c[b] = classNonASCII
	}
	return c
}()

const (
	classPlain = iota
	classQuote
	classEscape
	classNonASCII
)

// skipString moves past a key whose opening quote is at s.i and returns
// its raw contents and whether they are plain ASCII without an escape.
// Keys are short: a byte loop beats bytes.IndexByte.
func (s *keyScanner) skipString() (raw []byte, plain bool) {
	s.i++
	start := s.i
	plain = true
	for s.i < len(s.data) {
		switch byteClass[s.data[s.i]] {
		case classPlain:
			s.i++
		case classQuote:
			s.i++
			return s.data[start : s.i-1], plain
		case classEscape:
			plain = false
			s.i += 2
		default:
			plain = false
			s.i++
		}
	}
	s.i = len(s.data) // past an escape at the very end
	return s.data[start:], false
}

// skipValueString moves past a string value whose opening quote is at
// s.i. Values are longer than keys and their contents do not matter:
// bytes.IndexByte finds each quote, and a quote after an odd number of
// backslashes is escaped.
func (s *keyScanner) skipValueString() {
	s.i++
	start := s.i
	for {
		q := bytes.IndexByte(s.data[s.i:], '"')
		if q < 0 {
			s.i = len(s.data)
			return
		}
		s.i += q + 1
		backslashes := 0
		for j := s.i - 2; j >= start && s.data[j] == '\\'; j-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return
		}
	}
}

func (s *keyScanner) readKey() key {
	start := s.i + 1
	raw, plain := s.skipString()
	k := key{start: start, end: start + len(raw), ascii: plain}
	if !plain && bytes.IndexByte(raw, '\\') >= 0 {
		var name string
		quoted := append(append([]byte{'"'}, raw...), '"')
		if json.Unmarshal(quoted, &name) == nil {
			k = key{start: len(s.unescaped), end: len(s.unescaped) + len(name), escaped: true}
			s.unescaped = append(s.unescaped, name...)
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
			if s.matches(prev, k) {
				s.path = []string{"." + s.keyString(k)}
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
			s.path = append([]string{"." + s.keyString(k)}, s.path...)
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
