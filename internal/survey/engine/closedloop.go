package engine

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"

	"github.com/cxop-dev/cxop/internal/score"
)

// Detractor is an unhappy answer sent to a survey's closed loop, and when
// someone followed it up.
type Detractor struct {
	ID           string     `json:"id"`
	Survey       string     `json:"survey"`
	Customer     string     `json:"customer"`
	Score        int        `json:"score"`
	Comment      string     `json:"comment,omitempty"`
	ResponseID   string     `json:"responseId"`
	AnsweredAt   time.Time  `json:"answeredAt"`
	FollowedUpAt *time.Time `json:"followedUpAt,omitempty"`
}

// DetractorBody is the JSON a detractor webhook receives.
type DetractorBody struct {
	Type       string `json:"type"` // "survey.detractor"
	Detractor  string `json:"detractor"`
	Survey     string `json:"survey"`
	Customer   string `json:"customer"`
	Score      int    `json:"score"`
	Comment    string `json:"comment,omitempty"`
	ResponseID string `json:"responseId"`
	AnsweredAt string `json:"answeredAt"`
	// FollowUp is the collector path that marks it followed up, with the
	// survey's token: POST /v1/followups/{detractor}.
	FollowUp string `json:"followUp"`
}

func detKey(survey, id string) []byte { return []byte(prefixDet + survey + "\x00" + id) }

// detractorID is stable for a response, so reading the same record again
// (after a crash) writes the same detractor and message.
func detractorID(survey, responseID string) string {
	sum := sha256.Sum256([]byte(survey + "\x00" + responseID))
	return hex.EncodeToString(sum[:16])
}

