package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// Limits on what one request may carry.
const (
	MaxBodyBytes     = 4 << 20
	MaxRecords       = 10000
	maxIDLen         = 200
	maxCustomerLen   = 256
	maxCommentBytes  = 4000
	maxSegmentLen    = 64
	maxSeconds       = 30 * 24 * 3600 // a wait or a handling time of more than 30 days is a unit mistake
	futureTolerance  = 5 * time.Minute
	maxEmailLen      = 254
	maxPhoneLen      = 32
	recordIndexWhole = -1
)

// inputError is a 4xx answer: which record, which field, why.
type inputError struct {
	status int
	Index  int    `json:"index"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

func (e *inputError) Error() string {
	var b strings.Builder
	if e.Index >= 0 {
		fmt.Fprintf(&b, "record %d: ", e.Index)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

func badRecord(i int, field, format string, args ...any) *inputError {
	return &inputError{status: 400, Index: i, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// splitRecords accepts one JSON object, a JSON array of objects, or
// newline-delimited objects, and returns each record's bytes.
func splitRecords(body []byte) ([]json.RawMessage, *inputError) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, badRecord(recordIndexWhole, "", "empty body: send a JSON object, a JSON array or NDJSON")
	}
	var out []json.RawMessage
	switch trimmed[0] {
	case '[':
		if err := json.Unmarshal(trimmed, &out); err != nil {
			return nil, badRecord(recordIndexWhole, "", "malformed JSON array: %s", jsonReason(err))
		}
		if len(out) == 0 {
			return nil, badRecord(recordIndexWhole, "", "empty array: no records")
		}
	case '{':
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, badRecord(len(out), "", "malformed JSON: %s", jsonReason(err))
			}
			out = append(out, raw)
			if len(out) > MaxRecords {
				break
			}
		}
	default:
		return nil, badRecord(recordIndexWhole, "", "body must be a JSON object, a JSON array of objects or NDJSON")
	}
	if len(out) > MaxRecords {
		return nil, &inputError{status: 413, Index: recordIndexWhole, Reason: fmt.Sprintf("more than %d records in one request", MaxRecords)}
	}
	return out, nil
}

// validateAll decodes a request body into records of type T and validates
// each. Bodies that decode cleanly (nearly all) are read in one pass by one
// decoder; any other body is split into its records and each is decoded
// alone, so that the answer names the first bad record and its field
// exactly as it always has. plain, when given, is tried first: a decoder
// of the plainest bodies that gives what decodeStream would.
func validateAll[T any](body []byte, plain func([]byte) ([]*T, bool), validate func(i int, in *T) (store.Record, *inputError)) ([]store.Record, *inputError) {
	var ins []*T
	ok := false
	if plain != nil {
		ins, ok = plain(body) // it refuses repeated keys itself
	}
	if !ok {
		if ins, ok = decodeStream[T](body); ok {
			// The decoder keeps the last of two equal keys without a word;
			// a body that repeats one takes the per-record path, which
			// names the record and the key.
			_, repeated := repeatedKey(body)
			ok = !repeated
		}
	}
	var raws []json.RawMessage
	if !ok {
		var ierr *inputError
		if raws, ierr = splitRecords(body); ierr != nil {
			return nil, ierr
		}
	}
	n := max(len(ins), len(raws))
	records := make([]store.Record, n)
	for i := range n {
		var in *T
		if ok {
			in = ins[i]
		} else {
			in = new(T)
			if err := decodeStrict(i, raws[i], in); err != nil {
				return nil, err
			}
		}
		rec, err := validate(i, in)
		if err != nil {
			return nil, err
		}
		records[i] = rec
	}
	return records, nil
}

// decodeStream decodes a body of valid UTF-8 holding one object, an array
// of objects or NDJSON, refusing unknown fields, in one pass. It reports
// false for anything else, including a body splitRecords and decodeStrict
// would accept but this does not, which then takes their slower path.
func decodeStream[T any](body []byte) ([]*T, bool) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || !utf8.Valid(trimmed) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	array := trimmed[0] == '['
	if array {
		if _, err := dec.Token(); err != nil {
			return nil, false
		}
	} else if trimmed[0] != '{' {
		return nil, false
	}
	var out []*T
	for len(out) <= MaxRecords {
		if array && !dec.More() {
			if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
				return nil, false
			}
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				return nil, false
			}
			return out, len(out) > 0
		}
		var in *T // stays nil for a JSON null, which is not a record
		if err := dec.Decode(&in); err != nil {
			return out, !array && errors.Is(err, io.EOF) && len(out) > 0
		}
		if in == nil {
			return nil, false
		}
		out = append(out, in)
	}
	return nil, false
}

// decodeStrict decodes one record, refusing unknown fields, repeated keys
// and trailing data.
func decodeStrict(i int, raw json.RawMessage, v any) *inputError {
	if !utf8.Valid(raw) {
		return badRecord(i, "", "not valid UTF-8")
	}
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return badRecord(i, "", "must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if strings.HasPrefix(te.Value, "number ") && (te.Type.Kind() == reflect.Float64 || te.Type.Kind() == reflect.Float32) {
				return badRecord(i, field, "number %s is out of range", strings.TrimPrefix(te.Value, "number "))
			}
			return badRecord(i, field, "must be %s, not %s", typeName(te.Type.String()), te.Value)
		}
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return badRecord(i, strings.Trim(f, `"`), "unknown field")
		}
		return badRecord(i, "", "malformed JSON: %s", jsonReason(err))
	}
	if path, repeated := repeatedKey(raw); repeated {
		return badRecord(i, path, repeatedKeyReason)
	}
	return nil
}

