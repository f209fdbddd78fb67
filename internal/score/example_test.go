package score_test

import (
	"fmt"

	"github.com/cxop-dev/cxop/internal/score"
)

func ExampleCompute() {
	// Answers by score 0..10: three 10s, three 9s, an 8, a 7, a 6 and a 0.
	r, err := score.Compute(score.NPS, []uint64{1, 0, 0, 0, 0, 0, 1, 1, 1, 3, 3})
	if err != nil {
		panic(err)
	}
	fmt.Printf("NPS %.1f [%.1f, %.1f] from %d answers, %d to follow up\n", r.Value, r.Lower, r.Upper, r.N, r.Unhappy)
	// Output: NPS 40.0 [-9.6, 89.6] from 10 answers, 2 to follow up
}

func ExampleCompute_allPromoters() {
	// Every answer a promoter: the sample has no spread, so the interval
	// has zero width. Gate decisions on a minimum sample size as well.
	r, _ := score.Compute(score.NPS, []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3})
	fmt.Printf("NPS %.0f [%.0f, %.0f] n=%d\n", r.Value, r.Lower, r.Upper, r.N)
	// Output: NPS 100 [100, 100] n=5
}

func ExampleCompute_noData() {
	r, _ := score.Compute(score.CSAT, make([]uint64, 11))
	if r.N == 0 {
		fmt.Println("no data")
	}
	// Output: no data
}

func ExampleWilson() {
	lower, upper := score.Wilson(85, 100, score.Z95)
	fmt.Printf("CSAT 85%% [%.1f%%, %.1f%%]\n", 100*lower, 100*upper)
	// Output: CSAT 85% [76.7%, 90.7%]
}

func ExampleRatio() {
	if _, ok := score.Ratio(0, 0); !ok {
		fmt.Println("no waits yet")
	}
	v, _ := score.Ratio(19, 20)
	fmt.Printf("%.1f%% compliant\n", 100*v)
	// Output:
	// no waits yet
	// 95.0% compliant
}
