package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cxop-dev/cxop/internal/survey/engine/kv"
)

// contactPrunePage bounds the feed entries one PruneContacts query reads.
const contactPrunePage = 1000

// PruneContacts drops the contacts of interactions whose time is before
// cutoff (now less contactRetention). On PostgreSQL an interaction's
// contact is kept only in its survey engine feed entry (the records' JSON
// never holds it), which the engine deletes as it reads it, seconds after
// the append; an entry still there after contactRetention (no engine ran)
// keeps its record for the engine and loses its contact. The record's time
// stands in for its receipt, which the feed does not keep: an interaction
// older than that is past inviting anyway (engine.Options.StaleAfter). Each
// entry is rewritten only if it is still what was read, so an engine that
// consumed it meanwhile wins.
func (s *Store) PruneContacts(ctx context.Context, cutoff time.Time) (int, error) {
	start := []byte(kv.FeedPrefix)
	end := []byte("s/feed0") // the byte after '/'
	pruned := 0
	for {
		rows, err := s.pool.Query(ctx, `SELECT key, value FROM cxop_engine_kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3`,
			start, end, contactPrunePage)
		if err != nil {
			return pruned, fmt.Errorf("prune contacts: %w", unavailable(err))
		}
		type entry struct{ key, value []byte }
		entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (entry, error) {
			var e entry
			return e, r.Scan(&e.key, &e.value)
		})
		if err != nil {
			return pruned, fmt.Errorf("prune contacts: %w", unavailable(err))
		}
		for _, e := range entries {
			kind, subject, contact, body, err := kv.DecodeFeed(e.value)
			if err != nil {
				return pruned, fmt.Errorf("prune contacts: feed entry %x: %w", e.key, err)
			}
			if len(contact) == 0 {
				continue
			}
			var rec struct {
				Time time.Time `json:"time"`
			}
			if err := json.Unmarshal(body, &rec); err != nil {
				return pruned, fmt.Errorf("prune contacts: feed entry %x: %w", e.key, err)
			}
			if !rec.Time.Before(cutoff) {
				continue
			}
			tag, err := s.pool.Exec(ctx, `UPDATE cxop_engine_kv SET value = $3 WHERE key = $1 AND value = $2`,
				e.key, e.value, kv.EncodeFeed(kind, subject, nil, body))
			if err != nil {
				return pruned, fmt.Errorf("prune contacts: %w", unavailable(err))
			}
			pruned += int(tag.RowsAffected())
		}
		if len(entries) < contactPrunePage {
			return pruned, nil
		}
		start = entries[len(entries)-1].key
	}
}
