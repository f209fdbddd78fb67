package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"

	"github.com/cxop-dev/cxop/internal/webhook"
)

// Delivery keeps every message until its receiver answers 2xx. An attempt
// that fails in any other way than 410 Gone is retried with exponential
// backoff and jitter for Options.RetryFor since the message's first
// failure; then the message is parked under prefixFailed, not deleted, and
// its webhook is recorded as failing (prefixFailing), which the Survey's
// Delivering condition and a metric show. The failing webhook is probed
// with one parked message every Options.ProbeInterval, a different one
// each time, so that one message a receiver cannot take does not hide a
// recovery. When any message of the webhook is delivered again, or its URL
// or signing key changes, the failing record is dropped and the parked
// messages return to the outbox, a bounded number per step, each with a
// fresh retry window.

// defaultDeliveryBatch bounds the messages attempted per step
// (Options.DeliveryBatch). Their outcomes are written together, so after
// a crash at most this many delivered messages are sent again (with the
// same webhook-id).
const defaultDeliveryBatch = 32

// parkBatch bounds the messages parked or unparked per step, so that a
// survey with a million undeliverable messages makes no step long.
const parkBatch = 1000

// failingWebhook records a webhook whose messages ran out of retries, for
// the URL and key it had then.
type failingWebhook struct {
	URL   string `json:"url"`
	KeyID string `json:"keyId"`
	// Since is when the first message was parked.
	Since     time.Time `json:"since"`
	LastError string    `json:"lastError,omitempty"`
	// NextProbe is when one parked message is tried again; ProbeAfter is
	// the id of the last one tried, so the next probe takes the next.
	NextProbe  time.Time `json:"nextProbe"`
	ProbeAfter string    `json:"probeAfter,omitempty"`
}

// keyID identifies a signing key without revealing it.
func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// appliesTo reports whether the record is about ep as configured now: a
// new URL or key is a new chance.
func (f *failingWebhook) appliesTo(ep *webhook.Endpoint) bool {
	return ep != nil && f.URL == ep.URL && f.KeyID == keyID(ep.Key)
}

// webhookKey is the key under prefix of a survey's delivery or detractor
// webhook: the records about a webhook itself (gone, failing).
func webhookKey(prefix, survey string, detractor bool) []byte {
	if detractor {
		return []byte(prefix + survey + "\x00detractor")
	}
	return []byte(prefix + survey)
}

// failing returns the failing record of a survey's webhook, if any, and
// whether it applies to the webhook as configured now.
func (e *Engine) failing(sv *Survey, detractor bool) (*failingWebhook, bool, error) {
	var f failingWebhook
	ok, err := e.getJSON(webhookKey(prefixFailing, sv.Name, detractor), &f)
	if err != nil || !ok {
		return nil, false, err
	}
	return &f, f.appliesTo((&message{Detractor: detractor}).endpoint(sv)), nil
}

type dueMessage struct {
	key []byte
	msg message
}

