package pgstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Raw records are partitioned by UTC day of event time, one table per day
// named cxop_records_pYYYYMMDD. There is no default partition: a row with
// no partition fails its insert, which makes the day's partition and runs
// again, where a default partition would have to be scanned each time a
// day is added.

const day = int64(24 * time.Hour)

func dayStart(t int64) int64 {
	d := t / day * day
	if t < 0 && t%day != 0 {
		d -= day
	}
	return d
}

func partitionName(dayStartNs int64) string {
	return "cxop_records_p" + time.Unix(0, dayStartNs).UTC().Format("20060102")
}

// partitionDay parses a partition's name back to its day's start.
func partitionDay(name string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, "cxop_records_p")
	if !ok {
		return 0, false
	}
	t, err := time.Parse("20060102", rest)
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}

// ensurePartitions makes the partitions of the days of the given times
// that this replica has not seen made.
func (s *Store) ensurePartitions(ctx context.Context, times []int64) error {
	var days []int64
	s.partMu.Lock()
	for _, t := range times {
		if d := dayStart(t); !s.partitions[d] && !slices.Contains(days, d) {
			days = append(days, d)
		}
	}
	s.partMu.Unlock()
	for _, d := range days {
		sql := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF cxop_records FOR VALUES FROM (%d) TO (%d)`,
			pgx.Identifier{partitionName(d)}.Sanitize(), d, d+day)
		if _, err := s.pool.Exec(ctx, sql); err != nil && !alreadyExists(err) {
			return fmt.Errorf("create record partition %s: %w", partitionName(d), err)
		}
		s.partMu.Lock()
		s.partitions[d] = true
		s.partMu.Unlock()
	}
	return nil
}

// forgetPartitions makes the next ensurePartitions look again, after an
// insert found a day's partition missing.
func (s *Store) forgetPartitions() {
	s.partMu.Lock()
	clear(s.partitions)
	s.partMu.Unlock()
}

// partitionsList returns the record partitions that exist, by day.
func (s *Store) partitionsList(ctx context.Context) (map[int64]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'cxop_records'::regclass`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := map[int64]string{}
	for _, n := range names {
		if d, ok := partitionDay(n); ok {
			out[d] = n
		}
	}
	return out, nil
}
