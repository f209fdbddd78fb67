package sample

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestInIsDeterministicAndNearThePercent(t *testing.T) {
	for _, percent := range []float64{0, 1, 12.5, 30, 50, 99, 100} {
		in := 0
		for i := range 10_000 {
			customer := fmt.Sprintf("customer-%d", i)
			got := In("support-nps", customer, percent)
			if got != In("support-nps", customer, percent) {
				t.Fatalf("%s: two answers for the same customer", customer)
			}
			if got {
				in++
			}
		}
		share := float64(in) / 100
		if math.Abs(share-percent) > 2 {
			t.Errorf("samplePercent %v: %.2f%% of 10,000 customers sampled, want within 2 points", percent, share)
		}
	}
}

func TestInKeepsTheSampleWhenThePercentGrows(t *testing.T) {
	for i := range 10_000 {
		c := fmt.Sprintf("c%d", i)
		if In("s", c, 20) && !In("s", c, 30) {
			t.Fatalf("%s is in the 20%% sample but not the 30%% one", c)
		}
	}
}

func TestInDiffersBetweenSurveys(t *testing.T) {
	both := 0
	for i := range 10_000 {
		c := fmt.Sprintf("c%d", i)
		if In("a", c, 50) && In("b", c, 50) {
			both++
		}
	}
	// Independent halves overlap on a quarter; the same half would be 50%.
	if both < 2300 || both > 2700 {
		t.Errorf("%d of 10,000 customers in both 50%% samples, want about 2,500", both)
	}
}

func TestThrottled(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name                   string
		last                   time.Time
		lastThrottle, throttle time.Duration
		want                   bool
	}{
		{"never invited", time.Time{}, 0, 30 * day, false},
		{"within its own throttle", now.Add(-10 * day), 0, 30 * day, true},
		{"exactly at the throttle", now.Add(-30 * day), 0, 30 * day, false},
		{"within the other survey's longer throttle", now.Add(-40 * day), 90 * day, 30 * day, true},
		{"past both", now.Add(-91 * day), 90 * day, 30 * day, false},
		{"no throttle anywhere", now.Add(-time.Minute), 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Throttled(tc.last, tc.lastThrottle, tc.throttle, now); got != tc.want {
				t.Errorf("Throttled = %v, want %v", got, tc.want)
			}
		})
	}
}