// deliver attempts the due messages of surveys that have a webhook. It
// reports whether it stopped at a batch bound, so that more may be due.
func (e *Engine) deliver(ctx context.Context, cfg *settings) (bool, error) {
	now := e.now()
	it, err := e.kv.NewIter(e.floors.from([]byte(prefixOut)), timeKey(prefixOut, now.Add(time.Nanosecond)))
	if err != nil {
		return false, err
	}
	var due []dueMessage
	park := e.kv.NewBatch()
	defer func() { _ = park.Close() }()
	parked := 0
	// Every key visited is taken: parked, or attempted and then moved.
	var last []byte
	// Whether each webhook (by its gone key) answered 410, looked up once.
	goneCache := map[string]bool{}
	for it.First(); it.Valid() && len(due) < e.opts.DeliveryBatch && parked < parkBatch; it.Next() {
		last = append(last[:0], it.Key()...)
		var m message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			_ = it.Close()
			return false, fmt.Errorf("outbox entry %x: %w", it.Key(), err)
		}
		sv := cfg.byName[m.Survey]
		canSend := sv != nil && m.endpoint(sv) != nil
		if canSend {
			gk := string(webhookKey(prefixGone, m.Survey, m.Detractor))
			isGone, ok := goneCache[gk]
			if !ok {
				gone, err := e.gone(sv, m.Detractor)
				if err != nil {
					_ = it.Close()
					return false, err
				}
				isGone = gone != nil
				goneCache[gk] = isGone
			}
			canSend = !isGone
		}
		if !canSend {
			// Parked, out of the timeline, until the survey has a webhook
			// again or its URL changes: later steps do not walk it.
			_ = park.Delete(it.Key())
			pk := parkKey(prefixPark, m.Survey, m.Detractor, m.ID)
			e.floors.wrote(pk)
			if m.ParkedAt.IsZero() {
				m.ParkedAt = now
			}
			data, err := json.Marshal(m)
			if err != nil {
				_ = it.Close()
				return false, err
			}
			_ = park.Set(pk, data)
			parked++
			continue
		}
		due = append(due, dueMessage{key: append([]byte(nil), it.Key()...), msg: m})
	}
	if err := it.Close(); err != nil {
		return false, err
	}
	if parked > 0 {
		if err := park.Commit(); err != nil {
			return false, err
		}
	}
	if len(due) == 0 {
		e.floors.took([]byte(prefixOut), last)
		return parked == parkBatch, nil
	}
	results := make([]webhook.Result, len(due))
	sem := make(chan struct{}, e.opts.Concurrency)
	var wg sync.WaitGroup
	for i, d := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ep := *d.msg.endpoint(cfg.byName[d.msg.Survey])
			results[i] = e.sender.Send(ctx, ep, webhook.Message{ID: d.msg.ID, Body: d.msg.Body})
		}()
	}
	wg.Wait()

	w := e.newBatch()
	defer w.close()
	after := e.now()
	// Per webhook (failing key): delivered to at least once in this batch,
	// or the last error of a message parked in it.
	type webhookRef struct {
		survey    *Survey
		detractor bool
	}
	recovered := map[string]webhookRef{}
	// failed holds, by failing key, each webhook whose message ran out of
	// retries in this step and that message's last error.
	type failure struct {
		ref     webhookRef
		lastErr string
	}
	failed := map[string]failure{}
	var newlyParked []message
	for i, d := range due {
		res, m := results[i], d.msg
		m.Attempt++
		sv := cfg.byName[m.Survey]
		fk := string(webhookKey(prefixFailing, m.Survey, m.Detractor))
		_ = w.b.Delete(d.key)
		switch res.Outcome {
		case webhook.Delivered:
			recovered[fk] = webhookRef{sv, m.Detractor}
			if m.Detractor {
				w.count(m.Survey, CounterDetractorsSent, after)
			} else {
				w.count(m.Survey, CounterDelivered, after)
			}
			if m.Invitation != "" {
				var inv Invitation
				if ok, err := e.getJSON(invKey(m.Invitation), &inv); err != nil {
					return false, err
				} else if ok {
					inv.Delivered = true
					if err := w.setJSON(invKey(inv.ID), inv); err != nil {
						return false, err
					}
					if inv.Contact != nil {
						// Its contact goes Retention.Contact after now.
						_ = w.b.Set(invContactIndexKey(after, inv.ID), nil)
					}
				}
			}
			continue
		case webhook.Gone:
			// A 410 parks the survey's messages; the webhook is reported
			// gone until its URL changes.
			if err := w.setJSON(webhookKey(prefixGone, m.Survey, m.Detractor), goneWebhook{URL: m.endpoint(sv).URL, At: after}); err != nil {
				return false, err
			}
		}
		// Any other outcome keeps the message: retried with backoff until
		// RetryFor has passed since its first failure, then parked.
		m.LastError = errString(res.Err)
		if m.FirstFailure.IsZero() {
			m.FirstFailure = after
		}
		if res.Outcome != webhook.Gone && after.Sub(m.FirstFailure) >= e.opts.RetryFor {
			if !m.Parked {
				// A probe that fails again is not counted again.
				w.count(m.Survey, CounterDeliveryFailed, after)
				newlyParked = append(newlyParked, m)
				e.opts.Logger.Warn("webhook delivery parked after its retries ran out; kept for redelivery",
					"survey", m.Survey, "message", m.ID, "attempts", m.Attempt, "since", m.FirstFailure, "err", m.LastError)
			}
			m.Parked = true
			if m.ParkedAt.IsZero() {
				m.ParkedAt = after
			}
			failed[fk] = failure{webhookRef{sv, m.Detractor}, m.LastError}
			if err := w.setJSON(parkKey(prefixFailed, m.Survey, m.Detractor, m.ID), m); err != nil {
				return false, err
			}
			continue
		}
		next := after.Add(webhook.Backoff(m.Attempt, e.opts.RetryBase, e.opts.RetryMax, res.RetryAfter))
		if err := w.setJSON(timeKey(prefixOut, next, []byte(m.ID)), m); err != nil {
			return false, err
		}
		w.count(m.Survey, CounterRetries, after)
	}
	// A delivery proves the webhook works: its failing record goes, and
	// the next steps return its parked messages.
	for fk, ref := range recovered {
		if ok, err := e.has([]byte(fk)); err != nil {
			return false, err
		} else if ok {
			_ = w.b.Delete([]byte(fk))
			e.opts.Logger.Info("webhook delivers again; returning its parked messages", "survey", ref.survey.Name, "detractor", ref.detractor)
		}
	}
	for fk, fail := range failed {
		if _, ok := recovered[fk]; ok {
			continue
		}
		var f failingWebhook
		ok, err := e.getJSON([]byte(fk), &f)
		if err != nil {
			return false, err
		}
		ep := (&message{Detractor: fail.ref.detractor}).endpoint(fail.ref.survey)
		if !ok || !f.appliesTo(ep) {
			f = failingWebhook{URL: ep.URL, KeyID: keyID(ep.Key), Since: after, NextProbe: after.Add(e.opts.ProbeInterval)}
		}
		f.LastError = fail.lastErr
		if err := w.setJSON([]byte(fk), f); err != nil {
			return false, err
		}
	}
	if err := w.commit(); err != nil {
		return false, err
	}
	e.floors.took([]byte(prefixOut), last)
	for _, m := range newlyParked {
		e.metrics.parked.WithLabelValues(m.Survey, webhookLabel(m.Detractor)).Inc()
	}
	return len(due) == e.opts.DeliveryBatch || parked == parkBatch, nil
}

