package pgstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

// server is one PostgreSQL shared by the package's tests; each test takes a
// database of its own. The restart test starts a server of its own.
var server *pgtest.Server

func TestMain(m *testing.M) {
	s, err := pgtest.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start a test PostgreSQL:", err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the test PostgreSQL:", err)
		code = 1
	}
	os.Exit(code)
}

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// open opens a store on dsn that folds only when the test says so.
func open(t testing.TB, dsn string, mod ...func(*Options)) *Store {
	t.Helper()
	o := Options{DSN: dsn, FoldInterval: -1, Now: func() time.Time { return t0 }}
	for _, f := range mod {
		f(&o)
	}
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// event is an interaction record whose fingerprint is its JSON's hash, as
// the collector computes it.
func event(subject, id string, at time.Time, customer uint64, wait float64) store.Record {
	js := fmt.Sprintf(`{"id":%q,"touchpoint":%q,"time":%q,"waitSeconds":%g}`, id, subject, at.Format(time.RFC3339Nano), wait)
	return store.Record{
		Kind: rollup.KindTouchpoint, Subject: subject, ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Event: rollup.Event{Time: at.UnixNano(), CustomerHash: customer, HasWait: true, WaitSeconds: wait,
			Assessed: true, Compliant: wait <= 60, HasResolved: customer%3 == 0, Resolved: customer%2 == 0},
	}
}

func answer(subject, id string, at time.Time, customer uint64, score int) store.Record {
	js := fmt.Sprintf(`{"id":%q,"survey":%q,"time":%q,"score":%d}`, id, subject, at.Format(time.RFC3339Nano), score)
	return store.Record{
		Kind: rollup.KindSurvey, Subject: subject, ID: id, JSON: []byte(js), Fingerprint: xxhash.Sum64String(js),
		Response: rollup.Response{Time: at.UnixNano(), CustomerHash: customer, Score: score},
	}
}

// foldAll folds until the tail is empty.
func foldAll(t testing.TB, s *Store) {
	t.Helper()
	for {
		n, err := s.Fold(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// count runs a count query.
func count(t testing.TB, s *Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
