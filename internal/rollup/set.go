package rollup

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// Kind tells touchpoint series from survey series.
type Kind byte

// Kinds of series; the byte is part of checkpoint keys.
const (
	KindTouchpoint Kind = 'e' // interaction events
	KindSurvey     Kind = 'r' // survey responses
)

// Set is every series of a collector. It is safe for concurrent use: one
// writer applies committed records while readers answer summaries.
type Set struct {
	mu          sync.RWMutex
	retention   Retention
	touchpoints map[string]*Series[*Touchpoint]
	surveys     map[string]*Series[*Survey]
}

// NewSet returns an empty set.
func NewSet(r Retention) *Set {
	return &Set{retention: r, touchpoints: map[string]*Series[*Touchpoint]{}, surveys: map[string]*Series[*Survey]{}}
}

// Retention is the set's retention.
func (s *Set) Retention() Retention { return s.retention }

func (s *Set) touchpoint(name string) *Series[*Touchpoint] {
	ser, ok := s.touchpoints[name]
	if !ok {
		ser = newSeries(NewTouchpoint)
		s.touchpoints[name] = ser
	}
	return ser
}

func (s *Set) survey(name string) *Series[*Survey] {
	ser, ok := s.surveys[name]
	if !ok {
		ser = newSeries(NewSurvey)
		s.surveys[name] = ser
	}
	return ser
}

// Batch is what one commit adds; Apply takes the lock once for all of it.
type Batch struct {
	Events    []NamedEvent
	Responses []NamedResponse
}

// NamedEvent is an event and its touchpoint.
type NamedEvent struct {
	Touchpoint string
	Event
}

// NamedResponse is a response and its survey.
type NamedResponse struct {
	Survey string
	Response
}

// Apply counts a batch of committed records.
func (s *Set) Apply(b *Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range b.Events {
		e := &b.Events[i]
		s.touchpoint(e.Touchpoint).add(e.Time, func(a *Touchpoint) { a.Add(&e.Event) })
	}
	for i := range b.Responses {
		r := &b.Responses[i]
		s.survey(r.Survey).add(r.Time, func(a *Survey) { a.Add(&r.Response) })
	}
}

// TouchpointWindow merges the given touchpoints' buckets over
// [end-window, end). Unknown names contribute nothing.
func (s *Set) TouchpointWindow(names []string, window time.Duration, end, now time.Time) (*Touchpoint, Window, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.retention.horizons(now.UnixNano())
	e := alignUp(end.UnixNano(), Minute)
	out := NewTouchpoint()
	w := Window{}
	for i, name := range names {
		ser, ok := s.touchpoints[name]
		if !ok {
			ser = newSeries(NewTouchpoint)
		}
		a, win, err := ser.tile(e-int64(window), e, h)
		if err != nil {
			return nil, w, fmt.Errorf("touchpoint %s: %w", name, err)
		}
		if err := out.Merge(a); err != nil {
			return nil, w, fmt.Errorf("touchpoint %s: %w", name, err)
		}
		if i == 0 {
			w = win
		}
	}
	if len(names) == 0 {
		_, w, _ = newSeries(NewTouchpoint).tile(e-int64(window), e, h)
	}
	return out, w, nil
}

// SurveyWindow merges a survey's buckets over [end-window, end).
func (s *Set) SurveyWindow(name string, window time.Duration, end, now time.Time) (*Survey, Window, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.retention.horizons(now.UnixNano())
	e := alignUp(end.UnixNano(), Minute)
	ser, ok := s.surveys[name]
	if !ok {
		ser = newSeries(NewSurvey)
	}
	a, w, err := ser.tile(e-int64(window), e, h)
	if err != nil {
		return nil, w, fmt.Errorf("survey %s: %w", name, err)
	}
	return a, w, nil
}

// Names lists the touchpoints and surveys that have buckets.
func (s *Set) Names() (touchpoints, surveys []string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for n := range s.touchpoints {
		touchpoints = append(touchpoints, n)
	}
	for n := range s.surveys {
		surveys = append(surveys, n)
	}
	return touchpoints, surveys
}

// Checkpoint keys: 'a' kind name 0x00 resolution start(8, big endian).

// Entry is one bucket to write to, or delete from, a checkpoint.
type Entry struct {
	Key   []byte
	Value []byte // nil: delete the key
}

// KeyPrefix is the first byte of every checkpoint key.
const KeyPrefix = 'a'

func bucketKey(kind Kind, name string, k BucketKey) []byte {
	b := make([]byte, 0, 3+len(name)+1+8)
	b = append(b, KeyPrefix, byte(kind))
	b = append(b, name...)
	b = append(b, 0, byte(k.Res))
	return binary.BigEndian.AppendUint64(b, uint64(k.Start))
}

func parseBucketKey(key []byte) (Kind, string, BucketKey, error) {
	if len(key) < 2+1+1+8 || key[0] != KeyPrefix {
		return 0, "", BucketKey{}, fmt.Errorf("bad aggregate key %q", key)
	}
	rest := key[2 : len(key)-9]
	if len(rest) == 0 || key[len(key)-10] != 0 {
		return 0, "", BucketKey{}, fmt.Errorf("bad aggregate key %q", key)
	}
	name := string(key[2 : len(key)-10])
	res := Resolution(key[len(key)-9])
	if res >= numResolutions {
		return 0, "", BucketKey{}, fmt.Errorf("bad resolution in aggregate key %q", key)
	}
	start := int64(binary.BigEndian.Uint64(key[len(key)-8:]))
	return Kind(key[1]), name, BucketKey{res, start}, nil
}

// Flush returns the buckets changed since the last Flush, encoded, and
// deletions for the buckets that fell out of retention at now. The caller
// writes them in the same atomic batch as the sequence number they cover.
func (s *Set) Flush(now time.Time) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.retention.horizons(now.UnixNano())
	out, err := flushSeries(nil, KindTouchpoint, "touchpoint", s.touchpoints, h)
	if err != nil {
		return nil, err
	}
	return flushSeries(out, KindSurvey, "survey", s.surveys, h)
}

// flushSeries appends one kind's pruned and changed buckets to out and
// forgets series left empty.
func flushSeries[A aggregate[A]](out []Entry, kind Kind, what string, series map[string]*Series[A], h [numResolutions]int64) ([]Entry, error) {
	for name, ser := range series {
		for _, k := range ser.prune(h) {
			out = append(out, Entry{Key: bucketKey(kind, name, k)})
		}
		for k := range ser.dirty {
			v, err := ser.buckets[k.Res][k.Start].MarshalBinary()
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", what, name, err)
			}
			out = append(out, Entry{Key: bucketKey(kind, name, k), Value: v})
		}
		clear(ser.dirty)
		if ser.empty() {
			delete(series, name)
		}
	}
	return out, nil
}

// Load installs one checkpointed bucket.
func (s *Set) Load(key, value []byte) error {
	kind, name, k, err := parseBucketKey(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kind {
	case KindTouchpoint:
		a := &Touchpoint{}
		if err := a.UnmarshalBinary(value); err != nil {
			return fmt.Errorf("touchpoint %s %s bucket: %w", name, k.Res, err)
		}
		s.touchpoint(name).put(k, a)
	case KindSurvey:
		a := &Survey{}
		if err := a.UnmarshalBinary(value); err != nil {
			return fmt.Errorf("survey %s %s bucket: %w", name, k.Res, err)
		}
		s.survey(name).put(k, a)
	default:
		return fmt.Errorf("unknown aggregate kind %q", kind)
	}
	return nil
}
