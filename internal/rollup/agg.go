// Package rollup holds the collector's time-bucketed aggregates: exact
// counts for scores and wait-time compliance, a DDSketch for wait
// percentiles and a HyperLogLog for distinct customers, per touchpoint and
// per survey, at minute, hour and day resolution. A window is answered by
// merging the few buckets that tile it, never by scanning raw records.
package rollup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"
)

// RelativeAccuracy is the DDSketch guarantee on wait percentiles: a
// reported quantile is within 1% of the true value at that rank.
const RelativeAccuracy = 0.01

// waitMapping is shared by every sketch so merges never need a remap and
// encoded sketches can omit it.
var waitMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic(err)
	}
	return m
}()

func newWaitSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(waitMapping, store.NewDenseStore(), store.NewDenseStore())
}

// newCustomerSketch uses precision 14 (0.8% standard error once dense);
// below a few thousand customers the sparse form is close to exact.
func newCustomerSketch() *hyperloglog.Sketch { return hyperloglog.New14() }

// Event is what an interaction contributes to a touchpoint's aggregates.
type Event struct {
	Time         int64   // unix nanoseconds
	CustomerHash uint64  // hash of the customer id, for distinct counts
	HasWait      bool    // the event carried waitSeconds
	WaitSeconds  float64 // valid when HasWait
	Assessed     bool    // the wait counts toward compliance (threshold set, within business hours)
	Compliant    bool    // assessed and at or under the threshold
	HasResolved  bool    // the event carried resolved
	Resolved     bool
}

// Response is what a survey answer contributes to a survey's aggregates.
type Response struct {
	Time         int64
	CustomerHash uint64
	Score        int // 0..10; the survey type bounds it further
}

// Touchpoint aggregates interactions at one touchpoint.
type Touchpoint struct {
	Interactions  uint64
	Waits         uint64
	Assessed      uint64
	Compliant     uint64
	ResolvedKnown uint64
	Resolved      uint64
	Last          int64 // latest event time, unix nanoseconds; 0 when empty
	Wait          *ddsketch.DDSketch
	Customers     *hyperloglog.Sketch
}

// NewTouchpoint returns an empty touchpoint aggregate.
func NewTouchpoint() *Touchpoint {
	return &Touchpoint{Wait: newWaitSketch(), Customers: newCustomerSketch()}
}

// Add counts one event.
func (a *Touchpoint) Add(e *Event) {
	a.Interactions++
	if e.HasWait {
		a.Waits++
		// Values past the sketch's range cannot occur: ingest caps waits.
		_ = a.Wait.Add(e.WaitSeconds)
	}
	if e.Assessed {
		a.Assessed++
		if e.Compliant {
			a.Compliant++
		}
	}
	if e.HasResolved {
		a.ResolvedKnown++
		if e.Resolved {
			a.Resolved++
		}
	}
	a.Customers.InsertHash(e.CustomerHash)
	a.Last = max(a.Last, e.Time)
}

// Merge adds b into a.
func (a *Touchpoint) Merge(b *Touchpoint) error {
	a.Interactions += b.Interactions
	a.Waits += b.Waits
	a.Assessed += b.Assessed
	a.Compliant += b.Compliant
	a.ResolvedKnown += b.ResolvedKnown
	a.Resolved += b.Resolved
	a.Last = max(a.Last, b.Last)
	if err := a.Wait.MergeWith(b.Wait); err != nil {
		return fmt.Errorf("merge wait sketch: %w", err)
	}
	if err := a.Customers.Merge(b.Customers); err != nil {
		return fmt.Errorf("merge customer sketch: %w", err)
	}
	return nil
}