func (e *Engine) has(key []byte) (bool, error) {
	_, err := e.kv.Get(key)
	if err == nil {
		return true, nil
	}
	if err == kv.ErrNotFound {
		return false, nil
	}
	return false, err
}

func webhookLabel(detractor bool) string {
	if detractor {
		return "detractor"
	}
	return "delivery"
}

func parkPrefix(prefix, survey string, detractor bool) []byte {
	kind := byte('i')
	if detractor {
		kind = 'd'
	}
	return append([]byte(prefix+survey+"\x00"), kind)
}

func parkKey(prefix, survey string, detractor bool, id string) []byte {
	return append(parkPrefix(prefix, survey, detractor), id...)
}

// prefixEnd is the first key after every key that starts with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	end[len(end)-1]++
	return end
}

// unpark returns parked messages to the outbox, due now, for every
// survey webhook that can take them again, and moves one parked message of
// each failing webhook whose probe is due. It reports whether it stopped
// at parkBatch.
func (e *Engine) unpark(cfg *settings) (bool, error) {
	w := e.newBatch()
	defer w.close()
	now, n := e.now(), 0
	// The last key taken of each parked range, for the floors.
	taken := map[string][]byte{}
	// move returns a parked range's messages to the outbox, due now, each
	// with a fresh retry window whose backoff starts from RetryBase again:
	// whatever parked them (no webhook, a 410, retries run out) is over.
	move := func(prefix []byte) error {
		it, err := e.kv.NewIter(e.floors.from(prefix), prefixEnd(prefix))
		if err != nil {
			return err
		}
		for it.First(); it.Valid() && n < parkBatch; it.Next() {
			taken[string(prefix)] = append(taken[string(prefix)][:0], it.Key()...)
			id := it.Key()[len(prefix):]
			_ = w.b.Delete(it.Key())
			var m message
			if err := json.Unmarshal(it.Value(), &m); err != nil {
				_ = it.Close()
				return fmt.Errorf("parked message %x: %w", it.Key(), err)
			}
			m.FirstFailure, m.Parked, m.Attempt, m.ParkedAt = time.Time{}, false, 0, time.Time{}
			if err := w.setJSON(timeKey(prefixOut, now, id), m); err != nil {
				_ = it.Close()
				return err
			}
			n++
		}
		return it.Close()
	}
	for i := range cfg.Surveys {
		sv := &cfg.Surveys[i]
		for _, detractor := range []bool{false, true} {
			if n >= parkBatch {
				break
			}
			if (&message{Detractor: detractor}).endpoint(sv) == nil {
				continue
			}
			if gone, err := e.gone(sv, detractor); err != nil {
				return false, err
			} else if gone != nil {
				continue
			}
			if err := move(parkPrefix(prefixPark, sv.Name, detractor)); err != nil {
				return false, err
			}
			f, applies, err := e.failing(sv, detractor)
			if err != nil {
				return false, err
			}
			switch {
			case f != nil && applies:
				if !now.Before(f.NextProbe) {
					if err := e.probe(w, sv, detractor, f, now); err != nil {
						return false, err
					}
				}
			default:
				if f != nil {
					// The URL or key changed since: a new chance for all.
					_ = w.b.Delete(webhookKey(prefixFailing, sv.Name, detractor))
				}
				if err := move(parkPrefix(prefixFailed, sv.Name, detractor)); err != nil {
					return false, err
				}
			}
		}
	}
	if w.b.Empty() {
		return false, nil
	}
	if err := w.commit(); err != nil {
		return false, err
	}
	for q, last := range taken {
		e.floors.took([]byte(q), last)
	}
	return n >= parkBatch, nil
}

