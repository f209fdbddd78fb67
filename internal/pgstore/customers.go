package pgstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/customerdata"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// The records are one customerdata.Holder, and the database keeps the
// audit log of erasures, as the embedded store does.
var (
	_ customerdata.Holder   = (*Store)(nil)
	_ customerdata.AuditLog = (*Store)(nil)
)

// eraseBatch bounds the records one erasure transaction deletes.
const eraseBatch = 1000

// customerRow is one stored record of a customer.
type customerRow struct {
	seq, eventTime int64
	kind, subject  string
	id             string
	body           []byte
	// contact is the interaction's contact while its feed entry keeps it.
	contact []byte
}

// customerPage reads one page of customer's candidate records (eraseBatch
// rows after sequence after, in sequence order) and calls fn with those
// that are the customer's. It returns the last sequence read and the
// page's length. As in the embedded store (internal/store/erase.go),
// the 64-bit hash of the customer selects candidates and the customer in
// the record's JSON decides, so that a hash collision never lists or erases
// another customer.
func (s *Store) customerPage(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, customer string, after int64, fn func(*customerRow) error) (last int64, n int, err error) {
	// An interaction's contact is kept only in its survey engine feed
	// entry (append.go) until the engine reads it: joined here so that an
	// access request shows it with its record.
	rows, err := q.Query(ctx, `SELECT r.seq, r.event_time, r.kind, r.subject, r.id, r.body, k.value FROM cxop_records r
LEFT JOIN cxop_engine_kv k ON k.key = '\x732f666565642f'::bytea || int8send(r.seq)
WHERE r.customer_hash = $1 AND r.seq > $2 ORDER BY r.seq LIMIT $3`, int64(xxhash.Sum64String(customer)), after, eraseBatch)
	if err != nil {
		return after, 0, unavailable(err)
	}
	var r customerRow
	var page []customerRow
	var feed []byte
	_, err = pgx.ForEachRow(rows, []any{&r.seq, &r.eventTime, &r.kind, &r.subject, &r.id, &r.body, &feed}, func() error {
		r.body = append([]byte(nil), r.body...)
		r.contact = nil
		if feed != nil {
			_, _, contact, _, err := kv.DecodeFeed(feed)
			if err != nil {
				return fmt.Errorf("feed entry of record %d: %w", r.seq, err)
			}
			r.contact = append([]byte(nil), contact...)
		}
		page = append(page, r)
		return nil
	})
	if err != nil {
		return after, 0, unavailable(err)
	}
	last = after
	for i := range page {
		last = page[i].seq
		var v struct {
			Customer string `json:"customer"`
		}
		if err := json.Unmarshal(page[i].body, &v); err != nil {
			return last, len(page), fmt.Errorf("stored record %d: %w", page[i].seq, err)
		}
		if v.Customer != customer {
			continue
		}
		if err := fn(&page[i]); err != nil {
			return last, len(page), err
		}
	}
	return last, len(page), nil
}

func kindName(kind string) string {
	if kind == string(rune(rollup.KindSurvey)) {
		return customerdata.Responses
	}
	return customerdata.Events
}

// ListCustomer calls fn with the JSON of every record of customer, as
// exported, kind "events" or "responses".
func (s *Store) ListCustomer(ctx context.Context, customer string, fn func(kind string, item json.RawMessage) error) error {
	for after := int64(0); ; {
		last, n, err := s.customerPage(ctx, s.pool, customer, after, func(r *customerRow) error {
			item := r.body
			if len(r.contact) > 0 {
				// The contact stored apart, back in its record, as the
				// embedded store shows it.
				item = append(append(append(r.body[:len(r.body)-1:len(r.body)-1], `,"contact":`...), r.contact...), '}')
			}
			return fn(kindName(r.kind), item)
		})
		if err != nil {
			return err
		}
		if n < eraseBatch {
			return nil
		}
		after = last
	}
}

