package canaryscan

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A string inside a base64 encoded value, at any offset and in either
// alphabet, is found; another string is not.
func TestContainsFindsBase64(t *testing.T) {
	const s = "probe.7d1f3a9e@example.org"
	for pad := range 3 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			data := []byte(enc.EncodeToString([]byte(strings.Repeat("x", pad) + `{"contact":"` + s + `"}`)))
			if !Contains(data, s) {
				t.Errorf("%q not found in %s", s, data)
			}
			if Contains(data, "other.7d1f3a9e@example.org") {
				t.Errorf("another string found in %s", data)
			}
		}
	}
}

// Files names every file holding a string, relative to the directory,
// and leaves out the skipped directories.
func TestFilesNamesEveryFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("000001.log", "\x00needle-plain-4411\x00")
	write("sub/000002.sst", base64.URLEncoding.EncodeToString([]byte("xx needle-plain-4411 and needle-b64-4411")))
	write("skipped/x", "needle-plain-4411")
	found, err := Files(dir, []string{"skipped"}, "needle-plain-4411", "needle-b64-4411", "needle-absent-4411")
	if err != nil {
		t.Fatal(err)
	}
	if got := found["needle-plain-4411"]; !slices.Equal(got, []string{"000001.log", filepath.Join("sub", "000002.sst")}) {
		t.Errorf("needle-plain-4411 in %v", got)
	}
	if got := found["needle-b64-4411"]; !slices.Equal(got, []string{filepath.Join("sub", "000002.sst")}) {
		t.Errorf("needle-b64-4411 in %v", got)
	}
	if _, ok := found["needle-absent-4411"]; ok || len(found) != 2 {
		t.Errorf("found %v", found)
	}
}