// repeatedKeyReason is the answer to a key given twice in one object.
const repeatedKeyReason = "repeated key: an object may give each key once (keys match as in encoding/json, case-insensitively)"

func typeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "a string"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	default:
		return "an object"
	}
}

func jsonReason(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}

type contactIn struct {
	Email *string `json:"email,omitempty"`
	Phone *string `json:"phone,omitempty"`
}

// eventIn is an interaction as posted to /v1/events.
type eventIn struct {
	ID            *string    `json:"id,omitempty"`
	Touchpoint    *string    `json:"touchpoint,omitempty"`
	Customer      *string    `json:"customer,omitempty"`
	Time          *string    `json:"time,omitempty"`
	WaitSeconds   *float64   `json:"waitSeconds,omitempty"`
	Resolved      *bool      `json:"resolved,omitempty"`
	HandleSeconds *float64   `json:"handleSeconds,omitempty"`
	Segment       *string    `json:"segment,omitempty"`
	Contact       *contactIn `json:"contact,omitempty"`
}

// responseIn is a survey answer as posted to /v1/responses.
type responseIn struct {
	ID       *string  `json:"id,omitempty"`
	Survey   *string  `json:"survey,omitempty"`
	Customer *string  `json:"customer,omitempty"`
	Score    *float64 `json:"score,omitempty"`
	Comment  *string  `json:"comment,omitempty"`
	Time     *string  `json:"time,omitempty"`
}

// validator holds what one request is checked against.
type validator struct {
	cfg        *settings
	now        time.Time
	authorized func(subject string) bool
	seen       map[string]int
	// customerAsStored: the records' customers are already as stored
	// (the survey page's, from an invitation), not to be pseudonymised
	// again.
	customerAsStored bool
}

func (v *validator) text(i int, field string, p *string, required bool, maxLen int) (string, *inputError) {
	if p == nil {
		if required {
			return "", badRecord(i, field, "is required")
		}
		return "", nil
	}
	s := *p
	if required && s == "" {
		return "", badRecord(i, field, "must not be empty")
	}
	if len(s) > maxLen {
		return "", badRecord(i, field, "longer than %d bytes", maxLen)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "", badRecord(i, field, "contains a control character")
		}
	}
	return s, nil
}

// contact checks the contact fields that travel to survey invitations, the
// same for an interaction and for a wave's audience.
func (v *validator) contact(i int, email, phone *string) *inputError {
	if _, err := v.text(i, "contact.email", email, false, maxEmailLen); err != nil {
		return err
	}
	if email != nil && !strings.Contains(*email, "@") {
		return badRecord(i, "contact.email", "is not an email address")
	}
	_, err := v.text(i, "contact.phone", phone, false, maxPhoneLen)
	return err
}

func (v *validator) id(i int, p *string) (string, *inputError) {
	id, err := v.text(i, "id", p, true, maxIDLen)
	if err != nil {
		return "", err
	}
	if first, dup := v.seen[id]; dup {
		return "", badRecord(i, "id", "repeats the id of record %d", first)
	}
	v.seen[id] = i
	return id, nil
}

