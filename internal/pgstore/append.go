package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

type request struct {
	records []store.Record
	done    chan reply
}

type reply struct {
	res store.Result
	err error
}

// Submit stores records durably and returns once their transaction has
// committed (or they are known duplicates), with the embedded store's
// answers: per record new or duplicate in the Result; a
// *store.ConflictError, storing nothing of the request, when a record
// reuses a stored id for another payload; store.ErrOverloaded at once when
// the queue is full; store.ErrClosed after Close; and an ErrUnavailable
// error when the database cannot be reached or the commit's outcome is
// unknown (nothing acknowledged; a retry is exact).
func (s *Store) Submit(ctx context.Context, records []store.Record) (store.Result, error) {
	// Checked before queueing: a record the database would refuse must not
	// fail the other requests of its group.
	for i := range records {
		if err := storable(&records[i]); err != nil {
			return store.Result{}, fmt.Errorf("record %d: %w", i, err)
		}
	}
	req := &request{records: records, done: make(chan reply, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return store.Result{}, store.ErrClosed
	}
	select {
	case s.queue <- req:
		s.closeMu.RUnlock()
	default:
		s.closeMu.RUnlock()
		return store.Result{}, store.ErrOverloaded
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		// The commit goes ahead; a retry of the same ids finds them stored.
		return store.Result{}, ctx.Err()
	}
}

// ErrUnstorable is what an error is (errors.Is) for a record this store
// cannot hold as given; the collector's validation refuses such records
// first, so it means a caller's bug.
var ErrUnstorable = errors.New("record cannot be stored")

// storable checks what PostgreSQL would refuse for the whole group: text
// that is not UTF-8 or holds NUL, and a kind or score out of range.
func storable(r *store.Record) error {
	for _, f := range [...]struct{ name, v string }{{"subject", r.Subject}, {"id", r.ID}} {
		if !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%w: its %s is not UTF-8 text without NUL", ErrUnstorable, f.name)
		}
	}
	switch r.Kind {
	case rollup.KindTouchpoint:
	case rollup.KindSurvey:
		if r.Response.Score < 0 || r.Response.Score > 10 {
			return fmt.Errorf("%w: score %d is outside 0..10", ErrUnstorable, r.Response.Score)
		}
	default:
		return fmt.Errorf("%w: kind %q", ErrUnstorable, r.Kind)
	}
	return nil
}

// commitLoop takes whatever requests are queued, up to MaxGroupRecords, and
// commits them in one transaction.
func (s *Store) commitLoop() {
	defer s.workers.Done()
	for req := range s.queue {
		group := []*request{req}
		n := len(req.records)
	drain:
		for n < s.opts.MaxGroupRecords {
			select {
			case more, ok := <-s.queue:
				if !ok {
					break drain
				}
				group = append(group, more)
				n += len(more.records)
			default:
				break drain
			}
		}
		results, err := s.commitGroup(group)
		for i, req := range group {
			if err != nil {
				req.done <- reply{err: err}
				continue
			}
			req.done <- results[i]
		}
	}
}

// key is a record's idempotency key.
type key struct {
	kind    rollup.Kind
	subject string
	id      string
}

func keyOf(r *store.Record) key { return key{r.Kind, r.Subject, r.ID} }

