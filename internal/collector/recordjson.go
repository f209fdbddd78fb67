package collector

import (
	"encoding/json"
	"math"
	"strconv"
)

// A stored record's JSON is its normalised form, and its fingerprint (what
// tells a retry from another payload under the same id) is a hash of those
// bytes. So these encoders must give exactly the bytes encoding/json's
// Marshal gives for eventOut and responseOut, for every value, or a retry
// of a record stored by an earlier version would be refused as a conflict.
// FuzzRecordJSONMatchesMarshal holds them to it. They exist because Marshal
// (reflection, and an encoder state per call) was a tenth of a collector's
// CPU under ingest.

// appendJSON appends e as json.Marshal encodes it.
func (e *eventOut) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"touchpoint":`...)
	b = appendJSONString(b, e.Touchpoint)
	b = append(b, `,"customer":`...)
	b = appendJSONString(b, e.Customer)
	b = append(b, `,"time":`...)
	b = appendJSONString(b, e.Time)
	if e.WaitSeconds != nil {
		b = append(b, `,"waitSeconds":`...)
		b = appendJSONFloat(b, *e.WaitSeconds)
	}
	if e.Resolved != nil {
		b = append(b, `,"resolved":`...)
		b = strconv.AppendBool(b, *e.Resolved)
	}
	if e.HandleSeconds != nil {
		b = append(b, `,"handleSeconds":`...)
		b = appendJSONFloat(b, *e.HandleSeconds)
	}
	if e.Segment != "" {
		b = append(b, `,"segment":`...)
		b = appendJSONString(b, e.Segment)
	}
	return append(b, '}')
}

// appendJSON appends r as json.Marshal encodes it.
func (r *responseOut) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, r.ID)
	b = append(b, `,"survey":`...)
	b = appendJSONString(b, r.Survey)
	b = append(b, `,"customer":`...)
	b = appendJSONString(b, r.Customer)
	b = append(b, `,"score":`...)
	b = strconv.AppendInt(b, int64(r.Score), 10)
	if r.Comment != "" {
		b = append(b, `,"comment":`...)
		b = appendJSONString(b, r.Comment)
	}
	b = append(b, `,"time":`...)
	b = appendJSONString(b, r.Time)
	return append(b, '}')
}

// appendJSONString appends s quoted as json.Marshal quotes it. Printable
// ASCII that needs no escape (Marshal also escapes <, > and &) is copied;
// anything else is left to Marshal itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONFloat appends f as json.Marshal encodes a float64: the
// shortest representation, in exponent form below 1e-6 and from 1e21 on,
// with a one-digit negative exponent unpadded. f is finite (ingest refuses
// the rest).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
