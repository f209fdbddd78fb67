package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
	"github.com/jackc/pgx/v5"
)

// TestPruneDropsPartitions stores records over six days and prunes at a
// cutoff inside the fourth: the three days before it lose their
// partitions, the fourth its rows before the cutoff, and exports, ids and
// counts say the same. A replica not holding the retention lease prunes
// nothing.
func TestPruneDropsPartitions(t *testing.T) {
	ctx := context.Background()
	dsn := server.NewDatabase(t)
	s := open(t, dsn)
	base := time.Date(2026, 11, 14, 0, 0, 0, 0, time.UTC)
	var recs []store.Record
	for d := range 6 {
		for h := 0; h < 24; h += 6 { // 00:00, 06:00, 12:00, 18:00
			at := base.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour)
			recs = append(recs, event("chat", fmt.Sprintf("d%d-h%02d", d, h), at, uint64(d*100+h), 5))
		}
	}
	if _, err := s.Submit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	partitions := func() []string {
		rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'cxop_records'::regclass ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			_ = rows.Scan(&n)
			out = append(out, n)
		}
		return out
	}
	before := partitions()
	for _, want := range []string{"cxop_records_p20261114", "cxop_records_p20261117", "cxop_records_p20261119"} {
		if !slices.Contains(before, want) {
			t.Fatalf("partitions %v lack %s", before, want)
		}
	}

	// Another replica holds the retention lease: this one prunes nothing.
	if _, err := s.pool.Exec(ctx, `UPDATE cxop_leases SET holder = 'other', expires_at = now() + interval '1 hour' WHERE name = 'retention'`); err != nil {
		t.Fatal(err)
	}
	cutoff := base.Add(3*24*time.Hour + 9*time.Hour) // 17 Nov 09:00
	if n, err := s.PruneRecords(ctx, cutoff); err != nil || n != 0 {
		t.Fatalf("prune without the lease: %d, %v; want 0", n, err)
	}
	if got := partitions(); !slices.Equal(got, before) {
		t.Fatalf("prune without the lease changed partitions to %v", got)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE cxop_leases SET expires_at = now() - interval '1 second' WHERE name = 'retention'`); err != nil {
		t.Fatal(err)
	}

	n, err := s.PruneRecords(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	// Three whole days (12 records) and 17 Nov 00:00 and 06:00.
	if n != 14 {
		t.Errorf("pruned %d records, want 14", n)
	}
	after := partitions()
	for _, gone := range []string{"cxop_records_p20261114", "cxop_records_p20261115", "cxop_records_p20261116"} {
		if slices.Contains(after, gone) {
			t.Errorf("partition %s still there after the prune: %v", gone, after)
		}
	}
	if !slices.Contains(after, "cxop_records_p20261117") {
		t.Errorf("the cutoff's day lost its partition: %v", after)
	}
	var exported []string
	if err := s.Export(ctx, rollup.KindTouchpoint, "chat", func(js []byte) error {
		exported = append(exported, string(js))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(exported) != 10 || exported[0] != string(recs[14].JSON) {
		t.Errorf("export after the prune: %d records starting %q, want 10 starting with 17 Nov 12:00", len(exported), exported[0])
	}
	for _, c := range []struct {
		id   string
		want bool
	}{{"d0-h00", false}, {"d3-h06", false}, {"d3-h12", true}, {"d5-h18", true}} {
		if has, err := s.Has(ctx, rollup.KindTouchpoint, "chat", c.id); err != nil || has != c.want {
			t.Errorf("Has(%s) = %v (%v), want %v", c.id, has, err, c.want)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_ids`); n != 10 {
		t.Errorf("%d idempotency keys after the prune, want 10", n)
	}
	// The fold still counts every record, pruned or not: rollups keep
	// their own retention.
	foldAll(t, s)
	a, _, err := s.TouchpointWindow(ctx, []string{"chat"}, 10*24*time.Hour, base.Add(6*24*time.Hour), t0)
	if err != nil || a.Interactions != 24 {
		t.Errorf("rollups count %d interactions (%v), want all 24", a.Interactions, err)
	}
	// A record for a day whose partition was dropped (by another replica,
	// as far as this one knows) makes the partition again.
	late := event("chat", "late", base.Add(30*time.Hour), 1, 1)
	if res, err := s.Submit(ctx, []store.Record{late}); err != nil || res.Accepted != 1 {
		t.Errorf("append into a dropped day: %+v, %v", res, err)
	}
}

