package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// options describe one image.
type options struct {
	binary     string
	entrypoint string
	ref        string
	user       string
	platform   string
	caCerts    bool
	labels     map[string]string
	created    time.Time
}

// writeImage builds the image and writes it as a tarball at out (through a
// temporary file, so a failed build never leaves a truncated tarball behind).
// It returns the image's manifest digest.
func writeImage(opts options, out string) (string, error) {
	img, err := buildImage(opts)
	if err != nil {
		return "", err
	}
	tag, err := name.NewTag(opts.ref)
	if err != nil {
		return "", fmt.Errorf("-ref %q: %w", opts.ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	return digest.String(), nil
}

// rootFiles returns every file of the image's one layer, by absolute path;
// directory paths end in "/".
func rootFiles(opts options) (map[string]file, error) {
	uid, gid, err := parseUser(opts.user)
	if err != nil {
		return nil, err
	}
	binary, err := os.ReadFile(opts.binary)
	if err != nil {
		return nil, err
	}
	files := map[string]file{
		opts.entrypoint: {mode: 0o755, data: binary},
		// A numeric USER is what Pod Security checks; the names make `id`
		// and user.Current() inside the container answer sensibly.
		"/etc/passwd": {mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)},
		"/etc/group":  {mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", gid)},
		// Writable by anyone, as on every Linux root: the container's own
		// scratch space when the root filesystem is not read-only.
		"/tmp/": {mode: 0o1777},
		// The user's home, owned by the user.
		"/home/nonroot/": {mode: 0o700, uid: uid, gid: gid},
	}
	if opts.caCerts {
		files["/etc/ssl/certs/ca-certificates.crt"] = file{mode: 0o644, data: caBundlePEM()}
	}
	return files, nil
}

// writeRootFS writes the layer's files under dir instead of into an image:
// the Dockerfile copies that tree into a scratch image, so both ways of
// building give the same layout.
func writeRootFS(opts options, dir string) error {
	files, err := rootFiles(opts)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	entries := withParents(files)
	for _, p := range sortedNames(entries) {
		f := entries[p]
		target := filepath.Join(dir, filepath.FromSlash(p))
		mode := os.FileMode(f.mode & 0o777)
		if f.mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if strings.HasSuffix(p, "/") {
			err = os.MkdirAll(target, 0o755)
		} else {
			err = os.WriteFile(target, f.data, mode)
		}
		if err == nil {
			err = os.Chmod(target, mode)
		}
		if err == nil && os.Geteuid() == 0 {
			err = os.Lchown(target, f.uid, f.gid)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func buildImage(opts options) (v1.Image, error) {
	osName, arch, ok := strings.Cut(opts.platform, "/")
	if !ok {
		return nil, fmt.Errorf("-platform %q: want os/arch", opts.platform)
	}
	uid, gid, err := parseUser(opts.user)
	if err != nil {
		return nil, err
	}
	files, err := rootFiles(opts)
	if err != nil {
		return nil, err
	}
	layerTar, err := tarLayer(files, opts.created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: opts.created},
			CreatedBy: "hack/image " + opts.entrypoint,
			Comment:   "static binary, CA certificates, /etc/passwd; no base image",
		},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = osName, arch
	cfg.Created = v1.Time{Time: opts.created}
	cfg.Config.Entrypoint = []string{opts.entrypoint}
	cfg.Config.User = fmt.Sprintf("%d:%d", uid, gid)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/"}
	cfg.Config.Labels = opts.labels
	return mutate.ConfigFile(img, cfg)
}

// file is one entry of the layer; uid and gid default to root.
type file struct {
	mode     int64
	uid, gid int
	data     []byte
}

// withParents returns files by relative path, with an entry for every
// parent directory that files do not list themselves.
func withParents(files map[string]file) map[string]file {
	entries := map[string]file{}
	for p, f := range files {
		clean := strings.TrimPrefix(p, "/")
		entries[clean] = f
		for dir := path.Dir(strings.TrimSuffix(clean, "/")); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if _, ok := entries[dir+"/"]; !ok {
				entries[dir+"/"] = file{mode: 0o755}
			}
		}
	}
	return entries
}

// tarLayer writes files as a tar stream with every parent directory, in
// sorted order, owned by root unless the file says otherwise, and stamped
// with the same time, so the bytes depend on the contents alone.
func tarLayer(files map[string]file, mtime time.Time) ([]byte, error) {
	entries := withParents(files)
	names := sortedNames(entries)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := entries[n]
		hdr := &tar.Header{
			Name:    n,
			Mode:    f.mode & 0o7777,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sortedNames returns the paths in entries in order, so parents come before
// what they hold and the tar stream never depends on map order.
func sortedNames(entries map[string]file) []string {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// parseUser reads a numeric uid:gid.
func parseUser(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	if ok {
		uid, err = strconv.Atoi(u)
		if err == nil {
			gid, err = strconv.Atoi(g)
		}
	}
	if !ok || err != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("-user %q: want numeric uid:gid, such as 65532:65532", s)
	}
	return uid, gid, nil
}

// caBundlePEM returns Mozilla's root certificates as vendored by
// golang.org/x/crypto/x509roots/fallback at the version go.mod pins, as one
// PEM file. Roots that carry a distrust-after date are left out: a PEM file
// cannot express the date, and trusting them without it would be wider than
// Mozilla's own policy.
func caBundlePEM() []byte {
	var buf bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate})
	}
	return buf.Bytes()
}
