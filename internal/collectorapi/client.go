package collectorapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Client is the manager's client of the collector's GET /v1/summary. Many
// objects of one namespace share one collector, so answers are cached for a
// short time and concurrent identical requests are merged: a refresh of
// 1,000 Touchpoints costs one request per window, not 1,000. The zero value
// is not usable; use New.
type Client struct {
	http  *http.Client
	ttl   time.Duration
	now   func() time.Time
	group singleflight.Group
	// OnFetch, when set, is told the outcome of every request the client
	// sends (err nil: the collector answered), and of nothing served from
	// the cache: what it records moves only when the collector really
	// answered. Set it before the first request.
	OnFetch func(t Target, err error)

	mu    sync.Mutex
	cache map[string]entry
	// pruned is when expired answers were last dropped.
	pruned time.Time
}

// entry is one cached answer, decoded once: callers share it and must not
// modify it. Decoding a namespace's summary for each of its thousand
// objects would cost more than the request.
type entry struct {
	at    time.Time
	value any
	err   error
}

// New returns a Client whose answers are reused for ttl.
func New(ttl time.Duration) *Client {
	return &Client{
		// A collector that does not answer within seconds is reported as
		// unavailable rather than holding a reconcile worker.
		http:  &http.Client{Timeout: 5 * time.Second},
		ttl:   ttl,
		now:   time.Now,
		cache: map[string]entry{},
	}
}

// Target names a collector and the token that may read it.
type Target struct {
	BaseURL string
	Token   string
	// Namespace is the collector's, for OnFetch; it is not sent.
	Namespace string
}

// All returns the summary of every touchpoint and survey over window. The
// answer is shared with other callers: read it, do not modify it.
//
// has, when set, tells whether a cached answer knows what the caller needs
// (say, a Touchpoint just added to the config); an answer that does not is
// fetched again once it is a second old, rather than served for the whole
// TTL.
func (c *Client) All(ctx context.Context, t Target, window string, has func(*AllSummary) bool) (*AllSummary, error) {
	var fresh func(any) bool
	if has != nil {
		fresh = func(v any) bool { return has(v.(*AllSummary)) }
	}
	v, err := c.get(ctx, t, url.Values{"window": {window}}, func() any { return &AllSummary{} }, fresh)
	if err != nil {
		return nil, err
	}
	return v.(*AllSummary), nil
}

// Counts is the part of a namespace's summary that CXTargets evaluate: the
// good and total counts of each touchpoint and the answer distribution of
// each survey. It decodes the same answer as All but keeps about a fifth
// of its memory, which matters because targets read five windows of every
// namespace (their own and the four burn-rate lookbacks).
type Counts struct {
	Touchpoints map[string]*TouchpointCounts `json:"touchpoints"`
	Surveys     map[string]*SurveyCounts     `json:"surveys"`
}

// TouchpointCounts are the counts of TouchpointSummary that
// ratio objectives use.
type TouchpointCounts struct {
	AssessedWaits  uint64 `json:"assessedWaits"`
	CompliantWaits uint64 `json:"compliantWaits"`
	ResolvedKnown  uint64 `json:"resolvedKnown"`
	Resolved       uint64 `json:"resolved"`
}

// SurveyCounts are the answer distribution (index = score), the answers
// and the invitations sent of SurveySummary.
type SurveyCounts struct {
	Distribution []uint64 `json:"distribution"`
	Responses    uint64   `json:"responses"`
	Invitations  *struct {
		Sent uint64 `json:"sent"`
	} `json:"invitations"`
}

// Counts returns the counts of every touchpoint and survey over window,
// shared like All's answer; has works as for All.
func (c *Client) Counts(ctx context.Context, t Target, window string, has func(*Counts) bool) (*Counts, error) {
	var fresh func(any) bool
	if has != nil {
		fresh = func(v any) bool { return has(v.(*Counts)) }
	}
	v, err := c.get(ctx, t, url.Values{"window": {window}}, func() any { return &Counts{} }, fresh)
	if err != nil {
		return nil, err
	}
	return v.(*Counts), nil
}

