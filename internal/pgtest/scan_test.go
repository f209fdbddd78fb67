package pgtest

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/cxop-dev/cxop/internal/canaryscan"
	"github.com/jackc/pgx/v5"
)

// TestScanFindsEveryForm checks the scans themselves: a string in a text
// column, inside base64 in a jsonb column (at each alignment, both
// alphabets), and in a bytea column is found and named by table and
// column; a deleted row's string is not in the tables but is in the files
// until Forget, and after it in none.
func TestScanFindsEveryForm(t *testing.T) {
	s := Start(t)
	dsn := s.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE plain (id int, note text);
CREATE TABLE encoded (id int, doc jsonb);
CREATE TABLE raw (id int, value bytea);
CREATE TABLE gone (id int, note text)`); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO plain VALUES (1, 'a note about needle-plain-4411')`)
	var enc []string
	for pad := range 3 {
		for i, e := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			name := []string{"needle-std-", "needle-url-"}[i] + string(rune('a'+pad)) + "-4411"
			enc = append(enc, name)
			exec(`INSERT INTO encoded VALUES (1, $1)`, `{"body":"`+e.EncodeToString([]byte(strings.Repeat("x", pad)+`{"v":"`+name+`"}`))+`"}`)
		}
	}
	exec(`INSERT INTO raw VALUES (1, $1)`, []byte("\x00\x01needle-bytes-4411\xff"))
	exec(`INSERT INTO gone VALUES (1, 'needle-deleted-4411')`)
	exec(`DELETE FROM gone`)

	strs := append([]string{"needle-plain-4411", "needle-bytes-4411", "needle-deleted-4411", "needle-absent-4411"}, enc...)
	found, tables, err := ScanTables(ctx, dsn, strs...)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tables, ",") != "encoded,gone,plain,raw" {
		t.Errorf("tables read: %v", tables)
	}
	want := map[string]string{"needle-plain-4411": "plain.note", "needle-bytes-4411": "raw.value"}
	for _, e := range enc {
		want[e] = "encoded.doc"
	}
	for _, str := range strs {
		if found[str] != want[str] {
			t.Errorf("%s found in %q, want %q", str, found[str], want[str])
		}
	}
	exec("CHECKPOINT")
	files, err := canaryscan.Files(s.DataDir(), nil, "needle-deleted-4411")
	if err != nil || len(files["needle-deleted-4411"]) == 0 {
		t.Fatalf("the deleted row is in no file before Forget: %v, %v", files, err)
	}
	if err := Forget(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	files, err = canaryscan.Files(s.DataDir(), nil, "needle-deleted-4411", "needle-plain-4411")
	if err != nil || len(files["needle-deleted-4411"]) > 0 || len(files["needle-plain-4411"]) == 0 {
		t.Errorf("after Forget: %v, %v; want the deleted row in no file, the live one still in a table file", files, err)
	}
}
