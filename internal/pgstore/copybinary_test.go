package pgstore

import (
	"bytes"
	"context"
	"math"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The hand-encoded binary COPY against PostgreSQL's own reading of it: every
// column type the append writes, at the edges of its range, read back as
// the server stored it.
func TestBinaryCopyRoundTrip(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE edges (n int, big bigint, small smallint, f double precision, s text, b bytea)`); err != nil {
		t.Fatal(err)
	}
	type row struct {
		n     int
		big   int64
		small int16
		f     float64
		s     string
		b     []byte
	}
	want := []row{
		{0, 0, 0, 0, "", []byte{}},
		{1, math.MinInt64, math.MinInt16, -math.MaxFloat64, "e", []byte{0}},
		{2, math.MaxInt64, math.MaxInt16, math.SmallestNonzeroFloat64, "Ünïcødé ☃ 𝄞", []byte{0xff, 0, 0xfe, '\n', '\\'}},
		{3, -1, -1, 299.999, "tab\tnew\nline \\ quote\" comma,", bytes.Repeat([]byte("x"), 70_000)},
	}
	rows := newCopyRows(6, 0)
	for _, r := range want {
		rows.row()
		rows.int64(int64(r.n)) // into an int column: PostgreSQL refuses 8 bytes there
		rows.int64(r.big)
		rows.int16(r.small)
		rows.float64(r.f)
		rows.text(r.s)
		rows.bytea(r.b)
	}
	copyEdges := func() error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			return copyInto(ctx, tx, copyStatement("edges", "n", "big", "small", "f", "s", "b"), rows)
		})
	}
	if err := copyEdges(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("incorrect binary data format")) {
		t.Fatalf("8 bytes into an int column: got %v, want PostgreSQL's refusal", err)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE edges ALTER COLUMN n TYPE bigint`); err != nil {
		t.Fatal(err)
	}
	if err := copyEdges(); err != nil {
		t.Fatal(err)
	}
	read, err := conn.Query(ctx, `SELECT n, big, small, f, s, b FROM edges ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(read,
		func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.n, &x.big, &x.small, &x.f, &x.s, &x.b)
			return x, err
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d rows, wrote %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.n != w.n || g.big != w.big || g.small != w.small || g.f != w.f || g.s != w.s || !bytes.Equal(g.b, w.b) {
			t.Errorf("row %d: read back n=%d big=%d small=%d f=%g s=%q b=%d bytes, wrote n=%d big=%d small=%d f=%g s=%q b=%d bytes",
				i, g.n, g.big, g.small, g.f, g.s, len(g.b), w.n, w.big, w.small, w.f, w.s, len(w.b))
		}
	}
}