// Touchpoints returns the combined summary of a set of touchpoints over
// window: distinct customers are counted once across the set. The answer
// is shared: read it, do not modify it.
func (c *Client) Touchpoints(ctx context.Context, t Target, window string, names []string) (*TouchpointSummary, error) {
	names = slices.Sorted(slices.Values(names))
	v, err := c.get(ctx, t, url.Values{"window": {window}, "touchpoint": names}, func() any { return &TouchpointSummary{} }, nil)
	if err != nil {
		return nil, err
	}
	return v.(*TouchpointSummary), nil
}

// Unavailable is returned when the collector cannot be reached or does not
// answer 200; its message says why, for a condition message.
type Unavailable struct{ Reason string }

func (e *Unavailable) Error() string { return e.Reason }

// IsUnavailable reports whether err means the collector could not answer.
func IsUnavailable(err error) bool {
	var u *Unavailable
	return errors.As(err, &u)
}

// staleAfter is how old a cached answer that lacks what a caller needs may
// be before it is fetched again.
const staleAfter = time.Second

func (c *Client) get(ctx context.Context, t Target, q url.Values, newValue func() any, fresh func(any) bool) (any, error) {
	u := strings.TrimSuffix(t.BaseURL, "/") + "/v1/summary?" + q.Encode()
	// The same answer decoded into different types is cached apart.
	key := fmt.Sprintf("%T", newValue()) + "\x00" + t.Token + "\x00" + u
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	age := c.now().Sub(e.at)
	lacking := ok && e.err == nil && fresh != nil && !fresh(e.value) && age >= staleAfter
	if !ok || age >= c.ttl || lacking {
		v, _, _ := c.group.Do(key, func() (any, error) {
			e := entry{value: newValue()}
			var data []byte
			if data, e.err = c.fetch(ctx, u, t.Token); e.err == nil {
				if err := json.Unmarshal(data, e.value); err != nil {
					e.err = &Unavailable{Reason: fmt.Sprintf("the collector's summary is not valid JSON: %v", err)}
				}
			}
			e.at = c.now()
			if c.OnFetch != nil {
				c.OnFetch(t, e.err)
			}
			c.mu.Lock()
			c.cache[key] = e
			c.pruneLocked(e.at)
			c.mu.Unlock()
			return e, nil
		})
		e = v.(entry)
	}
	return e.value, e.err
}

// pruneLocked drops answers past their TTL, at most once per TTL. Windows
// that follow the clock (a response rate's, which reaches back to a UTC
// midnight) are each asked for once and would otherwise pile up.
func (c *Client) pruneLocked(now time.Time) {
	if now.Sub(c.pruned) < c.ttl {
		return
	}
	c.pruned = now
	for k, e := range c.cache {
		if now.Sub(e.at) >= c.ttl {
			delete(c.cache, k)
		}
	}
}

func (c *Client) fetch(ctx context.Context, u, token string) ([]byte, error) {
	// The request is shared by every caller waiting on it, so one caller's
	// cancellation must not fail the others.
	ctx = context.WithoutCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("summary request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Unavailable{Reason: fmt.Sprintf("the collector did not answer: %v", err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, &Unavailable{Reason: fmt.Sprintf("reading the collector's answer: %v", err)}
	}
	if resp.StatusCode != http.StatusOK {
		var body struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &body) == nil && body.Error != "" {
			msg = body.Error
		}
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return nil, &Unavailable{Reason: fmt.Sprintf("the collector answered %d: %s", resp.StatusCode, msg)}
	}
	return data, nil
}

// Forget drops every cached answer for baseURL, for example after the
// collector's config changed and a new touchpoint became known.
func (c *Client) Forget(baseURL string) {
	prefix := strings.TrimSuffix(baseURL, "/") + "/"
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.cache {
		if parts := strings.SplitN(k, "\x00", 3); len(parts) == 3 && strings.HasPrefix(parts[2], prefix) {
			delete(c.cache, k)
		}
	}
}