// detractor queues a detractor's answer for the survey's closed loop.
func (e *Engine) detractor(w *batchWriter, cfg *settings, survey string, raw []byte, now time.Time) error {
	sv := cfg.byName[survey]
	if sv == nil || sv.DetractorWebhook == nil {
		return nil
	}
	var r struct {
		ID       string    `json:"id"`
		Customer string    `json:"customer"`
		Score    int       `json:"score"`
		Comment  string    `json:"comment"`
		Time     time.Time `json:"time"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("response of survey %s: %w", survey, err)
	}
	if !score.IsDetractor(sv.Kind, r.Score) || now.Sub(r.Time) > e.opts.StaleAfter {
		return nil
	}
	d := Detractor{ID: detractorID(survey, r.ID), Survey: survey, Customer: r.Customer, Score: r.Score, Comment: r.Comment, ResponseID: r.ID, AnsweredAt: r.Time}
	body, err := json.Marshal(DetractorBody{
		Type: "survey.detractor", Detractor: d.ID, Survey: survey, Customer: d.Customer, Score: d.Score, Comment: d.Comment,
		ResponseID: d.ResponseID, AnsweredAt: d.AnsweredAt.UTC().Format(time.RFC3339), FollowUp: "/v1/followups/" + d.ID,
	})
	if err != nil {
		return err
	}
	if err := w.setJSON(detKey(survey, d.ID), d); err != nil {
		return err
	}
	_ = w.b.Set(detIndexKey(&d), nil)
	msg := message{ID: "msg_det_" + d.ID, Survey: survey, Detractor: true, Body: body, Created: now}
	if err := w.setJSON(timeKey(prefixOut, now, []byte(msg.ID)), msg); err != nil {
		return err
	}
	w.count(survey, CounterDetractors, now)
	w.counts[loopKey(survey, loopDetractors)]++
	return nil
}

// The closed loop's figures are kept as they change, so that a summary
// reads two counters and the follow-ups of its window instead of walking
// every detractor a survey ever had.
const (
	loopDetractors = "detractors" // detractors ever queued
	loopFollowed   = "followed"   // of those, followed up
	// keyLoopIndexed marks a store whose counters and follow-up index
	// cover every detractor; one written before they existed is indexed
	// once, on start.
	keyLoopIndexed = "s/meta/closed-loop-indexed"
)

func loopKey(survey, what string) string { return prefixLoop + survey + "\x00" + what }

// followKey orders a survey's follow-ups by when the answer came.
func followKey(d *Detractor) []byte {
	return timeKey(prefixFollow+d.Survey+"\x00", d.AnsweredAt, []byte(d.ID))
}

func followValue(d *Detractor) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(d.FollowedUpAt.Sub(d.AnsweredAt)))
}

// indexBatch bounds the follow-up index entries written per batch while
// a store from before the index is indexed.
const indexBatch = 10_000

// indexClosedLoopLocked is indexClosedLoop under the engine's lock, taken
// only when the index is missing, so that a replica starting while another
// works does not wait for it.
func (e *Engine) indexClosedLoopLocked() error {
	if _, err := e.kv.Get([]byte(keyLoopIndexed)); err == nil {
		return nil
	} else if !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	if err := e.lockWait(context.Background()); err != nil {
		return err
	}
	defer e.unlock()
	return e.indexClosedLoop()
}

// indexClosedLoop builds the closed loop's counters and follow-up index
// from the stored detractors, once. The index is written in bounded
// batches (rewriting an entry is harmless, so a crash midway redoes it);
// the counters and the marker come last, together.
func (e *Engine) indexClosedLoop() error {
	if _, err := e.kv.Get([]byte(keyLoopIndexed)); err == nil {
		return nil
	} else if !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	b := e.kv.NewBatch()
	defer func() { _ = b.Close() }()
	it, err := e.kv.NewIter([]byte(prefixDet), []byte("s/det0"))
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	counts := map[string]uint64{}
	for it.First(); it.Valid(); it.Next() {
		var d Detractor
		if err := json.Unmarshal(it.Value(), &d); err != nil {
			return fmt.Errorf("detractor %x: %w", it.Key(), err)
		}
		counts[loopKey(d.Survey, loopDetractors)]++
		if d.FollowedUpAt != nil {
			counts[loopKey(d.Survey, loopFollowed)]++
			_ = b.Set(followKey(&d), followValue(&d))
		}
		if b.Count() >= indexBatch {
			if err := b.Commit(); err != nil {
				return err
			}
			_ = b.Close()
			b = e.kv.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	for k, n := range counts {
		_ = b.Set([]byte(k), binary.BigEndian.AppendUint64(nil, n))
	}
	_ = b.Set([]byte(keyLoopIndexed), nil)
	return b.Commit()
}

// ErrNoDetractor is returned by FollowUp for an id the survey never sent.
var ErrNoDetractor = errors.New("no such detractor")

// FollowUp marks a survey's detractor followed up at at. Marking it again
// keeps the first time.
func (e *Engine) FollowUp(survey, id string, at time.Time) (Detractor, error) {
	if err := e.lockWait(context.Background()); err != nil {
		return Detractor{}, err
	}
	defer e.unlock()
	var d Detractor
	ok, err := e.getJSON(detKey(survey, id), &d)
	if err != nil {
		return d, err
	}
	if !ok {
		return d, ErrNoDetractor
	}
	if d.FollowedUpAt != nil {
		return d, nil
	}
	d.FollowedUpAt = &at
	w := e.newBatch()
	defer w.close()
	if err := w.setJSON(detKey(survey, id), d); err != nil {
		return d, err
	}
	_ = w.b.Set(followKey(&d), followValue(&d))
	w.counts[loopKey(survey, loopFollowed)]++
	return d, w.commit()
}

// ClosedLoop is a survey's closed loop: detractors not followed up yet (of
// any age), and the median time to follow up those answered since a time.
type ClosedLoop struct {
	Open             uint64
	FollowedUp       uint64
	FollowUpP50      time.Duration
	HasFollowUpTimes bool
}

// ClosedLoopStats reads a survey's closed loop from its counters and the
// follow-ups of answers since since.
func (e *Engine) ClosedLoopStats(survey string, since time.Time) (ClosedLoop, error) {
	var out ClosedLoop
	detractors, err := e.getUint(loopKey(survey, loopDetractors))
	if err != nil {
		return out, err
	}
	followed, err := e.getUint(loopKey(survey, loopFollowed))
	if err != nil {
		return out, err
	}
	if detractors > followed {
		out.Open = detractors - followed
	}
	prefix := prefixFollow + survey + "\x00"
	it, err := e.kv.NewIter(timeKey(prefix, since), append([]byte(prefixFollow+survey), 1))
	if err != nil {
		return out, err
	}
	defer func() { _ = it.Close() }()
	var times []time.Duration
	for it.First(); it.Valid(); it.Next() {
		if len(it.Value()) != 8 {
			return out, fmt.Errorf("follow-up %x: %d bytes", it.Key(), len(it.Value()))
		}
		times = append(times, time.Duration(binary.BigEndian.Uint64(it.Value())))
	}
	out.FollowedUp = uint64(len(times))
	if len(times) > 0 {
		slices.Sort(times)
		// The lower median: an observed time, never an average of two.
		out.FollowUpP50, out.HasFollowUpTimes = times[(len(times)-1)/2], true
	}
	return out, it.Error()
}
