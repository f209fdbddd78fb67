package engine

import (
	"os"
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

// sharedPostgres is the test PostgreSQL, started by the first test that
// needs it and shared by all (each takes a database of its own).
var sharedPostgres pgtest.Shared

func testPostgres(tb testing.TB) *pgtest.Server {
	tb.Helper()
	return sharedPostgres.Server(tb)
}

func TestMain(m *testing.M) { os.Exit(sharedPostgres.Main(m)) }