func (v *validator) time(i int, p *string) (time.Time, *inputError) {
	if p == nil {
		return v.now, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *p)
	if err != nil {
		return time.Time{}, badRecord(i, "time", "%q is not an RFC 3339 time such as 2026-11-23T10:00:00Z", *p)
	}
	if t.After(v.now.Add(futureTolerance)) {
		return time.Time{}, badRecord(i, "time", "%s is more than %s in the future", *p, futureTolerance)
	}
	if t.Before(v.now.Add(-v.cfg.retention)) {
		return time.Time{}, badRecord(i, "time", "%s is older than the retention of %s", *p, formatDuration(v.cfg.retention))
	}
	return t.UTC(), nil
}

func seconds(i int, field string, p *float64) (float64, *inputError) {
	s := *p
	if math.IsNaN(s) || math.IsInf(s, 0) || s < 0 || s > maxSeconds {
		return 0, badRecord(i, field, "must be a number of seconds between 0 and %d", maxSeconds)
	}
	return s, nil
}

// eventOut is how an event is stored and exported. Its contact is not:
// it is stored apart (store.Record.Contact) and pruned contactRetention
// after it came. Records stored before that keep theirs in this JSON,
// after the other fields, until they expire.
type eventOut struct {
	ID            string   `json:"id"`
	Touchpoint    string   `json:"touchpoint"`
	Customer      string   `json:"customer"`
	Time          string   `json:"time"`
	WaitSeconds   *float64 `json:"waitSeconds,omitempty"`
	Resolved      *bool    `json:"resolved,omitempty"`
	HandleSeconds *float64 `json:"handleSeconds,omitempty"`
	Segment       string   `json:"segment,omitempty"`
}

func (v *validator) event(i int, in *eventIn) (store.Record, *inputError) {
	id, err := v.id(i, in.ID)
	if err != nil {
		return store.Record{}, err
	}
	name, err := v.text(i, "touchpoint", in.Touchpoint, true, 63)
	if err != nil {
		return store.Record{}, err
	}
	tp, ok := v.cfg.touchpoints[name]
	if !ok {
		return store.Record{}, badRecord(i, "touchpoint", "unknown touchpoint %q", name)
	}
	if !v.authorized(name) {
		return store.Record{}, &inputError{status: 403, Index: i, Field: "touchpoint", Reason: fmt.Sprintf("the token may not write to touchpoint %q", name)}
	}
	customer, err := v.text(i, "customer", in.Customer, true, maxCustomerLen)
	if err != nil {
		return store.Record{}, err
	}
	customer = v.storedCustomer(customer)
	at, err := v.time(i, in.Time)
	if err != nil {
		return store.Record{}, err
	}
	out := eventOut{ID: id, Touchpoint: name, Customer: customer, Time: at.Format(time.RFC3339Nano), Resolved: in.Resolved}
	e := rollup.Event{Time: at.UnixNano(), CustomerHash: xxhash.Sum64String(customer)}
	if in.WaitSeconds != nil {
		w, err := seconds(i, "waitSeconds", in.WaitSeconds)
		if err != nil {
			return store.Record{}, err
		}
		out.WaitSeconds = &w
		e.HasWait, e.WaitSeconds = true, w
		if tp.threshold > 0 && tp.calendar.open(at) {
			e.Assessed = true
			e.Compliant = w <= tp.threshold.Seconds()
		}
	}
	if in.HandleSeconds != nil {
		h, err := seconds(i, "handleSeconds", in.HandleSeconds)
		if err != nil {
			return store.Record{}, err
		}
		out.HandleSeconds = &h
	}
	if in.Resolved != nil {
		e.HasResolved, e.Resolved = true, *in.Resolved
	}
	if out.Segment, err = v.text(i, "segment", in.Segment, false, maxSegmentLen); err != nil {
		return store.Record{}, err
	}
	var contact []byte
	if in.Contact != nil {
		if err := v.contact(i, in.Contact.Email, in.Contact.Phone); err != nil {
			return store.Record{}, err
		}
		var cerr error
		if contact, cerr = json.Marshal(in.Contact); cerr != nil {
			return store.Record{}, badRecord(i, "contact", "cannot encode: %v", cerr)
		}
	}
	js := out.appendJSON(make([]byte, 0, 128+len(out.ID)+len(out.Customer)+len(out.Segment)))
	return store.Record{Kind: rollup.KindTouchpoint, Subject: name, ID: id, JSON: js, Contact: contact, Event: e,
		Fingerprint: fingerprintWithContact(js, contact, in.Time == nil), SkipFeed: !tp.triggers}, nil
}