// probe moves the parked message after the last one probed (wrapping
// round) back to the outbox, as it is, so that a failure parks it again at
// once; a failing webhook with nothing parked is forgotten.
func (e *Engine) probe(w *batchWriter, sv *Survey, detractor bool, f *failingWebhook, now time.Time) error {
	prefix := parkPrefix(prefixFailed, sv.Name, detractor)
	it, err := e.kv.NewIter(prefix, prefixEnd(prefix))
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	valid := it.SeekGE(append(append(append([]byte(nil), prefix...), f.ProbeAfter...), 0))
	if !valid {
		valid = it.First()
	}
	if !valid {
		if err := it.Error(); err != nil {
			return err
		}
		_ = w.b.Delete(webhookKey(prefixFailing, sv.Name, detractor))
		return nil
	}
	id := string(it.Key()[len(prefix):])
	_ = w.b.Delete(it.Key())
	_ = w.set(timeKey(prefixOut, now, []byte(id)), it.Value())
	f.ProbeAfter, f.NextProbe = id, now.Add(e.opts.ProbeInterval)
	e.opts.Logger.Info("probing a failing webhook with one parked message", "survey", sv.Name, "detractor", detractor, "message", id)
	return w.setJSON(webhookKey(prefixFailing, sv.Name, detractor), f)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// gone returns the 410 recorded for the survey's current webhook URL, or
// nil.
func (e *Engine) gone(sv *Survey, detractor bool) (*goneWebhook, error) {
	ep := (&message{Detractor: detractor}).endpoint(sv)
	var g goneWebhook
	ok, err := e.getJSON(webhookKey(prefixGone, sv.Name, detractor), &g)
	if err != nil || !ok || ep == nil || g.URL != ep.URL {
		return nil, err
	}
	return &g, nil
}

// endpoint is where m goes for survey sv, or nil.
func (m *message) endpoint(sv *Survey) *webhook.Endpoint {
	if sv == nil {
		return nil
	}
	if m.Detractor {
		return sv.DetractorWebhook
	}
	return sv.Webhook
}

// WebhookGone reports when the survey's webhook answered 410 Gone, if its
// URL has not changed since: the webhook is disabled until it does.
func (e *Engine) WebhookGone(survey string) (time.Time, bool, error) {
	sv := e.cfg.Load().byName[survey]
	if sv == nil {
		return time.Time{}, false, nil
	}
	g, err := e.gone(sv, false)
	if err != nil || g == nil {
		return time.Time{}, false, err
	}
	return g.At, true, nil
}

// Failing is a webhook whose messages ran out of retries and are parked.
type Failing struct {
	// Since is when the first message was parked.
	Since time.Time
	// LastError is the last attempt's error ("the receiver answered 401").
	LastError string
	// NextProbe is when one parked message is tried again.
	NextProbe time.Time
}

// WebhookFailing reports whether the survey's delivery webhook, as
// configured now, has messages parked because their retries ran out.
func (e *Engine) WebhookFailing(survey string) (Failing, bool, error) {
	sv := e.cfg.Load().byName[survey]
	if sv == nil {
		return Failing{}, false, nil
	}
	f, applies, err := e.failing(sv, false)
	if err != nil || f == nil || !applies {
		return Failing{}, false, err
	}
	return Failing{Since: f.Since, LastError: f.LastError, NextProbe: f.NextProbe}, true, nil
}
