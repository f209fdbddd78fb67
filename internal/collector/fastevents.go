package collector

import (
	"strconv"
	"unicode/utf8"
)

// decodeEventsPlain reads the body nearly every event client sends: one
// event object or an array of them, each key spelled exactly as the API
// names it and given once, strings without escapes, numbers as JSON writes
// them. It gives exactly the events encoding/json would decode from such a
// body (FuzzIngestBody holds it to that) in one pass without reflection,
// and reports false for anything else, including every body encoding/json
// would refuse; those take decodeStream and the per-record path, which
// name what is wrong. It was about a fifth of a collector's CPU under
// ingest before.
func decodeEventsPlain(body []byte) ([]*eventIn, bool) {
	if !utf8.Valid(body) {
		return nil, false
	}
	d := plainDecoder{data: body}
	d.space()
	if d.i >= len(d.data) {
		return nil, false
	}
	var out []*eventIn
	if d.data[d.i] != '[' {
		in, ok := d.event()
		if !ok {
			return nil, false
		}
		out = append(out, in)
	} else {
		d.i++
		d.space()
		if d.peek() == ']' { // no records: the slow path says so
			return nil, false
		}
		out = make([]*eventIn, 0, 100)
		for {
			if len(out) == MaxRecords {
				return nil, false
			}
			d.space()
			in, ok := d.event()
			if !ok {
				return nil, false
			}
			out = append(out, in)
			d.space()
			c := d.next()
			if c == ']' {
				break
			}
			if c != ',' {
				return nil, false
			}
		}
	}
	d.space()
	return out, d.i == len(d.data)
}

type plainDecoder struct {
	data []byte
	i    int
}

func (d *plainDecoder) space() { d.i = skipJSONSpace(d.data, d.i) }

// peek is the next byte, 0 at the end.
func (d *plainDecoder) peek() byte {
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// next consumes the next byte, 0 at the end.
func (d *plainDecoder) next() byte {
	c := d.peek()
	d.i++
	return c
}

// object reads an object's members, calling member with the decoder at
// each key's value; a key given twice fails it.
func (d *plainDecoder) object(member func(key string) bool) bool {
	if d.next() != '{' {
		return false
	}
	d.space()
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		d.space()
		key, ok := d.string()
		if !ok {
			return false
		}
		d.space()
		if d.next() != ':' {
			return false
		}
		d.space()
		if !member(key) {
			return false
		}
		d.space()
		switch d.next() {
		case '}':
			return true
		case ',':
		default:
			return false
		}
	}
}

// event reads one event object.
func (d *plainDecoder) event() (*eventIn, bool) {
	in := &eventIn{}
	var seen keysSeen
	ok := d.object(func(key string) bool {
		switch key {
		case "id":
			return seen.first(0) && d.stringField(&in.ID)
		case "touchpoint":
			return seen.first(1) && d.stringField(&in.Touchpoint)
		case "customer":
			return seen.first(2) && d.stringField(&in.Customer)
		case "time":
			return seen.first(3) && d.stringField(&in.Time)
		case "waitSeconds":
			return seen.first(4) && d.numberField(&in.WaitSeconds)
		case "resolved":
			return seen.first(5) && d.boolField(&in.Resolved)
		case "handleSeconds":
			return seen.first(6) && d.numberField(&in.HandleSeconds)
		case "segment":
			return seen.first(7) && d.stringField(&in.Segment)
		case "contact":
			return seen.first(8) && d.contactField(&in.Contact)
		}
		return false // unknown, or known in another case: the slow path
	})
	return in, ok
}

// keysSeen marks an object's keys by their place in its struct.
type keysSeen uint16

// first marks key n and reports whether it was not marked before.
func (s *keysSeen) first(n uint) bool {
	bit := keysSeen(1) << n
	if *s&bit != 0 {
		return false
	}
	*s |= bit
	return true
}

func (d *plainDecoder) contactField(p **contactIn) bool {
	if d.null() {
		*p = nil
		return true
	}
	c := &contactIn{}
	var seen keysSeen
	ok := d.object(func(key string) bool {
		switch key {
		case "email":
			return seen.first(0) && d.stringField(&c.Email)
		case "phone":
			return seen.first(1) && d.stringField(&c.Phone)
		}
		return false
	})
	*p = c
	return ok
}

// null consumes a null literal if one is next.
func (d *plainDecoder) null() bool { return d.literal("null") }

// literal consumes lit if it is next.
func (d *plainDecoder) literal(lit string) bool {
	if len(d.data)-d.i >= len(lit) && string(d.data[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// string reads a string without escapes or control characters.
func (d *plainDecoder) string() (string, bool) {
	if d.next() != '"' {
		return "", false
	}
	start := d.i
	for d.i < len(d.data) {
		switch c := d.data[d.i]; {
		case c == '"':
			s := string(d.data[start:d.i])
			d.i++
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		}
		d.i++
	}
	return "", false
}

func (d *plainDecoder) stringField(p **string) bool {
	if d.null() {
		*p = nil
		return true
	}
	s, ok := d.string()
	*p = &s
	return ok
}

func (d *plainDecoder) boolField(p **bool) bool {
	var v bool
	switch {
	case d.null():
		*p = nil
		return true
	case d.literal("true"):
		v = true
	case d.literal("false"):
	default:
		return false
	}
	*p = &v
	return true
}

// numberField reads a JSON number as encoding/json reads one into a
// float64: its literal by strconv.ParseFloat, out of range refused.
func (d *plainDecoder) numberField(p **float64) bool {
	if d.null() {
		*p = nil
		return true
	}
	start := d.i
	if d.peek() == '-' {
		d.i++
	}
	switch c := d.peek(); {
	case c == '0':
		d.i++
	case c >= '1' && c <= '9':
		d.digits()
	default:
		return false
	}
	if d.peek() == '.' {
		d.i++
		if !d.digits() {
			return false
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		if !d.digits() {
			return false
		}
	}
	v, err := strconv.ParseFloat(string(d.data[start:d.i]), 64)
	if err != nil {
		return false
	}
	*p = &v
	return true
}

// digits consumes one or more digits.
func (d *plainDecoder) digits() bool {
	start := d.i
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}
