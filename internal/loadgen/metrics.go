package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Histograms are the cumulative bucket counts of a /metrics scrape, keyed
// by family name and label pairs ("name{k=v,...}" with labels sorted as
// exposed). Two scrapes around a load run give the server's own view of
// it, without the client's scheduling on a shared machine.
type Histograms map[string]*dto.Histogram

// ScrapeHistograms reads every histogram a Prometheus text endpoint shows.
func ScrapeHistograms(ctx context.Context, c *http.Client, url string) (Histograms, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	h := Histograms{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetHistogram() == nil {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			h[name+"{"+strings.Join(labels, ",")+"}"] = m.GetHistogram()
		}
	}
	return h, nil
}

// QuantileSince is the upper bound of the bucket holding the q-quantile of
// what series observed between before and after, and how many it
// observed. Bucket bounds make it an upper estimate: "p99 ≤ N". It is +Inf
// when the quantile fell past the last bound, NaN with no observations.
func QuantileSince(before, after Histograms, series string, q float64) (float64, uint64) {
	a := after[series]
	if a == nil {
		return math.NaN(), 0
	}
	counts := map[float64]uint64{}
	if b := before[series]; b != nil {
		for _, bk := range b.GetBucket() {
			counts[bk.GetUpperBound()] = bk.GetCumulativeCount()
		}
	}
	total := a.GetSampleCount() - before[series].GetSampleCount()
	if total == 0 {
		return math.NaN(), 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	for _, bk := range a.GetBucket() {
		if bk.GetCumulativeCount()-counts[bk.GetUpperBound()] >= rank {
			return bk.GetUpperBound(), total
		}
	}
	return math.Inf(1), total
}

// Download saves what a GET of url answers (a profile, say) to path.
func Download(hc *http.Client, url, path string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
