// Package engine turns interactions into survey invitations and delivers
// them, durably.
//
// It follows the collector's record log from a cursor kept in the same
// database. An interaction at a touchpoint that a survey's trigger names
// makes the customer eligible after the trigger's delay; when that time
// comes, the customer is invited if the survey is not suspended, the
// customer is in its deterministic sample, and no survey of the namespace
// has asked the customer within the longer of the two throttles. An
// invitation, its outbox message, the customer's contact history and the
// counters are written in one batch with the cursor or the due entry they
// consume, so a crash at any point neither loses nor doubles one.
//
// Messages leave the outbox through webhooks, one attempt at a time, with
// the same webhook-id on every attempt; a retry is scheduled with backoff
// (honouring Retry-After) and kept on disk, so delivery is at least once.
// No answer deletes a message: one whose retries ran out is parked and
// delivered once its webhook works again (delivery.go).
//
// Every step works in bounded batches, each committed on its own, so a
// backlog of any size costs bounded memory and a restart goes on from the
// last batch instead of redoing the backlog.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/score"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
	"github.com/cxop-dev/cxop/internal/survey/link"
	"github.com/cxop-dev/cxop/internal/survey/sample"
	"github.com/cxop-dev/cxop/internal/webhook"
)

// Survey is what the engine needs of one survey.
type Survey struct {
	Name             string
	Question         string
	FollowUpQuestion string
	// Touchpoints whose interactions make a customer eligible; none means
	// the survey is not transactional.
	Touchpoints   []string
	Delay         time.Duration
	SamplePercent float64
	Throttle      time.Duration
	LinkTTL       time.Duration
	Suspended     bool
	// Webhook receives invitations; nil keeps them in the outbox.
	Webhook *webhook.Endpoint
	// Kind is the survey's type, which says what a detractor is.
	Kind score.Kind
	// DetractorWebhook receives detractors' answers (closed loop); nil
	// sends none.
	DetractorWebhook *webhook.Endpoint
}

// Config is the engine's configuration, replaced whole on reload.
type Config struct {
	Surveys []Survey
	// LinkKeys sign survey links.
	LinkKeys link.Keys
	// PageURL is the base URL of the hosted survey page: a link is
	// PageURL + "/s/" + token.
	PageURL string
	// Revision is the collector config's (collectorapi.Config.Revision).
	// While a replica sharing the storage has loaded a newer one
	// (kv.KV.ConfigRevision), the engine consumes none of the record
	// feed: the newer config may have surveys this one does not know.
	Revision int64
}

// Source is the collector's record log.
type Source interface {
	// ScanRecords calls fn with every record from sequence from on, in
	// order, with the contact stored with an interaction (JSON as
	// Contact, nil for none or once it expired); json and contact are
	// valid only during the call.
	ScanRecords(from uint64, fn func(seq uint64, kind rollup.Kind, subject string, json, contact []byte) error) error
	// LastSeq is the sequence of the last committed record.
	LastSeq() uint64
}

// Sender makes one delivery attempt; *webhook.Client is one.
type Sender interface {
	Send(ctx context.Context, ep webhook.Endpoint, m webhook.Message) webhook.Result
}

// Options tune the engine; zero values take the defaults.
type Options struct {
	// Interval is how often due work is looked for when nothing wakes the
	// engine. Default 1s.
	Interval time.Duration
	// RetryBase and RetryMax bound the backoff between attempts.
	// Defaults 5s and 1h.
	RetryBase, RetryMax time.Duration
	// RetryFor is how long a message is retried after its first failed
	// attempt before it is parked (kept, not deleted) and its webhook
	// reported failing. Default 24h.
	RetryFor time.Duration
	// ProbeInterval is how often a failing webhook is tried with one
	// parked message, to notice that it works again. Default 10m.
	ProbeInterval time.Duration
	// TouchpointRate and NamespaceRate cap the invitations that
	// interactions trigger per hour, per touchpoint (what one touchpoint
	// token can cause) and over all touchpoints of the collector; an
	// invitation over a cap is suppressed and counted. 0 means no cap.
	TouchpointRate, NamespaceRate int
	// Concurrency is how many deliveries run at once. Default 8.
	Concurrency int
	// DeliveryBatch is how many messages one step attempts; their
	// outcomes are committed together, so a crash repeats at most this
	// many deliveries. Default 32.
	DeliveryBatch int
	// InviteBatch is how many due customers one step invites or
	// suppresses, in one batch. Default 1,000.
	InviteBatch int
	// StaleAfter: interactions older than this when first read trigger
	// nothing, so a backfill of last year's events does not invite
	// anyone. Default 24h.
	StaleAfter time.Duration
	Logger     *slog.Logger
	// Registerer receives the engine's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; nil is time.Now. Tests inject one.
	Now func() time.Time
}

