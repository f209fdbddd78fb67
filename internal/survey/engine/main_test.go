package engine

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/cxop-dev/cxop/internal/pgtest"
)

// storeKind names the store a test's engine runs on.
type storeKind string

const (
	onPebble   storeKind = "pebble"
	onPostgres storeKind = "postgres"
)

// onBothStores runs test once on each store, as subtests named after them.
func onBothStores(t *testing.T, test func(t *testing.T, kind storeKind)) {
	for _, kind := range []storeKind{onPebble, onPostgres} {
		t.Run(string(kind), func(t *testing.T) { test(t, kind) })
	}
}

// The test PostgreSQL, started by the first test that needs it and shared
// by all (each takes a database of its own).
var (
	pgOnce   sync.Once
	pgServer *pgtest.Server
	pgErr    error
)

func testPostgres(tb testing.TB) *pgtest.Server {
	pgOnce.Do(func() { pgServer, pgErr = pgtest.New() })
	if pgErr != nil {
		tb.Fatalf("start a test PostgreSQL: %v", pgErr)
	}
	return pgServer
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pgServer != nil {
		if err := pgServer.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the test PostgreSQL:", err)
			code = 1
		}
	}
	os.Exit(code)
}
