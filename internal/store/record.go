package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cxop-dev/cxop/internal/rollup"
)

// Record is one interaction event or survey answer, as the collector
// validated it: the raw JSON kept for export, and what it adds to the
// rollups, decided at ingest (compliance uses the threshold and business
// hours in force then), so a replay counts it exactly as the first time.
type Record struct {
	Kind    rollup.Kind
	Subject string // touchpoint or survey name
	ID      string // idempotency key, unique per kind and subject
	JSON    []byte // the record as exported: normalised JSON
	// Fingerprint identifies what the client sent under ID, so that a
	// retry (same fingerprint) is a duplicate and a reuse of the id for
	// another payload is a conflict. 0 means unknown: never a conflict.
	// It is kept with the id, not in the record's value.
	Fingerprint uint64
	// Contact is how the customer may be reached (an interaction's
	// contact, as JSON), nil for none. It is stored apart from the record,
	// in the same batch, under its own key with the commit time, so that
	// it expires long before the record (PruneContacts) and no export
	// carries it. Only ScanRecords reads it back.
	Contact []byte
	// ContactSince, when set (unix nanoseconds) and before the commit, is
	// when the contact was received: contactRetention counts from it
	// instead of from the commit. A copy from another store sets it, so
	// that a copied contact expires when it would have there.
	ContactSince int64
	// SkipFeed, on a store that hands records to the survey engine in a
	// feed (PostgreSQL), leaves the record out of it: nothing in the
	// accepting collector's config acts on it (no survey's trigger names
	// its touchpoint; its survey has no closed loop). Its contact is then
	// not stored at all. The embedded store's engine reads the record log
	// instead, skips it the same way, and ignores the field.
	SkipFeed bool

	Event    rollup.Event    // when Kind is KindTouchpoint
	Response rollup.Response // when Kind is KindSurvey
}

// Value layout of an 'r' key (version 1):
//
//	version(1) kind(1) flags(1) time(8) customerHash(8) wait(8, float64 bits) score(1)
//	len(subject) uvarint, subject, len(id) uvarint, id, JSON
const recordV1 = 1

const (
	flagHasWait = 1 << iota
	flagAssessed
	flagCompliant
	flagHasResolved
	flagResolved
)

// appendRecord appends r's value encoding to b.
func appendRecord(b []byte, r *Record) []byte {
	b = append(b, recordV1, byte(r.Kind))
	var flags byte
	var t int64
	var h uint64
	var wait float64
	var score byte
	switch r.Kind {
	case rollup.KindTouchpoint:
		e := &r.Event
		for _, f := range [...]struct {
			bit byte
			on  bool
		}{{flagHasWait, e.HasWait}, {flagAssessed, e.Assessed}, {flagCompliant, e.Compliant},
			{flagHasResolved, e.HasResolved}, {flagResolved, e.Resolved}} {
			if f.on {
				flags |= f.bit
			}
		}
		t, h, wait = e.Time, e.CustomerHash, e.WaitSeconds
	case rollup.KindSurvey:
		t, h, score = r.Response.Time, r.Response.CustomerHash, byte(r.Response.Score)
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	b = binary.BigEndian.AppendUint64(b, h)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(wait))
	b = append(b, score)
	b = binary.AppendUvarint(b, uint64(len(r.Subject)))
	b = append(b, r.Subject...)
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	return append(b, r.JSON...)
}

var errCorrupt = errors.New("corrupt record")

func decodeRecord(b []byte) (Record, error) {
	const fixed = 1 + 1 + 1 + 8 + 8 + 8 + 1
	if len(b) < fixed || b[0] != recordV1 {
		return Record{}, fmt.Errorf("%w: short or unknown version", errCorrupt)
	}
	r := Record{Kind: rollup.Kind(b[1])}
	flags := b[2]
	t := int64(binary.BigEndian.Uint64(b[3:]))
	h := binary.BigEndian.Uint64(b[11:])
	wait := math.Float64frombits(binary.BigEndian.Uint64(b[19:]))
	score := int(b[27])
	n, k := binary.Uvarint(b[fixed:])
	if k <= 0 || uint64(len(b)-fixed-k) < n {
		return Record{}, fmt.Errorf("%w: subject length", errCorrupt)
	}
	r.Subject = string(b[fixed+k : fixed+k+int(n)])
	rest := b[fixed+k+int(n):]
	n, k = binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < n {
		return Record{}, fmt.Errorf("%w: id length", errCorrupt)
	}
	r.ID = string(rest[k : k+int(n)])
	r.JSON = rest[k+int(n):]
	switch r.Kind {
	case rollup.KindTouchpoint:
		r.Event = rollup.Event{Time: t, CustomerHash: h, WaitSeconds: wait,
			HasWait: flags&flagHasWait != 0, Assessed: flags&flagAssessed != 0, Compliant: flags&flagCompliant != 0,
			HasResolved: flags&flagHasResolved != 0, Resolved: flags&flagResolved != 0}
	case rollup.KindSurvey:
		if score > 10 {
			return Record{}, fmt.Errorf("%w: score %d", errCorrupt, score)
		}
		r.Response = rollup.Response{Time: t, CustomerHash: h, Score: score}
	default:
		return Record{}, fmt.Errorf("%w: kind %q", errCorrupt, r.Kind)
	}
	return r, nil
}

// Time is the record's event time in unix nanoseconds.
func (r *Record) Time() int64 {
	if r.Kind == rollup.KindSurvey {
		return r.Response.Time
	}
	return r.Event.Time
}

// Keys.
const (
	prefixRecord = 'r' // 'r' seq(8)
	prefixID     = 'i' // 'i' kind subject 0x00 id -> seq(8)
	prefixMeta   = 'm'
	// 'c' seq(8) -> committed(8) contact: a record's contact, under the
	// record's sequence (contacts.go).
	prefixContact = 'c'
)

var keyCheckpoint = []byte("m/checkpoint")

func recordKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixRecord}, seq)
}

func idKey(buf []byte, kind rollup.Kind, subject, id string) []byte {
	buf = append(buf[:0], prefixID, byte(kind))
	buf = append(buf, subject...)
	buf = append(buf, 0)
	return append(buf, id...)
}