// WaitQuantile returns the wait at quantile q (0..1) and false when no
// wait was recorded.
func (a *Touchpoint) WaitQuantile(q float64) (float64, bool) {
	if a.Wait.IsEmpty() {
		return 0, false
	}
	v, err := a.Wait.GetValueAtQuantile(q)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// Survey aggregates answers to one survey.
type Survey struct {
	Counts    [11]uint64 // Counts[s] answers with score s
	Last      int64
	Customers *hyperloglog.Sketch
}

// NewSurvey returns an empty survey aggregate.
func NewSurvey() *Survey { return &Survey{Customers: newCustomerSketch()} }

// Add counts one answer.
func (a *Survey) Add(r *Response) {
	a.Counts[r.Score]++
	a.Customers.InsertHash(r.CustomerHash)
	a.Last = max(a.Last, r.Time)
}

// Merge adds b into a.
func (a *Survey) Merge(b *Survey) error {
	for i := range a.Counts {
		a.Counts[i] += b.Counts[i]
	}
	a.Last = max(a.Last, b.Last)
	if err := a.Customers.Merge(b.Customers); err != nil {
		return fmt.Errorf("merge customer sketch: %w", err)
	}
	return nil
}

// Responses is the number of answers counted.
func (a *Survey) Responses() uint64 {
	var n uint64
	for _, c := range a.Counts {
		n += c
	}
	return n
}

// Encoding: a version byte, fixed-width counters, then length-prefixed
// sketches. Versioned so a later layout can still read checkpoints.
const (
	touchpointV1 = 1
	surveyV1     = 1
)

var errShort = errors.New("truncated aggregate")

// MarshalBinary encodes the aggregate for a checkpoint.
func (a *Touchpoint) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 128)
	b = append(b, touchpointV1)
	for _, v := range []uint64{a.Interactions, a.Waits, a.Assessed, a.Compliant, a.ResolvedKnown, a.Resolved, uint64(a.Last)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	var sk []byte
	a.Wait.Encode(&sk, true)
	b = binary.AppendUvarint(b, uint64(len(sk)))
	b = append(b, sk...)
	hll, err := a.Customers.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode customer sketch: %w", err)
	}
	return append(b, hll...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (a *Touchpoint) UnmarshalBinary(b []byte) error {
	if len(b) < 1+7*8 || b[0] != touchpointV1 {
		return fmt.Errorf("touchpoint aggregate: %w or unknown version", errShort)
	}
	b = b[1:]
	fields := []*uint64{&a.Interactions, &a.Waits, &a.Assessed, &a.Compliant, &a.ResolvedKnown, &a.Resolved}
	for _, f := range fields {
		*f = binary.BigEndian.Uint64(b)
		b = b[8:]
	}
	a.Last = int64(binary.BigEndian.Uint64(b))
	b = b[8:]
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return fmt.Errorf("touchpoint aggregate: %w", errShort)
	}
	sk, err := ddsketch.DecodeDDSketch(b[k:k+int(n)], store.DefaultProvider, waitMapping)
	if err != nil {
		return fmt.Errorf("decode wait sketch: %w", err)
	}
	a.Wait = sk
	a.Customers = newCustomerSketch()
	if err := a.Customers.UnmarshalBinary(b[k+int(n):]); err != nil {
		return fmt.Errorf("decode customer sketch: %w", err)
	}
	return nil
}

// MarshalBinary encodes the aggregate for a checkpoint.
func (a *Survey) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 128)
	b = append(b, surveyV1)
	for _, c := range a.Counts {
		b = binary.BigEndian.AppendUint64(b, c)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(a.Last))
	hll, err := a.Customers.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode customer sketch: %w", err)
	}
	return append(b, hll...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (a *Survey) UnmarshalBinary(b []byte) error {
	if len(b) < 1+12*8 || b[0] != surveyV1 {
		return fmt.Errorf("survey aggregate: %w or unknown version", errShort)
	}
	b = b[1:]
	for i := range a.Counts {
		a.Counts[i] = binary.BigEndian.Uint64(b)
		b = b[8:]
	}
	a.Last = int64(binary.BigEndian.Uint64(b))
	a.Customers = newCustomerSketch()
	if err := a.Customers.UnmarshalBinary(b[8:]); err != nil {
		return fmt.Errorf("decode customer sketch: %w", err)
	}
	return nil
}