func compareKeys(a, b key) int {
	if c := int(a.kind) - int(b.kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.subject, b.subject); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

// commitGroup commits a group, running it again on a serialization failure,
// a deadlock or a missing partition, and with INSERT … ON CONFLICT when its
// COPY claim met a taken key.
func (s *Store) commitGroup(group []*request) ([]reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	var times []int64
	for _, req := range group {
		for i := range req.records {
			times = append(times, req.records[i].Time())
		}
	}
	byCopy := s.claims.tryCopy()
	var err error
	for attempt := range maxAttempts {
		if attempt > 0 {
			if werr := backoff(ctx, attempt); werr != nil {
				return nil, unavailable(errors.Join(err, werr))
			}
		}
		if err = s.ensurePartitions(ctx, times); err != nil {
			return nil, unavailable(err)
		}
		var results []reply
		run := func(tx pgx.Tx) error {
			var err error
			results, err = s.claimAndInsert(ctx, tx, group, byCopy)
			return err
		}
		err = pgx.BeginFunc(ctx, s.pool, run)
		if errors.Is(err, errKeyTaken) {
			// The COPY claim met a taken key: at once, and not as
			// another attempt, the group runs again with INSERT … ON
			// CONFLICT (claim.go).
			s.claims.refused.Add(1)
			s.claims.sawTakenKey()
			byCopy = false
			err = pgx.BeginFunc(ctx, s.pool, run)
		}
		switch {
		case err == nil:
			if byCopy {
				s.claims.copied.Add(1)
			} else {
				s.claims.inserted.Add(1)
			}
			return results, nil
		case noPartition(err):
			s.forgetPartitions()
		case retryable(err), errors.Is(err, errClaimVanished):
		default:
			return nil, unavailable(fmt.Errorf("commit: %w", err))
		}
	}
	return nil, unavailable(fmt.Errorf("commit: %w", err))
}

// errClaimVanished: a key the claim found taken was gone when read (taken
// back by the transaction that held it); the group runs again.
var errClaimVanished = errors.New("a claimed idempotency key vanished; retrying")

// claimAndInsert is one group's transaction: claim every key in bulk (by
// COPY when byCopy, failing with errKeyTaken if a key is taken; by INSERT …
// ON CONFLICT otherwise), decide each request's records in order exactly as
// the embedded store does, give back the keys of refused requests, insert
// the new records and their tail rows.
func (s *Store) claimAndInsert(ctx context.Context, tx pgx.Tx, group []*request, byCopy bool) ([]reply, error) {
	// The first record of each key in the group, in key order: claims in one
	// order everywhere, so two replicas claiming overlapping batches wait on
	// each other instead of deadlocking.
	first := map[key]*store.Record{}
	for _, req := range group {
		for i := range req.records {
			r := &req.records[i]
			if _, ok := first[keyOf(r)]; !ok {
				first[keyOf(r)] = r
			}
		}
	}
	keys := make([]key, 0, len(first))
	for k := range first {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	var c columns
	for _, k := range keys {
		c.addKey(k, first[k].Fingerprint, first[k].Time())
	}
	claimed := make(map[key]bool, len(keys))
	var kind, subject, id string
	if byCopy {
		if err := copyClaim(ctx, tx, &c); err != nil {
			return nil, err
		}
		for _, k := range keys {
			claimed[k] = true
		}
	} else {
		rows, err := tx.Query(ctx, `INSERT INTO cxop_ids (kind, subject, id, fingerprint, event_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
ON CONFLICT DO NOTHING
RETURNING kind, subject, id`, c.kinds, c.subjects, c.ids, c.fingerprints, c.times)
		if err != nil {
			return nil, err
		}
		_, err = pgx.ForEachRow(rows, []any{&kind, &subject, &id}, func() error {
			claimed[key{rollup.Kind(kind[0]), subject, id}] = true
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Keys stored before: their fingerprints decide duplicate or conflict.
	stored := map[key]uint64{}
	if len(claimed) < len(keys) {
		s.claims.sawTakenKey()
		var o columns
		for _, k := range keys {
			if !claimed[k] {
				o.addKey(k, 0, 0)
			}
		}
		rows, err := tx.Query(ctx, `SELECT kind, subject, id, fingerprint FROM cxop_ids
WHERE (kind, subject, id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`, o.kinds, o.subjects, o.ids)
		if err != nil {
			return nil, err
		}
		var fp int64
		_, err = pgx.ForEachRow(rows, []any{&kind, &subject, &id, &fp}, func() error {
			stored[key{rollup.Kind(kind[0]), subject, id}] = uint64(fp)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(stored) != len(o.ids) {
			return nil, errClaimVanished
		}
	}

	// Requests in order, as the embedded store's committer takes them.
	results := make([]reply, len(group))
	accepted := map[key]*store.Record{} // new keys and the record that stands for each
	var fresh []*store.Record
	for gi, req := range group {
		var added []key
		res := &results[gi].res
		for i := range req.records {
			r := &req.records[i]
			k := keyOf(r)
			var have uint64
			dup := false
			if a, ok := accepted[k]; ok {
				have, dup = a.Fingerprint, true
			} else if fp, ok := stored[k]; ok {
				have, dup = fp, true
			}
			if !dup {
				accepted[k] = r
				added = append(added, k)
				continue
			}
			if have != 0 && r.Fingerprint != 0 && have != r.Fingerprint {
				for _, k := range added {
					delete(accepted, k)
				}
				results[gi] = reply{err: &store.ConflictError{Index: i, ID: r.ID}}
				break
			}
			if res.Duplicate == nil {
				res.Duplicate = make([]bool, len(req.records))
			}
			res.Duplicate[i] = true
			res.Duplicates++
		}
		if results[gi].err != nil {
			continue
		}
		for i := range req.records {
			if res.Duplicate == nil || !res.Duplicate[i] {
				fresh = append(fresh, &req.records[i])
				res.Accepted++
			}
		}
	}

	// Keys claimed for refused requests go back; keys whose standing record
	// is not the one claimed with get its fingerprint and time.
	var drop, fix columns
	for _, k := range keys {
		if !claimed[k] {
			continue
		}
		a, ok := accepted[k]
		switch {
		case !ok:
			drop.addKey(k, 0, 0)
		case a != first[k] && (a.Fingerprint != first[k].Fingerprint || a.Time() != first[k].Time()):
			fix.addKey(k, a.Fingerprint, a.Time())
		}
	}
	if len(drop.ids) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM cxop_ids WHERE (kind, subject, id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`,
			drop.kinds, drop.subjects, drop.ids); err != nil {
			return nil, err
		}
	}
	if len(fix.ids) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE cxop_ids SET fingerprint = f.fingerprint, event_time = f.event_time
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS f(kind, subject, id, fingerprint, event_time)
WHERE cxop_ids.kind = f.kind AND cxop_ids.subject = f.subject AND cxop_ids.id = f.id`,
			fix.kinds, fix.subjects, fix.ids, fix.fingerprints, fix.times); err != nil {
			return nil, err
		}
	}
	if len(fresh) == 0 {
		return results, nil
	}
	if err := s.insertRecords(ctx, tx, fresh); err != nil {
		return nil, err
	}
	return results, nil
}

// insertRecords writes the new records, their tail rows and the survey
// engine's feed entries with COPY, in the group's transaction. The keys
// were claimed above, by COPY or INSERT … ON CONFLICT (claim.go), so every
// row written here is new. COPY runs the executor once per statement, not
// per row, and PostgreSQL batches its heap inserts (one WAL record and one
// page lock per page instead of per row), which matters with several
// replicas appending to the same last pages. The sequences are taken
// first, in one statement, so the tail rows and the feed keys carry the
// records' own; they are drawn after the claim has inserted the records'
// keys, so the transaction holds its transaction id before any of its
// sequences (a reader of the feed relies on that order to know which
// appends can still commit below a sequence it saw).
func (s *Store) insertRecords(ctx context.Context, tx pgx.Tx, fresh []*store.Record) error {
	rows, err := tx.Query(ctx, `SELECT nextval('cxop_record_seq') FROM generate_series(1, $1)`, len(fresh))
	if err != nil {
		return err
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	if len(seqs) != len(fresh) {
		return fmt.Errorf("took %d record sequences for %d records", len(seqs), len(fresh))
	}
	// In the group's order, as the embedded store numbers them.
	slices.Sort(seqs)
	cols := make([]recordRow, len(fresh))
	for i, r := range fresh {
		cols[i] = rowOf(seqs[i], r)
	}
	subjects, rest := 0, 0
	for i := range cols {
		subjects += len(cols[i].subject)
		rest += len(cols[i].id) + len(cols[i].body)
	}
	// Sizes: a row's field count, a length per field, and the fields.
	records := newCopyRows(10, subjects+rest+len(cols)*(2+10*4+8+8+1+8+8+2+2))
	tail := newCopyRows(8, subjects+len(cols)*(2+8*4+8+1+8+8+8+2+2))
	for i := range cols {
		c := &cols[i]
		records.row()
		records.int64(c.seq)
		records.int64(c.time)
		records.text(c.kind)
		records.text(c.subject)
		records.text(c.id)
		records.int64(c.hash)
		records.float64(c.wait)
		records.int16(c.flags)
		records.int16(c.score)
		records.bytea(c.body)
		tail.row()
		tail.int64(c.seq)
		tail.text(c.kind)
		tail.text(c.subject)
		tail.int64(c.time)
		tail.int64(c.hash)
		tail.float64(c.wait)
		tail.int16(c.flags)
		tail.int16(c.score)
	}
	if err := copyInto(ctx, tx, copyRecords, records); err != nil {
		return err
	}
	if err := copyInto(ctx, tx, copyTail, tail); err != nil {
		return err
	}
	if s.opts.NoEngineFeed {
		return nil
	}
	// Only what the survey engine acts on: a record no survey's trigger
	// or closed loop of the accepting collector's config wants costs
	// neither a feed entry now nor the engine's read and delete later.
	feed := make([]int, 0, len(fresh))
	for i, r := range fresh {
		if !r.SkipFeed {
			feed = append(feed, i)
		}
	}
	if len(feed) == 0 {
		return nil
	}
	// The survey engine's feed (engine.go): the entries commit with the
	// records, and the engine deletes them in the transaction that writes
	// what they caused, so it reads every record once however the commits
	// of replicas interleave (sequences are handed out before commit, so a
	// cursor over them could pass a record that commits late).
	entries := newCopyRows(2, 0)
	for _, i := range feed {
		c := &cols[i]
		entries.row()
		entries.bytea(feedKey(c.seq))
		entries.bytea(kv.EncodeFeed(byte(fresh[i].Kind), c.subject, fresh[i].Contact, c.body))
	}
	return copyInto(ctx, tx, copyFeed, entries)
}

// The append's COPY statements, in the order insertRecords gives values.
var (
	copyRecords = copyStatement("cxop_records", "seq", "event_time", "kind", "subject", "id", "customer_hash", "wait_seconds", "flags", "score", "body")
	copyTail    = copyStatement("cxop_tail", "seq", "kind", "subject", "event_time", "customer_hash", "wait_seconds", "flags", "score")
	copyFeed    = copyStatement("cxop_engine_kv", "key", "value")
	copyKeys    = copyStatement("cxop_ids", "kind", "subject", "id", "fingerprint", "event_time")
)

// feedKey is a record's key in the survey engine's feed.
func feedKey(seq int64) []byte {
	return binary.BigEndian.AppendUint64([]byte(kv.FeedPrefix), uint64(seq))
}

// columns are keys as parallel arrays, for unnest.
type columns struct {
	kinds, subjects, ids []string
	fingerprints, times  []int64
}

func (c *columns) addKey(k key, fingerprint uint64, t int64) {
	c.kinds = append(c.kinds, string(rune(k.kind)))
	c.subjects = append(c.subjects, k.subject)
	c.ids = append(c.ids, k.id)
	c.fingerprints = append(c.fingerprints, int64(fingerprint))
	c.times = append(c.times, t)
}

// Flags of a record: what its Event says besides its time, hash and wait.
const (
	flagHasWait = 1 << iota
	flagAssessed
	flagCompliant
	flagHasResolved
	flagResolved
)

// recordRow is a record as its cxop_records and cxop_tail rows hold it.
type recordRow struct {
	seq, time, hash   int64
	kind, subject, id string
	wait              float64
	flags, score      int16
	body              []byte
}

func rowOf(seq int64, r *store.Record) recordRow {
	var flags int16
	var h uint64
	var wait float64
	var score int16
	switch r.Kind {
	case rollup.KindTouchpoint:
		e := &r.Event
		for _, f := range [...]struct {
			bit int16
			on  bool
		}{{flagHasWait, e.HasWait}, {flagAssessed, e.Assessed}, {flagCompliant, e.Compliant},
			{flagHasResolved, e.HasResolved}, {flagResolved, e.Resolved}} {
			if f.on {
				flags |= f.bit
			}
		}
		h, wait = e.CustomerHash, e.WaitSeconds
	case rollup.KindSurvey:
		h, score = r.Response.CustomerHash, int16(r.Response.Score)
	}
	if math.IsNaN(wait) || math.IsInf(wait, 0) {
		wait = 0 // ingest never lets these through; the column refuses none
	}
	body := r.JSON
	if body == nil {
		body = []byte{}
	}
	return recordRow{seq: seq, time: r.Time(), hash: int64(h), kind: string(rune(r.Kind)), subject: r.Subject, id: r.ID,
		wait: wait, flags: flags, score: score, body: body}
}

// tailRecord is what a tail row adds to the rollups.
type tailRecord struct {
	kind    rollup.Kind
	subject string
	event   rollup.Event
	resp    rollup.Response
}

func decodeTail(kind, subject string, t, hash int64, wait float64, flags, score int16) tailRecord {
	tr := tailRecord{kind: rollup.Kind(kind[0]), subject: subject}
	switch tr.kind {
	case rollup.KindTouchpoint:
		tr.event = rollup.Event{Time: t, CustomerHash: uint64(hash), WaitSeconds: wait,
			HasWait: flags&flagHasWait != 0, Assessed: flags&flagAssessed != 0, Compliant: flags&flagCompliant != 0,
			HasResolved: flags&flagHasResolved != 0, Resolved: flags&flagResolved != 0}
	default:
		tr.resp = rollup.Response{Time: t, CustomerHash: uint64(hash), Score: int(score)}
	}
	return tr
}

func (t *tailRecord) time() int64 {
	if t.kind == rollup.KindTouchpoint {
		return t.event.Time
	}
	return t.resp.Time
}
