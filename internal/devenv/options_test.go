package devenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The store flags of `cxop dev` are checked before anything starts.
func TestStoreFlags(t *testing.T) {
	assets := t.TempDir()
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if err := os.WriteFile(filepath.Join(assets, bin), nil, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	dsn := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsn, []byte("host=127.0.0.1 user=postgres\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Options{AssetsDir: assets, CRDDir: t.TempDir()}
	for _, tc := range []struct {
		store, dsnFile, want string
	}{
		{"", "", ""},
		{"embedded", "", ""},
		{"postgres", dsn, ""},
		{"postgres", "", "--dsn-file: required with --store postgres"},
		{"postgres", dsn + ".missing", "--dsn-file: stat"},
		{"embedded", dsn, "--dsn-file: only with --store postgres"},
		{"sqlite", "", `--store: "sqlite" is not embedded or postgres`},
	} {
		o := base
		o.Store, o.DSNFile = tc.store, tc.dsnFile
		err := o.check()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("--store %q --dsn-file %q: %v, want %q", tc.store, tc.dsnFile, err, tc.want)
		}
	}
	o := base
	o.Store, o.DSNFile = "postgres", "rel/dsn"
	if got := o.dsnFile(); !filepath.IsAbs(got) {
		t.Errorf("dsnFile %q is not absolute: the manager runs elsewhere", got)
	}
	o.Store = "embedded"
	if got := o.dsnFile(); got != "" {
		t.Errorf("dsnFile with the embedded store: %q, want none", got)
	}
}