// EraseCustomer deletes every record of customer stored when it starts,
// with its idempotency key, a transaction per page of eraseBatch records;
// each commit is durable. Records committed while it runs (by this or
// another replica) may remain, as on the embedded store. The rollups, and
// the tail rows not yet folded into them, keep what the records added:
// counts and sketches of hashed ids, no personal data.
func (s *Store) EraseCustomer(ctx context.Context, customer string) (customerdata.Counts, error) {
	counts := customerdata.Counts{}
	var upTo int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM cxop_records WHERE customer_hash = $1`,
		int64(xxhash.Sum64String(customer))).Scan(&upTo); err != nil {
		return counts, unavailable(fmt.Errorf("erase records: %w", err))
	}
	for after := int64(0); after < upTo; {
		var page customerdata.Counts
		var last int64
		var n int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			page = customerdata.Counts{}
			var seqs, times []int64
			var kinds, subjects, ids []string
			var err error
			last, n, err = s.customerPage(ctx, tx, customer, after, func(r *customerRow) error {
				if r.seq > upTo {
					return nil
				}
				seqs, times = append(seqs, r.seq), append(times, r.eventTime)
				kinds, subjects, ids = append(kinds, r.kind), append(subjects, r.subject), append(ids, r.id)
				return nil
			})
			if err != nil || len(seqs) == 0 {
				return err
			}
			// The event time names the partition, so each delete finds its
			// row in one partition. What is counted is what this delete
			// removed: a replica erasing the same customer at once counts
			// each record on one side only.
			rows, err := tx.Query(ctx, `DELETE FROM cxop_records r USING unnest($1::bigint[], $2::bigint[]) AS d(seq, event_time)
WHERE r.seq = d.seq AND r.event_time = d.event_time RETURNING r.kind`, seqs, times)
			if err != nil {
				return err
			}
			var kind string
			if _, err := pgx.ForEachRow(rows, []any{&kind}, func() error { page[kindName(kind)]++; return nil }); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `DELETE FROM cxop_ids i USING unnest($1::text[], $2::text[], $3::text[]) AS d(kind, subject, id)
WHERE i.kind = d.kind AND i.subject = d.subject AND i.id = d.id`, kinds, subjects, ids)
			return err
		})
		if err != nil {
			return counts, fmt.Errorf("erase records: %w", err)
		}
		counts.Add(page)
		if n < eraseBatch {
			break
		}
		after = last
	}
	return counts, nil
}

// auditKeyName is the cxop_settings row holding the audit log's hash key.
const auditKeyName = "erasure-hash-key"

// CustomerHash is the hash an erasure of customer is logged under:
// HMAC-SHA256 with a random key made on first use and kept in the
// database, the same for every replica (the first to store one wins).
func (s *Store) CustomerHash(customer string) (string, error) {
	key, err := s.auditKey(context.Background())
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(customer))
	return hex.EncodeToString(m.Sum(nil)), nil
}

func (s *Store) auditKey(ctx context.Context) ([]byte, error) {
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	if s.hashKey != nil {
		return s.hashKey, nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	var key []byte
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO cxop_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, auditKeyName, fresh); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT value FROM cxop_settings WHERE name = $1`, auditKeyName).Scan(&key)
	})
	if err != nil {
		return nil, fmt.Errorf("the audit log's hash key: %w", err)
	}
	if len(key) != 32 {
		return nil, errors.New("the audit log's hash key in cxop_settings is not 32 bytes")
	}
	s.hashKey = key
	return key, nil
}

// AppendErasure records an erasure in the audit log, committed.
func (s *Store) AppendErasure(e customerdata.Erasure) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `INSERT INTO cxop_erasures (time, entry) VALUES ($1, $2)`, e.Time.UnixNano(), v); err != nil {
		return unavailable(fmt.Errorf("audit log: %w", err))
	}
	return nil
}

// Erasures calls fn with the audit log's entries from since on, oldest
// first.
func (s *Store) Erasures(since time.Time, fn func(customerdata.Erasure) error) error {
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, `SELECT seq, entry FROM cxop_erasures WHERE time >= $1 ORDER BY time, seq`, max(since.UnixNano(), 0))
	if err != nil {
		return unavailable(fmt.Errorf("audit log: %w", err))
	}
	var seq int64
	var entry []byte
	_, err = pgx.ForEachRow(rows, []any{&seq, &entry}, func() error {
		var e customerdata.Erasure
		if err := json.Unmarshal(entry, &e); err != nil {
			return fmt.Errorf("audit log entry %d: %w", seq, err)
		}
		return fn(e)
	})
	return unavailable(err)
}

// PruneErasures deletes the audit log's entries from before cutoff.
func (s *Store) PruneErasures(cutoff time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.CommitTimeout)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM cxop_erasures WHERE time < $1`, cutoff.UnixNano())
	return unavailable(err)
}
