package storecopy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/pgstore"
	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func event(id string, at time.Time, customer uint64, extra string) store.Record {
	js := fmt.Sprintf(`{"id":%q,"touchpoint":"chat","time":%q,"waitSeconds":30%s}`, id, at.Format(time.RFC3339Nano), extra)
	return store.Record{Kind: rollup.KindTouchpoint, Subject: "chat", ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Event: rollup.Event{Time: at.UnixNano(), CustomerHash: customer, HasWait: true, WaitSeconds: 30, Assessed: true, Compliant: true}}
}

func openEmbedded(t testing.TB, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir, Now: func() time.Time { return t0 }, Retention: keepAll, Uncompressed: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func openPostgres(t testing.TB, dsn string) *Postgres {
	t.Helper()
	pg, err := OpenPostgres(context.Background(), pgstore.Options{DSN: dsn, Now: func() time.Time { return t0 }, Retention: keepAll})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	return pg
}

func exportChat(t testing.TB, pg *Postgres) string {
	t.Helper()
	var b strings.Builder
	if err := pg.Store.Export(context.Background(), rollup.KindTouchpoint, "chat", func(js []byte) error {
		b.Write(js)
		b.WriteByte('\n')
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// An id the target holds with another payload is reported, and the
// target's record stands; the other records are copied.
func TestConflictIsReportedAndNotOverwritten(t *testing.T) {
	dsn := pgtest.Start(t).NewDatabase(t)
	st := openEmbedded(t, t.TempDir())
	defer st.Close()
	if _, err := st.Submit(context.Background(), []store.Record{event("e1", t0, 1, ""), event("e2", t0, 2, ""), event("e3", t0, 3, "")}); err != nil {
		t.Fatal(err)
	}
	pg := openPostgres(t, dsn)
	theirs := event("e2", t0, 2, `,"resolved":true`)
	if _, err := pg.Store.Submit(context.Background(), []store.Record{theirs}); err != nil {
		t.Fatal(err)
	}
	rep, err := EmbeddedToPostgres(context.Background(), st, pg, Options{Batch: 10})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 3 || rep.New != 2 || rep.Duplicates != 0 || fmt.Sprint(rep.Conflicts) != "[touchpoint chat id e2]" {
		t.Errorf("report: %+v; want e1 and e3 new, e2 a conflict", rep)
	}
	if got := exportChat(t, pg); strings.Count(got, "\n") != 3 || !strings.Contains(got, string(theirs.JSON)) {
		t.Errorf("target's records:\n%s\nwant e1, e3 and its own e2 (%s)", got, theirs.JSON)
	}
}

// BenchmarkCopyEmbeddedToPostgres copies 100,000 interactions from an
// embedded store into an empty database and reports records/s.
func BenchmarkCopyEmbeddedToPostgres(b *testing.B) {
	const n = 100_000
	srv := pgtest.Start(b)
	dir := b.TempDir()
	st := openEmbedded(b, dir)
	recs := make([]store.Record, 0, 1000)
	for i := range n {
		recs = append(recs, event(fmt.Sprintf("ev-%07d", i), t0.Add(-time.Duration(i)*time.Second), uint64(i%5000), ""))
		if len(recs) == cap(recs) {
			if _, err := st.Submit(context.Background(), recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		pg := openPostgres(b, srv.NewDatabase(b))
		b.StartTimer()
		start := time.Now()
		rep, err := EmbeddedToPostgres(context.Background(), st, pg, Options{})
		elapsed += time.Since(start)
		if err != nil || rep.New != n {
			b.Fatalf("%+v %v", rep, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
	_ = st.Close()
}

// BenchmarkCopyPostgresToEmbedded copies 100,000 interactions from a
// database into a new data directory and reports records/s.
func BenchmarkCopyPostgresToEmbedded(b *testing.B) {
	const n = 100_000
	srv := pgtest.Start(b)
	st := openEmbedded(b, b.TempDir())
	recs := make([]store.Record, 0, 1000)
	for i := range n {
		recs = append(recs, event(fmt.Sprintf("ev-%07d", i), t0.Add(-time.Duration(i)*time.Second), uint64(i%5000), ""))
		if len(recs) == cap(recs) {
			if _, err := st.Submit(context.Background(), recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	pg := openPostgres(b, srv.NewDatabase(b))
	if rep, err := EmbeddedToPostgres(context.Background(), st, pg, Options{}); err != nil || rep.New != n {
		b.Fatalf("%+v %v", rep, err)
	}
	_ = st.Close()
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		dir := b.TempDir()
		start := time.Now()
		rep, err := PostgresToEmbedded(context.Background(), pg, store.Options{Dir: dir, Retention: keepAll}, Options{})
		elapsed += time.Since(start)
		if err != nil || rep.New != n {
			b.Fatalf("%+v %v", rep, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "records/s")
}

// contactsOf reads every record of st with its contact: id -> contact ("" for
// none).
func contactsOf(t testing.TB, st *store.Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := st.CopyRecords(1, func(_ uint64, r *store.Record) error {
		got[r.ID] = string(r.Contact)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A contact copied into the embedded store keeps its own age: it is pruned
// contactRetention after the interaction, not after the copy. The older
// contact comes after a younger one in the source's order, so the prune
// cannot stop at the first contact inside the retention.
func TestCopiedContactExpiresOnItsOwnClock(t *testing.T) {
	const contactRetention = 7 * 24 * time.Hour
	dsn := pgtest.Start(t).NewDatabase(t)
	pg := openPostgres(t, dsn)
	ctx := context.Background()
	young := event("young", t0.Add(-24*time.Hour), 1, "")
	young.Contact = []byte(`{"email":"young@example.org"}`)
	old := event("old", t0.Add(-contactRetention+30*time.Minute), 2, "")
	old.Contact = []byte(`{"email":"old@example.org"}`)
	for _, r := range []store.Record{young, old} {
		if _, err := pg.Store.Submit(ctx, []store.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	rep, err := PostgresToEmbedded(ctx, pg, store.Options{Dir: dir, Retention: keepAll, Now: func() time.Time { return t0 }}, Options{})
	if err != nil || rep.New != 2 {
		t.Fatalf("copy: %+v %v", rep, err)
	}
	later := t0.Add(time.Hour)
	st, err := store.Open(store.Options{Dir: dir, Retention: keepAll, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := contactsOf(t, st); got["young"] != string(young.Contact) || got["old"] != string(old.Contact) {
		t.Fatalf("contacts after the copy: %q; want both", got)
	}
	n, err := st.PruneContacts(later.Add(-contactRetention))
	if err != nil {
		t.Fatal(err)
	}
	got := contactsOf(t, st)
	if n != 1 || got["old"] != "" || got["young"] != string(young.Contact) {
		t.Errorf("an hour after the copy, %d pruned, contacts %q; want the old one (received %s before) gone and the young one kept",
			n, got, contactRetention-30*time.Minute)
	}
	// A second prune finds nothing more, and later ingest is pruned on the
	// commit's clock as before.
	if n, err := st.PruneContacts(later.Add(-contactRetention)); err != nil || n != 0 {
		t.Errorf("second prune: %d %v; want 0", n, err)
	}
	fresh := event("fresh", later, 3, "")
	fresh.Contact = []byte(`{"email":"fresh@example.org"}`)
	if _, err := st.Submit(ctx, []store.Record{fresh}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.PruneContacts(later.Add(time.Minute)); err != nil || n != 2 {
		t.Errorf("prune of everything committed before a minute after the copy: %d %v; want the young and the fresh contact", n, err)
	}
	if got := contactsOf(t, st); got["young"] != "" || got["fresh"] != "" {
		t.Errorf("contacts left: %q", got)
	}
}