// DefaultLinkTTL is how long a link stays valid when its survey does not
// say (Survey.LinkTTL).
const DefaultLinkTTL = 7 * 24 * time.Hour

// Defaults of Options.RetryFor and Options.ProbeInterval, which the
// collector's flags default to as well.
const (
	DefaultRetryFor      = 24 * time.Hour
	DefaultProbeInterval = 10 * time.Minute
)

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 5 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = time.Hour
	}
	if o.RetryFor <= 0 {
		o.RetryFor = DefaultRetryFor
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.DeliveryBatch <= 0 {
		o.DeliveryBatch = defaultDeliveryBatch
	}
	if o.InviteBatch <= 0 {
		o.InviteBatch = defaultInviteBatch
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine runs the survey pipeline of one collector.
type Engine struct {
	kv      KV
	src     Source
	sender  Sender
	opts    Options
	now     func() time.Time
	cfg     atomic.Pointer[settings]
	wake    chan struct{}
	metrics *metrics
	// floors is guarded by mu.
	floors floors
	// feed is where the engine reads the record feed from (feed.go);
	// guarded by mu.
	feed feedFloor
	// lastHeld is the pair of revisions (own, newest) last logged by
	// feedHeld; guarded by mu.
	lastHeld [2]int64
	// stopRenew stops the lock's renewal while the lock is held (kv.go);
	// guarded by mu.
	stopRenew func()
	// mu serialises steps: Run's loop and callers of Step in tests.
	mu sync.Mutex
	// contactsMigrated is set once no contact history is stored under
	// its customer id any more (retention.go).
	contactsMigrated atomic.Bool
}

type settings struct {
	Config
	byName map[string]*Survey
	// byTouchpoint lists the surveys each touchpoint triggers.
	byTouchpoint map[string][]*Survey
	// closedLoop is set when some survey has a detractor webhook.
	closedLoop bool
}

// New returns an engine over db, the embedded store's database (the
// engine's keys start with 's'), reading records from src: NewOn with
// PebbleKV(db).
func New(db *pebble.DB, src Source, sender Sender, opts Options) (*Engine, error) {
	return NewOn(PebbleKV(db), src, sender, opts)
}

// NewOn returns an engine over store: PebbleKV (store.Store.EngineKV) on
// the embedded store, whose record log src is; pgstore.Store.EngineKV on
// PostgreSQL, with src nil, the records then arriving in the store's feed
// (kv.FeedPrefix).
func NewOn(store KV, src Source, sender Sender, opts Options) (*Engine, error) {
	opts.defaults()
	e := &Engine{kv: store, src: src, sender: sender, opts: opts, now: time.Now, wake: make(chan struct{}, 1), floors: floors{}}
	if opts.Now != nil {
		e.now = opts.Now
	}
	e.metrics = newMetrics(e, opts.Registerer)
	if err := e.indexClosedLoopLocked(); err != nil {
		return nil, fmt.Errorf("index the closed loop: %w", err)
	}
	if err := e.loadContactsMigrated(); err != nil {
		return nil, err
	}
	e.SetConfig(Config{})
	return e, nil
}

// SetConfig replaces the configuration; work in flight finishes under the
// old one.
func (e *Engine) SetConfig(c Config) {
	s := &settings{Config: c, byName: map[string]*Survey{}, byTouchpoint: map[string][]*Survey{}}
	for i := range c.Surveys {
		sv := &s.Surveys[i]
		s.byName[sv.Name] = sv
		for _, tp := range sv.Touchpoints {
			s.byTouchpoint[tp] = append(s.byTouchpoint[tp], sv)
		}
		s.closedLoop = s.closedLoop || sv.DetractorWebhook != nil
	}
	e.cfg.Store(s)
	e.Notify()
}

// Notify wakes the engine, for example after records were committed.
func (e *Engine) Notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run steps the engine until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.opts.Interval)
	defer t.Stop()
	for {
		switch err := e.Step(ctx); {
		case err == nil, ctx.Err() != nil:
		case errors.Is(err, kv.ErrNotHeld):
			// Another replica took the lease (this one paused past it):
			// nothing was written, and the holder does the work.
			e.opts.Logger.Warn("survey engine step left to another replica", "err", err)
		default:
			e.opts.Logger.Error("survey engine step", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.wake:
		}
	}
}

// Step does everything that is due: reads new records, invites the
// customers whose delay has passed, and attempts the deliveries due, in as
// many bounded steps as that takes.
func (e *Engine) Step(ctx context.Context) error {
	for {
		more, err := e.step(ctx)
		if err != nil || !more || ctx.Err() != nil {
			return err
		}
	}
}

// step does one bounded batch of each kind of work, and reports whether
// one of them stopped at its bound, so that more may be due at once. The
// lock is held for one batch of each, so a wave or a follow-up waits at
// most that long.
func (e *Engine) step(ctx context.Context) (bool, error) {
	// Another replica holding the lock is doing this work.
	if held, err := e.lock(ctx, false); err != nil || !held {
		return false, err
	}
	defer e.unlock()
	cfg := e.cfg.Load()
	moreRecords, err := e.consume(cfg)
	if err != nil {
		return false, err
	}
	moreDue, err := e.invite(cfg)
	if err != nil {
		return false, err
	}
	moreParked, err := e.unpark(cfg)
	if err != nil {
		return false, err
	}
	more, err := e.deliver(ctx, cfg)
	return more || moreParked || moreDue || moreRecords, err
}

// Keys. Times are big-endian Unix nanoseconds so that keys sort by time.
var (
	keyCursor = []byte("s/cursor")
)

const (
	prefixDue         = "s/due/"      // due(8) seq(8) survey -> pending
	prefixContact     = "s/contact/"  // customer -> contact, as stored before contactKey (migrated by the first prune)
	prefixContactHash = "s/contacth/" // sha256(customer)[:16] -> contact (contactKey)
	prefixInv         = "s/inv/"      // invitation id(16) -> Invitation
	prefixOut         = "s/out/"      // next attempt(8) message id -> message
	prefixPark        = "s/park/"     // survey 0x00 'i'|'d' message id -> message with nowhere to go
	prefixFailed      = "s/failed/"   // survey 0x00 'i'|'d' message id -> message whose retries ran out
	prefixFailing     = "s/failing/"  // survey [0x00 "detractor"] -> failingWebhook
	prefixRate        = "s/rate/"     // hour(8) scope -> invitations triggered in that hour (rate limits)
	prefixCount       = "s/count/"    // survey 0x00 counter 0x00 day(8) -> uint64
	prefixGone        = "s/gone/"     // survey [0x00 "detractor"] -> goneWebhook
	prefixDet         = "s/det/"      // detractor id -> Detractor
	prefixLoop        = "s/loop/"     // survey 0x00 loopDetractors|loopFollowed -> uint64, all time
	prefixFollow      = "s/fu/"       // survey 0x00 answered(8) detractor id -> follow-up time (int64 ns)
	prefixWave        = "s/wave/"     // survey 0x00 wave id -> time taken
)

// goneWebhook records a receiver that answered 410 Gone. Delivery to the
// survey stops, its messages kept, until the survey's webhook URL changes.
type goneWebhook struct {
	URL string    `json:"url"`
	At  time.Time `json:"at"`
}

// pending is a customer made eligible by an interaction.
type pending struct {
	Survey   string   `json:"survey"`
	Customer string   `json:"customer"`
	Contact  *Contact `json:"contact,omitempty"`
	// Touchpoint and EventID name the interaction, for the receiver.
	Touchpoint string `json:"touchpoint"`
	EventID    string `json:"eventId"`
}

// Contact is how a customer may be reached, as the interaction gave it.
type Contact struct {
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// contactHistory is the last invitation a customer got from any survey.
type contactHistory struct {
	Survey   string        `json:"survey"`
	At       time.Time     `json:"at"`
	Throttle time.Duration `json:"throttle"`
}

// Invitation is one invitation to answer a survey.
type Invitation struct {
	ID         string    `json:"id"`
	Survey     string    `json:"survey"`
	Customer   string    `json:"customer"`
	Contact    *Contact  `json:"contact,omitempty"`
	Touchpoint string    `json:"touchpoint,omitempty"`
	EventID    string    `json:"eventId,omitempty"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Token      string    `json:"token"`
	Delivered  bool      `json:"delivered,omitempty"`
}

// message is an outbox entry.
type message struct {
	ID string `json:"id"`
	// Detractor marks a closed-loop message, for the detractor webhook.
	Detractor  bool   `json:"detractor,omitempty"`
	Survey     string `json:"survey"`
	Invitation string `json:"invitation"`
	// Attempt counts the attempts of the current retry window.
	Attempt   int       `json:"attempt"`
	Body      []byte    `json:"body"`
	Created   time.Time `json:"created"`
	LastError string    `json:"lastError,omitempty"`
	// FirstFailure is when the first attempt since the message was made
	// (or returned from parking) failed; retries stop RetryFor after it.
	FirstFailure time.Time `json:"firstFailure,omitzero"`
	// Parked is set once the retries ran out, so that a probe that fails
	// again does not count the message as failed twice.
	Parked bool `json:"parked,omitempty"`
	// ParkedAt is when the message was parked (its delivery given up),
	// the clock of its contact's retention; zero while it is retried.
	ParkedAt time.Time `json:"parkedAt,omitzero"`
}

// Counters kept per survey and day.
const (
	CounterInvited            = "invited"
	CounterDelivered          = "delivered"
	CounterSuppressedSample   = "suppressed-sample"
	CounterSuppressedThrottle = "suppressed-throttle"
	CounterSuppressedSuspend  = "suppressed-suspended"
	// CounterSuppressedRate counts invitations over a rate limit
	// (Options.TouchpointRate, NamespaceRate).
	CounterSuppressedRate = "suppressed-rate-limit"
	// CounterDeliveryFailed counts messages whose retries ran out: they
	// are parked, not dropped, and delivered once the webhook works.
	CounterDeliveryFailed = "delivery-failed"
	CounterRetries        = "delivery-retries"
	CounterDetractors     = "detractors"
	CounterDetractorsSent = "detractors-sent"
	CounterWaveMembers    = "wave-parts"
)

func timeKey(prefix string, t time.Time, rest ...[]byte) []byte {
	k := append([]byte(prefix), make([]byte, 8)...)
	binary.BigEndian.PutUint64(k[len(prefix):], uint64(max(t.UnixNano(), 0)))
	for _, r := range rest {
		k = append(k, r...)
	}
	return k
}

func counterKey(survey, counter string, day time.Time) []byte {
	k := []byte(prefixCount + survey + "\x00" + counter + "\x00")
	return binary.BigEndian.AppendUint64(k, uint64(day.Unix()))
}

// batchWriter accumulates writes and counter increments for one batch.
type batchWriter struct {
	e      *Engine
	b      kv.Batch
	counts map[string]uint64
}

func (e *Engine) newBatch() *batchWriter {
	return &batchWriter{e: e, b: e.kv.NewBatch(), counts: map[string]uint64{}}
}

// close releases the batch, committed or not.
func (w *batchWriter) close() { _ = w.b.Close() }

func (w *batchWriter) setJSON(key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.set(key, data)
}

// set writes key, lowering its queue's floor.
func (w *batchWriter) set(key, value []byte) error {
	w.e.floors.wrote(key)
	return w.b.Set(key, value)
}

func (w *batchWriter) count(survey, counter string, at time.Time) {
	day := at.UTC().Truncate(24 * time.Hour)
	w.counts[string(counterKey(survey, counter, day))]++
}

// commit adds the counters to their stored values and syncs the batch.
// It leaves the batch to close (defer w.close() where it is made), so
// that it is closed once on every path.
func (w *batchWriter) commit() error {
	for k, n := range w.counts {
		cur, err := w.e.getUint(k)
		if err != nil {
			return err
		}
		_ = w.b.Set([]byte(k), binary.BigEndian.AppendUint64(nil, cur+n))
	}
	return w.b.Commit()
}

func (e *Engine) getUint(key string) (uint64, error) {
	v, err := e.kv.Get([]byte(key))
	if errors.Is(err, kv.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("counter %q: %d bytes", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (e *Engine) getJSON(key []byte, v any) (bool, error) {
	data, err := e.kv.Get(key)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(data, v)
}

// consumeBatch bounds the records read per step; each batch commits with
// the cursor, so a backlog is worked through in steps.
const consumeBatch = 10_000

// consume reads a batch of records after the cursor and makes customers
// eligible. It reports whether it stopped at consumeBatch.
func (e *Engine) consume(cfg *settings) (bool, error) {
	if e.src == nil {
		return e.consumeFeed(cfg)
	}
	var cursor uint64
	if v, err := e.kv.Get(keyCursor); err == nil {
		cursor = binary.BigEndian.Uint64(v)
	} else if !errors.Is(err, kv.ErrNotFound) {
		return false, err
	}
	if len(cfg.byTouchpoint) == 0 && !cfg.closedLoop {
		// No survey listens: skip the log rather than read it, so that a
		// collector without triggers pays nothing, and interactions from
		// before a trigger existed never invite anyone.
		if last := e.src.LastSeq(); last > cursor {
			b := e.kv.NewBatch()
			defer func() { _ = b.Close() }()
			_ = b.Set(keyCursor, binary.BigEndian.AppendUint64(nil, last))
			return false, b.Commit()
		}
		return false, nil
	}
	w := e.newBatch()
	defer w.close()
	last, n := cursor, 0
	now := e.now()
	errFull := errors.New("batch full")
	err := e.src.ScanRecords(cursor+1, func(seq uint64, kind rollup.Kind, subject string, raw, contact []byte) error {
		if n >= consumeBatch {
			return errFull
		}
		n++
		last = seq
		return e.record(w, cfg, now, seq, kind, subject, raw, contact)
	})
	full := errors.Is(err, errFull)
	if err != nil && !full {
		return false, err
	}
	if last == cursor {
		return false, nil
	}
	_ = w.b.Set(keyCursor, binary.BigEndian.AppendUint64(nil, last))
	return full, w.commit()
}

// consumeFeed is consume for a store that hands records over in the feed
// (kv.FeedPrefix) instead of a log in commit order: the entries read are
// deleted in the batch that writes what they caused, so a record committed
// late, behind higher sequences already consumed, is read when it appears
// rather than skipped, and none is read twice.
func (e *Engine) consumeFeed(cfg *settings) (bool, error) {
	// Even with no survey listening the entries are read and deleted one
	// by one, not dropped by range: a range deletion would also take
	// entries committed after the read, perhaps under a newer config
	// whose surveys want them.
	prefix := []byte(kv.FeedPrefix)
	now := e.now()
	from, settled, err := e.feed.from(prefix, now, e.kv.FeedSettled)
	if err != nil {
		return false, err
	}
	it, err := e.kv.NewIter(from, prefixEnd(prefix))
	if err != nil {
		return false, err
	}
	defer func() { _ = it.Close() }()
	w := e.newBatch()
	defer w.close()
	n := 0
	var last []byte
	for it.First(); it.Valid() && n < consumeBatch; it.Next() {
		n++
		key := it.Key()
		last = append(last[:0], key...)
		if len(key) != len(prefix)+8 {
			return false, fmt.Errorf("feed key %x", key)
		}
		seq := binary.BigEndian.Uint64(key[len(prefix):])
		kind, subject, contact, raw, err := kv.DecodeFeed(it.Value())
		if err != nil {
			return false, fmt.Errorf("record %d: %w", seq, err)
		}
		if err := e.record(w, cfg, now, seq, rollup.Kind(kind), subject, raw, contact); err != nil {
			return false, err
		}
		_ = w.b.Delete(append([]byte(nil), key...))
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	if n == 0 {
		if err := e.feed.read(nil, settled, e.kv.FeedMark); err != nil {
			return false, err
		}
		e.metrics.feedHeldRevision.Set(0)
		return false, nil
	}
	// Read after the entries: it is at least the revision of the config
	// any of them was accepted under.
	newest, err := e.kv.ConfigRevision()
	if err != nil {
		return false, err
	}
	if newest > cfg.Revision {
		e.feedHeld(cfg.Revision, newest, n)
		return false, nil
	}
	e.metrics.feedHeldRevision.Set(0)
	if err := w.commit(); err != nil {
		return false, err
	}
	if n < consumeBatch {
		// The mark is taken after the read (kv.KV.FeedMark), so that it
		// covers every writer that could still commit below what the
		// read saw.
		if err := e.feed.read(last, settled, e.kv.FeedMark); err != nil {
			return false, err
		}
	}
	return n >= consumeBatch, nil
}

// feedHeld notes a step that left the feed to an engine with a newer
// config: counted, and logged once per pair of revisions.
func (e *Engine) feedHeld(own, newest int64, entries int) {
	e.metrics.feedHeld.Inc()
	e.metrics.feedHeldRevision.Set(float64(newest))
	if e.lastHeld == [2]int64{own, newest} {
		return
	}
	e.lastHeld = [2]int64{own, newest}
	e.opts.Logger.Warn("survey engine left the record feed to a replica with a newer config: another replica loaded a config this one has not yet, whose surveys may want these records",
		"config_revision", own, "newest_revision", newest, "entries", entries)
}

// record makes the customers of one interaction eligible, or notes a
// detractor's answer. contact, when given, is the contact stored apart
// from the record (JSON as Contact); it wins over one in the record's JSON.
func (e *Engine) record(w *batchWriter, cfg *settings, now time.Time, seq uint64, kind rollup.Kind, subject string, raw, contact []byte) error {
	if kind == rollup.KindSurvey {
		return e.detractor(w, cfg, subject, raw, now)
	}
	if kind != rollup.KindTouchpoint {
		return nil
	}
	surveys := cfg.byTouchpoint[subject]
	if len(surveys) == 0 {
		return nil
	}
	var ev struct {
		ID       string    `json:"id"`
		Customer string    `json:"customer"`
		Time     time.Time `json:"time"`
		Contact  *Contact  `json:"contact"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return fmt.Errorf("record %d: %w", seq, err)
	}
	if len(contact) > 0 {
		ev.Contact = new(Contact)
		if err := json.Unmarshal(contact, ev.Contact); err != nil {
			return fmt.Errorf("contact of record %d: %w", seq, err)
		}
	}
	if now.Sub(ev.Time) > e.opts.StaleAfter {
		return nil
	}
	for _, sv := range surveys {
		due := ev.Time.Add(sv.Delay)
		p := pending{Survey: sv.Name, Customer: ev.Customer, Contact: ev.Contact, Touchpoint: subject, EventID: ev.ID}
		if err := w.setJSON(timeKey(prefixDue, due, binary.BigEndian.AppendUint64(nil, seq), []byte(sv.Name)), p); err != nil {
			return err
		}
	}
	return nil
}

// defaultInviteBatch bounds the due entries handled per step
// (Options.InviteBatch). Each batch commits the invitations it made with
// the due entries it consumed, so a restart goes on after the last batch
// instead of rebuilding the backlog.
const defaultInviteBatch = 1000

// invite turns a batch of due eligibilities into invitations or
// suppressions. It reports whether it stopped at Options.InviteBatch.
func (e *Engine) invite(cfg *settings) (bool, error) {
	now := e.now()
	it, err := e.kv.NewIter(e.floors.from([]byte(prefixDue)), timeKey(prefixDue, now.Add(time.Nanosecond)))
	if err != nil {
		return false, err
	}
	defer func() { _ = it.Close() }()
	w := e.newBatch()
	defer w.close()
	// Contacts written in this batch, which a Get would not see yet.
	contacts := map[string]contactHistory{}
	limits := e.newRateLimits(w, now)
	n := 0
	var last []byte
	for it.First(); it.Valid() && n < e.opts.InviteBatch; it.Next() {
		n++
		last = append(last[:0], it.Key()...)
		var p pending
		if err := json.Unmarshal(it.Value(), &p); err != nil {
			return false, fmt.Errorf("due entry %x: %w", it.Key(), err)
		}
		_ = w.b.Delete(append([]byte(nil), it.Key()...))
		sv := cfg.byName[p.Survey]
		if sv == nil {
			continue // the survey is gone from the config
		}
		switch {
		case sv.Suspended:
			w.count(sv.Name, CounterSuppressedSuspend, now)
			continue
		case !sample.In(sv.Name, p.Customer, sv.SamplePercent):
			w.count(sv.Name, CounterSuppressedSample, now)
			continue
		}
		last, ok := contacts[p.Customer]
		if !ok {
			if found, err := e.getJSON(contactKey(p.Customer), &last); err != nil {
				return false, err
			} else if !found && !e.contactsMigrated.Load() {
				// Stored under the customer id before contactKey: moved.
				if legacy, err := e.getJSON([]byte(prefixContact+p.Customer), &last); err != nil {
					return false, err
				} else if legacy {
					_ = w.b.Delete([]byte(prefixContact + p.Customer))
					if err := w.setJSON(contactKey(p.Customer), last); err != nil {
						return false, err
					}
					_ = w.b.Set(contactIndexKey(last.At, contactKey(p.Customer)), nil)
					contacts[p.Customer] = last
				}
			}
		}
		if sample.Throttled(last.At, last.Throttle, sv.Throttle, now) {
			w.count(sv.Name, CounterSuppressedThrottle, now)
			continue
		}
		if limit, err := limits.take(p.Touchpoint); err != nil {
			return false, err
		} else if limit != "" {
			w.count(sv.Name, CounterSuppressedRate, now)
			limits.suppressed[[2]string{sv.Name, limit}]++
			continue
		}
		inv, msg, err := e.newInvitation(cfg, sv, p, now)
		if err != nil {
			return false, err
		}
		contacts[p.Customer] = contactHistory{Survey: sv.Name, At: now, Throttle: sv.Throttle}
		if err := w.setJSON(contactKey(p.Customer), contacts[p.Customer]); err != nil {
			return false, err
		}
		// The contact history's time index (retention.go) holds one key
		// per history: the one of the invitation it replaces goes.
		if !last.At.IsZero() {
			_ = w.b.Delete(contactIndexKey(last.At, contactKey(p.Customer)))
		}
		_ = w.b.Set(contactIndexKey(now, contactKey(p.Customer)), nil)
		if err := w.setJSON(invKey(inv.ID), inv); err != nil {
			return false, err
		}
		_ = w.b.Set(invIndexKey(inv.Created, inv.ID), nil)
		if err := w.setJSON(timeKey(prefixOut, now, []byte(msg.ID)), msg); err != nil {
			return false, err
		}
		w.count(sv.Name, CounterInvited, now)
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	if w.b.Empty() {
		return false, nil
	}
	if err := w.commit(); err != nil {
		return false, err
	}
	e.floors.took([]byte(prefixDue), last)
	limits.countSuppressed()
	return n >= e.opts.InviteBatch, nil
}

func invKey(id string) []byte { return []byte(prefixInv + id) }

// InvitationBody is the JSON a webhook receiver gets for an invitation.
type InvitationBody struct {
	Type       string   `json:"type"` // "survey.invitation"
	Invitation string   `json:"invitation"`
	Survey     string   `json:"survey"`
	Question   string   `json:"question"`
	Customer   string   `json:"customer"`
	Contact    *Contact `json:"contact,omitempty"`
	Touchpoint string   `json:"touchpoint,omitempty"`
	EventID    string   `json:"eventId,omitempty"`
	Link       string   `json:"link"`
	Expires    string   `json:"expires"`
}

func (e *Engine) newInvitation(cfg *settings, sv *Survey, p pending, now time.Time) (Invitation, message, error) {
	var id link.InvitationID
	if _, err := rand.Read(id[:]); err != nil {
		return Invitation{}, message{}, err
	}
	ttl := sv.LinkTTL
	if ttl <= 0 {
		ttl = DefaultLinkTTL
	}
	expires := now.Add(ttl).Truncate(time.Second)
	token, err := link.Sign(cfg.LinkKeys, link.Claims{Invitation: id, Survey: sv.Name, Customer: p.Customer, Expires: expires})
	if err != nil {
		return Invitation{}, message{}, fmt.Errorf("sign the link of survey %s: %w", sv.Name, err)
	}
	inv := Invitation{
		ID: id.String(), Survey: sv.Name, Customer: p.Customer, Contact: p.Contact,
		Touchpoint: p.Touchpoint, EventID: p.EventID, Created: now, Expires: expires, Token: token,
	}
	body, err := json.Marshal(InvitationBody{
		Type: "survey.invitation", Invitation: inv.ID, Survey: sv.Name, Question: sv.Question,
		Customer: p.Customer, Contact: p.Contact, Touchpoint: p.Touchpoint, EventID: p.EventID,
		Link: cfg.PageURL + "/s/" + token, Expires: expires.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return Invitation{}, message{}, err
	}
	return inv, message{ID: "msg_inv_" + inv.ID, Survey: sv.Name, Invitation: inv.ID, Body: body, Created: now}, nil
}

// Stats are a survey's counters over a window.
type Stats map[string]uint64

// Stats sums a survey's counters over the days from since to now.
func (e *Engine) Stats(survey string, since time.Time) (Stats, error) {
	out := Stats{}
	prefix := []byte(prefixCount + survey + "\x00")
	it, err := e.kv.NewIter(prefix, append(append([]byte(nil), prefix[:len(prefix)-1]...), 1))
	if err != nil {
		return nil, err
	}
	defer func() { _ = it.Close() }()
	fromDay := since.UTC().Truncate(24 * time.Hour)
	from := fromDay.Unix()
	for valid := it.First(); valid; {
		rest := it.Key()[len(prefix):]
		if len(rest) < 9 {
			valid = it.Next()
			continue
		}
		counter, day := string(rest[:len(rest)-9]), int64(binary.BigEndian.Uint64(rest[len(rest)-8:]))
		if day < from {
			// Skip the counter's days before the window in one seek: a
			// survey's counters go back as far as its history.
			valid = it.SeekGE(counterKey(survey, counter, fromDay))
			continue
		}
		if len(it.Value()) == 8 {
			out[counter] += binary.BigEndian.Uint64(it.Value())
		}
		valid = it.Next()
	}
	return out, it.Error()
}

// Invitation returns a stored invitation.
func (e *Engine) Invitation(id string) (Invitation, bool, error) {
	var inv Invitation
	ok, err := e.getJSON(invKey(id), &inv)
	return inv, ok, err
}

// Outbox returns how many messages wait for delivery, parked ones
// included.
func (e *Engine) Outbox() (int, error) {
	out, err := e.countKeys(prefixOut)
	if err != nil {
		return 0, err
	}
	parked, err := e.countKeys(prefixPark)
	if err != nil {
		return 0, err
	}
	failed, err := e.countKeys(prefixFailed)
	return out + parked + failed, err
}

// countKeys counts the keys that start with prefix, a string ending in '/'.
func (e *Engine) countKeys(prefix string) (int, error) {
	it, err := e.kv.NewIter([]byte(prefix), []byte(prefix[:len(prefix)-1]+"0"))
	if err != nil {
		return 0, err
	}
	defer func() { _ = it.Close() }()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n, it.Error()
}
