package storecopy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/pgtest"
	"github.com/cxop-dev/cxop/internal/rollup"
	"github.com/cxop-dev/cxop/internal/store"
)

func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCommandRefusesBadEndpoints(t *testing.T) {
	for _, tc := range []struct {
		from, to, want string
	}{
		{"embedded:/a", "embedded:/b", "--from and --to are both embedded"},
		{"pebble:/a", "postgres:/dsn", `--from: "pebble:/a" is not embedded:DATA-DIR or postgres:DSN-FILE`},
		{"embedded:/a", "postgres:", `--to: "postgres:" is not embedded:DATA-DIR or postgres:DSN-FILE`},
		{"embedded:/a", "postgres:" + filepath.Join(t.TempDir(), "missing"), "postgres: open"},
	} {
		_, err := runCommand(t, "copy", "--from", tc.from, "--to", tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--from %s --to %s: %v, want %q", tc.from, tc.to, err, tc.want)
		}
	}
}

// The command copies, prints what it did, and a second run finds every
// record there.
func TestCommandCopiesAndResumes(t *testing.T) {
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.Start(t).NewDatabase(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st := openEmbedded(t, dir)
	if _, err := st.Submit(context.Background(), []store.Record{event("e1", t0, 1, ""), event("e2", t0.Add(-time.Hour), 2, ""), event("e3", t0, 3, "")}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(t, "copy", "--from", "embedded:"+dir, "--to", "postgres:"+dsnFile, "--batch", "2")
	if err != nil || !strings.HasPrefix(out, "records=3 new=3 duplicates=0 conflicts=0 ") {
		t.Fatalf("first copy: %v\n%s", err, out)
	}
	out, err = runCommand(t, "copy", "--from", "embedded:"+dir, "--to", "postgres:"+dsnFile)
	if err != nil || !strings.HasPrefix(out, "records=3 new=0 duplicates=3 conflicts=0 ") {
		t.Fatalf("second copy: %v\n%s", err, out)
	}
	back := filepath.Join(t.TempDir(), "back")
	out, err = runCommand(t, "copy", "--from", "postgres:"+dsnFile, "--to", "embedded:"+back)
	if err != nil || !strings.HasPrefix(out, "records=3 new=3 duplicates=0 conflicts=0 ") {
		t.Fatalf("copy back: %v\n%s", err, out)
	}
	st = openEmbedded(t, back)
	defer st.Close()
	var got []string
	if err := st.Export(rollup.KindTouchpoint, "chat", func(js []byte) error { got = append(got, string(js)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !strings.Contains(strings.Join(got, ""), `"id":"e2"`) {
		t.Errorf("records copied back: %v", got)
	}
}

// A data directory a collector has open is locked: the copy neither reads
// nor writes it.
func TestCommandRefusesAnOpenDataDirectory(t *testing.T) {
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.Start(t).NewDatabase(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st := openEmbedded(t, dir)
	defer st.Close()
	for _, args := range [][]string{
		{"--from", "embedded:" + dir, "--to", "postgres:" + dsnFile},
		{"--from", "postgres:" + dsnFile, "--to", "embedded:" + dir},
	} {
		out, err := runCommand(t, append([]string{"copy"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "lock") || out != "" {
			t.Errorf("%v: %v, %q; want refused on the directory's lock, nothing done", args, err, out)
		}
	}
}
