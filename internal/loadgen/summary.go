package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// SampleSummaries GETs url (a /v1/summary query) n times, one after the
// other on one keep-alive connection, and returns each latency. Any answer
// but 200 ends the sampling with an error; a 429 is retried after its
// Retry-After and timed to the 200.
func SampleSummaries(ctx context.Context, c *http.Client, url, token string, n int) (Latencies, error) {
	lat := make(Latencies, 0, n)
	for range n {
		t := time.Now()
		for {
			code, wait, err := get(ctx, c, url, token)
			if err != nil {
				return lat, err
			}
			if code == http.StatusOK {
				break
			}
			if err := Sleep(ctx, wait); err != nil {
				return lat, err
			}
		}
		lat = append(lat, time.Since(t))
	}
	return lat, nil
}

// get reads one GET answer whole; only 200 and 429 are not errors.
func get(ctx context.Context, c *http.Client, url, token string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: read answer: %w", url, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.StatusCode, 0, nil
	case http.StatusTooManyRequests:
		wait, err := RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if err != nil {
			return resp.StatusCode, 0, fmt.Errorf("%s: 429: %w", url, err)
		}
		return resp.StatusCode, wait, nil
	default:
		return resp.StatusCode, 0, &ErrStatus{URL: url, Code: resp.StatusCode, Body: string(msg)}
	}
}

// CheckResponses makes sure the summary at summaryURL counts want
// answers: that every preloaded answer is stored and counted, so timed
// summaries really cover them.
func CheckResponses(ctx context.Context, summaryURL, token string, want int) error {
	var s struct {
		Responses int `json:"responses"`
	}
	if err := getJSON(ctx, http.DefaultClient, summaryURL, token, &s); err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	if s.Responses != want {
		return fmt.Errorf("summary over 28d counts %d responses, %d were stored", s.Responses, want)
	}
	return nil
}
