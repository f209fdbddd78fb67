// Package canaryscan finds strings a test planted (a canary customer's
// id, e-mail address, phone number, comment) in stored bytes: as they are,
// or inside base64, as a webhook message's body or a link token keeps
// them. Tests of erasure and retention use it to prove that nothing of a
// customer is left in the files of a store; internal/pgtest uses Forms
// to scan a database's rows the same way.
package canaryscan

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Forms are the forms in which s can be stored: as it is, and in base64,
// standard and URL-safe, at each of the three alignments. Of each
// encoding it keeps the quanta that depend on s alone: it drops the first
// when s does not start on a quantum boundary, and the last, whose
// characters depend on the bytes after s.
func Forms(s string) [][]byte {
	out := [][]byte{[]byte(s)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for pad := range 3 {
			e := enc.EncodeToString(append(make([]byte, pad), s...))
			inner := e[4:]
			if pad == 0 {
				inner = e
			}
			out = append(out, []byte(inner[:len(inner)-4]))
		}
	}
	return out
}

// Contains reports whether data holds s in any of its Forms.
func Contains(data []byte, s string) bool {
	for _, f := range Forms(s) {
		if bytes.Contains(data, f) {
			return true
		}
	}
	return false
}

// Files returns, for each of strs found in any of its Forms in the bytes
// of a regular file under dir, the files it was found in, relative to
// dir, in lexical order. It skips the directories named in skip (relative
// to dir) and files removed while it walks (an obsolete file the store
// deleted is gone from the disk).
func Files(dir string, skip []string, strs ...string) (map[string][]string, error) {
	found := map[string][]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			for _, s := range skip {
				if rel == s {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // a server's socket
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, s := range strs {
			if Contains(data, s) {
				found[s] = append(found[s], rel)
			}
		}
		return nil
	})
	return found, err
}
