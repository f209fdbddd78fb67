package collector

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/debug"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// The collector holds a request body in memory until its records are on
// disk. Without a bound, a few hundred slow uploads of 4 MiB each would
// hold gigabytes and get the pod OOM-killed, stopping ingest for everyone.
// So request bodies draw from one collector-wide budget of bytes as they
// arrive; a body that does not fit is refused with 503 and Retry-After.

// DefaultMaxInflightBytes is the budget when the process has no memory
// limit (GOMEMLIMIT) to derive it from.
const DefaultMaxInflightBytes = 64 << 20

// minInflightBytes lets at least two bodies of the largest size in: their
// growth may use bulkShare of the budget, so it is three of them.
const minInflightBytes = 3 * MaxBodyBytes

// smallBodyBytes is the part of every body that may use the whole
// budget. Growth past it may use only bulkShare of the budget, so that
// however many large uploads are in flight, small requests (nearly all
// real ones) still fit in the rest.
const (
	smallBodyBytes = 64 << 10
	bulkShare      = 0.75
)

// firstReadBytes is the buffer a body starts in; it doubles as data
// arrives, never sized from the declared Content-Length.
const firstReadBytes = 4 << 10

// MaxInflightBytesFor derives the budget from a memory limit: an eighth
// of it (the decoded records and their encoding take about as much
// again as the body, and the store's caches most of the rest), at least
// minInflightBytes. limit is math.MaxInt64 when there is none.
func MaxInflightBytesFor(limit int64) int64 {
	if limit <= 0 || limit == math.MaxInt64 {
		return DefaultMaxInflightBytes
	}
	return max(limit/8, minInflightBytes)
}

// defaultMaxInflightBytes is the budget for this process's GOMEMLIMIT,
// which the operator sets from the container's memory limit.
func defaultMaxInflightBytes() int64 { return MaxInflightBytesFor(debug.SetMemoryLimit(-1)) }

var errInflightFull = errors.New("in-flight request bytes over the limit")

// inflightBudget counts the request body bytes the collector holds.
type inflightBudget struct {
	limit atomic.Int64
	used  atomic.Int64
}

func newInflightBudget(reg prometheus.Registerer, limit int64) *inflightBudget {
	b := &inflightBudget{}
	b.limit.Store(limit)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cxop_collector_inflight_request_bytes",
			Help: "Bytes of request bodies the collector holds in memory until their records are stored.",
		}, func() float64 { return float64(b.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cxop_collector_inflight_request_bytes_limit",
			Help: "The limit on cxop_collector_inflight_request_bytes (--max-inflight-bytes); beyond it requests are refused with 503.",
		}, func() float64 { return float64(b.limit.Load()) }),
	)
	return b
}

// reserve takes n more bytes for a body that holds held already.
func (b *inflightBudget) reserve(held, n int64) bool {
	limit := b.limit.Load()
	if held+n > smallBodyBytes {
		limit = int64(float64(limit) * bulkShare)
	}
	for {
		cur := b.used.Load()
		if cur+n > limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (b *inflightBudget) release(n int64) { b.used.Add(-n) }

// heldBody is a request body in memory and its share of the budget.
type heldBody struct {
	data   []byte
	budget *inflightBudget
	held   int64
}

// Release returns the body's share of the budget; the body must not be
// used after it.
func (h *heldBody) Release() {
	if h.budget != nil {
		h.budget.release(h.held)
		h.budget, h.held, h.data = nil, 0, nil
	}
}

// readBody reads a request body of at most MaxBodyBytes. Its buffer
// starts small and doubles only once full, so memory follows the bytes
// that have arrived (at most twice them), whatever Content-Length
// declares; every growth is reserved from the budget first. It returns
// *http.MaxBytesError for a body too large, errInflightFull when the
// budget is spent, or the read error. The caller releases the body.
func (b *inflightBudget) readBody(w http.ResponseWriter, r *http.Request) (*heldBody, error) {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if r.ContentLength > MaxBodyBytes {
		// Refused on its declaration, before a byte is read.
		_ = r.Body.Close()
		return &heldBody{}, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	// A declared length caps the buffer (net/http ends the body there);
	// one byte past MaxBodyBytes lets the reader report a body too large.
	ceiling := int64(MaxBodyBytes + 1)
	if r.ContentLength >= 0 && r.ContentLength <= MaxBodyBytes {
		ceiling = r.ContentLength
	}
	h := &heldBody{budget: b}
	grow := func(size int64) error {
		if !b.reserve(h.held, size-int64(cap(h.data))) {
			return errInflightFull
		}
		h.held += size - int64(cap(h.data))
		next := make([]byte, len(h.data), size)
		copy(next, h.data)
		h.data = next
		return nil
	}
	if err := grow(max(min(firstReadBytes, ceiling), 1)); err != nil {
		return h, err
	}
	for {
		if len(h.data) == cap(h.data) {
			if int64(cap(h.data)) >= ceiling {
				// Full at the declared length: only the end may follow.
				var one [1]byte
				n, err := body.Read(one[:])
				if n == 0 && errors.Is(err, io.EOF) {
					return h, nil
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return h, err
				}
				return h, fmt.Errorf("body longer than its Content-Length of %d bytes", r.ContentLength)
			}
			if err := grow(min(2*int64(cap(h.data)), ceiling)); err != nil {
				return h, err
			}
		}
		n, err := body.Read(h.data[len(h.data):cap(h.data)])
		h.data = h.data[:len(h.data)+n]
		if errors.Is(err, io.EOF) {
			return h, nil
		}
		if err != nil {
			return h, err
		}
	}
}

// rejectBody answers a body readBody could not take.
func (s *Server) rejectBody(w http.ResponseWriter, endpoint string, err error, tooLarge string) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.reject(w, endpoint, "too_large", 413, errorBody{Error: tooLarge})
		return 413
	case errors.Is(err, errInflightFull):
		w.Header().Set("Retry-After", "2")
		limit := s.inflight.limit.Load()
		s.reject(w, endpoint, "in_flight_bytes", 503, errorBody{
			Error:  fmt.Sprintf("the collector holds its limit of %d bytes of request bodies in flight (--max-inflight-bytes); retry after 2s", limit),
			Reason: "in-flight request bytes over the limit",
		})
		return 503
	default:
		s.reject(w, endpoint, "invalid", 400, errorBody{Error: "reading body: " + err.Error()})
		return 400
	}
}