// TestMigrationsIdempotent opens three replicas at once on a new database
// (one migrates, the others wait or find it done), then again, and refuses
// a schema newer than the build.
func TestMigrationsIdempotent(t *testing.T) {
	dsn := server.NewDatabase(t)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			s, err := Open(context.Background(), Options{DSN: dsn, FoldInterval: -1})
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_schema_migrations`); n != len(ms) {
		t.Errorf("%d migrations recorded, want %d", n, len(ms))
	}
	if n := count(t, s, `SELECT count(*) FROM cxop_fold`); n != 1 {
		t.Errorf("%d fold rows, want 1 (the migration ran once)", n)
	}
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO cxop_schema_migrations (version, name) VALUES (999, '0999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), Options{DSN: dsn, FoldInterval: -1})
	if err == nil || !contains(err.Error(), "version 999, newer than this build's") {
		t.Fatalf("open on a newer schema: %v, want a refusal naming the versions", err)
	}
}

// TestOpenRefusesBadDSNWithoutEchoingIt: the connection string may carry a
// password; the error must not repeat it.
func TestOpenRefusesBadDSNWithoutEchoingIt(t *testing.T) {
	_, err := Open(context.Background(), Options{DSN: "postgres://u:s3cret@[bad"})
	if err == nil || contains(err.Error(), "s3cret") {
		t.Fatalf("bad DSN: %v", err)
	}
	if _, err := Open(context.Background(), Options{}); err == nil || !contains(err.Error(), "empty") {
		t.Fatalf("empty DSN: %v, want a refusal saying it is empty", err)
	}
}

// TestPruneExpiredCountsWhatIsKept: records at 1, 10, 20 and 30 days old,
// pruned at 25 days with "recent" meaning the last 15: one deleted, three
// kept, two recent, the oldest kept 20 days old.
func TestPruneExpiredCountsWhatIsKept(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t))
	var recs []store.Record
	for _, days := range []int{1, 10, 20, 30} {
		recs = append(recs, event("chat", fmt.Sprintf("age-%d", days), t0.Add(-time.Duration(days)*24*time.Hour), uint64(days), 1))
	}
	if _, err := s.Submit(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got, err := s.PruneExpired(ctx, t0.Add(-25*24*time.Hour), t0.Add(-15*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := Pruned{Deleted: 1, Kept: 3, Recent: 2, Oldest: t0.Add(-20 * 24 * time.Hour)}
	if got != want {
		t.Errorf("PruneExpired = %+v, want %+v", got, want)
	}
	// Nothing left to prune: the same counts, none deleted.
	want.Deleted = 0
	if got, err := s.PruneExpired(ctx, t0.Add(-25*24*time.Hour), t0.Add(-15*24*time.Hour)); err != nil || got != want {
		t.Errorf("second PruneExpired = %+v (%v), want %+v", got, err, want)
	}
}

// TestLeaseHolderRenewsThroughAnotherReplicasLock: a replica holding the
// migration lease renews it even while another replica's claim has the
// lease row locked for a moment (as a claim that found the row being
// renewed does); it waits for that lock instead of reading it as the lease
// lost, which now and then failed a migration of replicas starting
// together.
func TestLeaseHolderRenewsThroughAnotherReplicasLock(t *testing.T) {
	ctx := context.Background()
	s := open(t, server.NewDatabase(t))
	if err := s.waitLease(ctx, "migrate"); err != nil {
		t.Fatal(err)
	}
	other, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	if _, err := other.Exec(ctx, `SELECT 1 FROM cxop_leases WHERE name = 'migrate' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// A claim skips the locked row: not proof of the lease lost.
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		held, err := s.claimLease(ctx, tx, "migrate")
		if err == nil && held {
			t.Error("a claim took the lease through another transaction's lock")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	renewed := make(chan error, 1)
	go func() {
		renewed <- pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			held, err := s.renewLease(ctx, tx, "migrate")
			if err == nil && !held {
				err = errors.New("the holder's renewal found the lease lost")
			}
			return err
		})
	}()
	// The renewal waits on the lock: it is seen waiting, then the other
	// transaction ends and the renewal succeeds.
	waiting := false
	for range 500 {
		if n := count(t, s, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE cxop_leases%'`); n > 0 {
			waiting = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !waiting {
		t.Fatal("the renewal did not wait on the other transaction's lock")
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
}
