// Package webhook delivers survey invitations and detractor alerts to the
// receivers a Survey names, signed in the Standard Webhooks form
// (webhook-id, webhook-timestamp, webhook-signature: v1,<base64 HMAC>),
// through a Guard that keeps them off the internal network. One Send is one
// attempt; the caller keeps the message in a durable outbox and schedules
// the next attempt with Backoff, so a crash loses nothing and a retry keeps
// its webhook-id.
package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// secretPrefix marks a Standard Webhooks secret: base64 after the prefix.
const secretPrefix = "whsec_"

// MinKeySize is the smallest signing key accepted, in bytes.
const MinKeySize = 16

// ParseKey reads a signing key from a Secret's value: "whsec_" and base64,
// as Standard Webhooks receivers print them, or the raw bytes otherwise.
func ParseKey(value []byte) ([]byte, error) {
	v := bytes.TrimSpace(value)
	if rest, ok := bytes.CutPrefix(v, []byte(secretPrefix)); ok {
		key, err := base64.StdEncoding.DecodeString(string(rest))
		if err != nil {
			return nil, fmt.Errorf("a %s key must be base64 after the prefix: %w", secretPrefix, err)
		}
		v = key
	}
	if len(v) < MinKeySize {
		return nil, fmt.Errorf("the signing key has %d bytes, need at least %d", len(v), MinKeySize)
	}
	return v, nil
}

// Message is one webhook: ID is the webhook-id, the same on every attempt,
// so a receiver can drop a delivery it has already handled.
type Message struct {
	ID   string
	Body []byte
}

// Endpoint is where a message goes and the key that signs it.
type Endpoint struct {
	URL string
	Key []byte
}

// Outcome is what an attempt means for the message.
type Outcome int

const (
	// Delivered: the receiver answered 2xx.
	Delivered Outcome = iota
	// Retry: a network error, a timeout or any answer but 2xx and 410; try
	// again later. A 4xx is retried too: a receiver answers 401 while its
	// signing key is rotated ahead of the sender's, or 400 until a fix is
	// deployed, and the message must survive that.
	Retry
	// Gone: the receiver answered 410; the webhook is to be disabled.
	Gone
	// Rejected: nothing was sent (a refused address, an unusable key or
	// URL). The caller keeps the message like a Retry, since the config
	// or the receiver's DNS may change; the outcome says why.
	Rejected
)

func (o Outcome) String() string {
	return [...]string{"delivered", "retry", "gone", "rejected"}[o]
}

// Result is the outcome of one attempt.
type Result struct {
	Outcome Outcome
	// Status is the HTTP status, 0 when none was received.
	Status int
	// RetryAfter is the receiver's Retry-After, 0 when it sent none.
	RetryAfter time.Duration
	// Err says what went wrong, for a condition or a log line.
	Err error
}

// Client sends webhooks.
type Client struct {
	http  *http.Client
	guard *Guard
	now   func() time.Time
}

// maxRedirects bounds the redirects followed; each is dialled through the
// guard again.
const maxRedirects = 3

// NewClient returns a Client whose connections pass guard and whose
// attempts give up after timeout.
func NewClient(guard *Guard, timeout time.Duration) *Client {
	transport := &http.Transport{
		// No proxy from the environment: a proxy would dial the receiver
		// on the client's behalf, past the guard.
		Proxy:                 nil,
		DialContext:           guard.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &Client{
		http: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= maxRedirects {
					return fmt.Errorf("stopped after %d redirects", maxRedirects)
				}
				// A receiver may move a path, not send the signed payload
				// somewhere else: a redirect to another host or scheme (an
				// allowed host pointing past the allow-list, or https
				// falling back to http) is not followed.
				if first := via[0].URL; req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
					return fmt.Errorf("redirect to another host or scheme (%s://%s), not followed", req.URL.Scheme, req.URL.Host)
				}
				return nil
			},
		},
		guard: guard,
		now:   time.Now,
	}
}

// Send makes one attempt to deliver m to ep.
func (c *Client) Send(ctx context.Context, ep Endpoint, m Message) Result {
	if err := c.guard.CheckURL(ep.URL); err != nil {
		return Result{Outcome: Rejected, Err: err}
	}
	signer, err := standardwebhooks.NewWebhookRaw(ep.Key)
	if err != nil {
		return Result{Outcome: Rejected, Err: fmt.Errorf("signing key: %w", err)}
	}
	ts := c.now()
	signature, err := signer.Sign(m.ID, ts, m.Body)
	if err != nil {
		return Result{Outcome: Rejected, Err: fmt.Errorf("sign: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(m.Body))
	if err != nil {
		return Result{Outcome: Rejected, Err: fmt.Errorf("webhook URL: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cxop-collector")
	req.Header.Set("webhook-id", m.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", signature)
	resp, err := c.http.Do(req)
	if err != nil {
		var blocked *BlockedError
		if errors.As(err, &blocked) {
			return Result{Outcome: Rejected, Err: blocked}
		}
		// The error is kept with the message and shown on the Survey's
		// status: drop the URL from it, which may carry a credential.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = fmt.Errorf("%s: %w", uerr.Op, uerr.Err)
		}
		return Result{Outcome: Retry, Err: err}
	}
	defer resp.Body.Close()
	// Drain a little so the connection can be reused; the body is not
	// read further.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	res := Result{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now())}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		res.Outcome = Delivered
	case code == http.StatusGone:
		res.Outcome, res.Err = Gone, errors.New("the receiver answered 410 Gone")
	default:
		res.Outcome, res.Err = Retry, fmt.Errorf("the receiver answered %d", code)
	}
	return res
}

// maxRetryAfter caps a receiver's Retry-After, so one answer cannot park
// a message for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// Backoff returns how long to wait before attempt number attempt (1 for
// the first retry): base doubled per attempt up to maxDelay, with full
// jitter over its upper half, and never less than the receiver's
// Retry-After.
func Backoff(attempt int, base, maxDelay, retryAfter time.Duration) time.Duration {
	d := maxDelay
	if attempt < 32 {
		d = min(base<<(attempt-1), maxDelay)
	}
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	return max(d, retryAfter)
}