// responseOut is how an answer is stored and exported.
type responseOut struct {
	ID       string `json:"id"`
	Survey   string `json:"survey"`
	Customer string `json:"customer"`
	Score    int    `json:"score"`
	Comment  string `json:"comment,omitempty"`
	Time     string `json:"time"`
}

func (v *validator) response(i int, in *responseIn) (store.Record, *inputError) {
	id, err := v.id(i, in.ID)
	if err != nil {
		return store.Record{}, err
	}
	name, err := v.text(i, "survey", in.Survey, true, 63)
	if err != nil {
		return store.Record{}, err
	}
	sv, ok := v.cfg.surveys[name]
	if !ok {
		return store.Record{}, badRecord(i, "survey", "unknown survey %q", name)
	}
	if !v.authorized(name) {
		return store.Record{}, &inputError{status: 403, Index: i, Field: "survey", Reason: fmt.Sprintf("the token may not answer survey %q", name)}
	}
	customer, err := v.text(i, "customer", in.Customer, true, maxCustomerLen)
	if err != nil {
		return store.Record{}, err
	}
	customer = v.storedCustomer(customer)
	if in.Score == nil {
		return store.Record{}, badRecord(i, "score", "is required")
	}
	lo, hi := sv.kind.Range()
	s := *in.Score
	if s != math.Trunc(s) || s < float64(lo) || s > float64(hi) {
		return store.Record{}, badRecord(i, "score", "must be a whole number from %d to %d for a %s survey", lo, hi, sv.kind)
	}
	comment := ""
	if in.Comment != nil {
		comment = *in.Comment
		if len(comment) > maxCommentBytes {
			return store.Record{}, badRecord(i, "comment", "longer than %d bytes", maxCommentBytes)
		}
		for _, r := range comment {
			if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
				return store.Record{}, badRecord(i, "comment", "contains a control character")
			}
		}
	}
	at, err := v.time(i, in.Time)
	if err != nil {
		return store.Record{}, err
	}
	out := responseOut{ID: id, Survey: name, Customer: customer, Score: int(s), Comment: comment, Time: at.Format(time.RFC3339Nano)}
	js := out.appendJSON(make([]byte, 0, 128+len(out.ID)+len(out.Customer)+len(out.Comment)))
	return store.Record{Kind: rollup.KindSurvey, Subject: name, ID: id, JSON: js, Fingerprint: fingerprint(js, in.Time == nil),
		Response: rollup.Response{Time: at.UnixNano(), CustomerHash: xxhash.Sum64String(customer), Score: int(s)},
		SkipFeed: sv.invite.DetractorWebhook == nil}, nil // the survey engine reads answers for the closed loop alone
}

// timeKey is how a record's time starts in its normalised JSON. A quote
// inside a string value is escaped, so these bytes occur only as the key.
var timeKey = []byte(`"time":"`)

// fingerprint identifies what the client sent: the record's normalised
// JSON (so key order, spacing and number spelling do not matter), without
// the time when the server filled it in. A retry of a record sent without
// a time gets a later time, yet is the same payload and so a duplicate;
// the same id with anything else different is a conflict. It is never 0,
// which the store reads as unknown.
func fingerprint(js []byte, timeFilled bool) uint64 {
	return fingerprintWithContact(js, nil, timeFilled)
}

// fingerprintWithContact is the fingerprint of an event's JSON with its
// contact (nil for none) put back as it was stored when the contact was
// part of the record (its last field): a retry with another contact is
// still another payload, and the fingerprints of ids stored before the
// contact moved out stay the same.
func fingerprintWithContact(js, contact []byte, timeFilled bool) uint64 {
	var d xxhash.Digest
	d.Reset()
	body := js
	if contact != nil {
		body = js[:len(js)-1] // without its closing brace
	}
	if i := bytes.Index(body, timeKey); timeFilled && i >= 0 {
		start := i + len(timeKey)
		end := start + bytes.IndexByte(body[start:], '"')
		_, _ = d.Write(body[:start])
		_, _ = d.Write(body[end:])
	} else {
		_, _ = d.Write(body)
	}
	if contact != nil {
		_, _ = d.WriteString(`,"contact":`)
		_, _ = d.Write(contact)
		_, _ = d.WriteString("}")
	}
	return max(d.Sum64(), 1)
}

func formatDuration(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
