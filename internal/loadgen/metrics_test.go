package loadgen

import (
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func histogram(count uint64, cumulative ...uint64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(count)}
	for i, c := range cumulative {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(float64(i + 1)), CumulativeCount: proto.Uint64(c)})
	}
	return h
}

func TestQuantileSinceCountsOnlyTheNewObservations(t *testing.T) {
	// Before: 100 observations, all in the first bucket. Since: 100 more,
	// 90 in bucket 1, 9 in bucket 2, 1 in bucket 3.
	before := Histograms{"x{}": histogram(100, 100, 100, 100)}
	after := Histograms{"x{}": histogram(200, 190, 199, 200)}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 1}, {0.9, 1}, {0.95, 2}, {0.99, 2}, {1, 3}} {
		got, n := QuantileSince(before, after, "x{}", c.q)
		if got != c.want || n != 100 {
			t.Errorf("q%v = %v over %d, want %v over 100", c.q, got, n, c.want)
		}
	}
	if got, _ := QuantileSince(nil, Histograms{"x{}": histogram(10, 5, 8, 9)}, "x{}", 1); !math.IsInf(got, 1) {
		t.Errorf("past the last bound: %v, want +Inf", got)
	}
	if got, n := QuantileSince(after, after, "x{}", 0.99); !math.IsNaN(got) || n != 0 {
		t.Errorf("nothing new: %v over %d, want NaN over 0", got, n)
	}
}
