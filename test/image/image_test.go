// Package image tests `make image`: two builds of one tree give the same
// digest, and the image has the layout the chart and the Pod Security
// profile rely on. The cluster tier (test/cluster) then runs it for real.
package image

import (
	"archive/tar"
	"crypto/x509"
	"debug/buildinfo"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cxop-dev/cxop/internal/version"
)

const repoRoot = "../.."

// makeImage runs `make image` into dir and returns the digest it printed.
func makeImage(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot, "image",
		"IMAGE_BIN_DIR="+dir, "IMAGE_TAR="+filepath.Join(dir, "cxop.tar"), "SOURCE_DATE_EPOCH=1700000000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	digest := regexp.MustCompile(`(?m)^sha256:[0-9a-f]{64}$`).Find(out)
	if digest == nil {
		t.Fatalf("make image printed no digest:\n%s", out)
	}
	return string(digest)
}

func TestImageIsReproducibleAndRunnable(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	digestA, digestB := makeImage(t, a), makeImage(t, b)
	if digestA != digestB {
		t.Fatalf("two builds of one tree gave %s and %s", digestA, digestB)
	}
	tarA, _ := os.ReadFile(filepath.Join(a, "cxop.tar"))
	tarB, _ := os.ReadFile(filepath.Join(b, "cxop.tar"))
	if string(tarA) != string(tarB) {
		t.Fatal("two builds of one tree wrote different tarballs")
	}

	// The image's root filesystem is read-only and its HOME is not
	// writable: nothing in the binary may write at start-up (envtest's
	// package initialisation did, and crash-looped the manager).
	for _, args := range [][]string{{"--help"}, {"collector", "--help"}, {"survey-wave", "--help"}} {
		cmd := exec.Command(filepath.Join(a, "cxop"), args...)
		cmd.Env = []string{"HOME=/proc/cxop-not-writable", "TMPDIR=/proc/cxop-not-writable", "XDG_CACHE_HOME=/proc/cxop-not-writable"}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cxop %s with no writable directory: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// Nothing of the checkout goes into the binary: VCS stamping would
	// make two clones of one commit (or a tree git cannot read) give
	// different digests. The commit is in the image's labels instead.
	info, err := buildinfo.ReadFile(filepath.Join(a, "cxop"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if strings.HasPrefix(s.Key, "vcs") {
			t.Errorf("the image's binary carries %s=%s", s.Key, s.Value)
		}
	}

	want := version.Repository + ":" + version.Version
	tag, err := name.NewTag(want)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(a, "cxop.tar"), &tag)
	if err != nil {
		t.Fatalf("the tarball has no image %s: %v", want, err)
	}
	if d, _ := img.Digest(); d.String() != digestA {
		t.Errorf("tarball image digest %s, make image printed %s", d, digestA)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Config.User; got != "65532:65532" {
		t.Errorf("User %q, want numeric 65532:65532 (runAsNonRoot can only verify a numeric user)", got)
	}
	if got := strings.Join(cfg.Config.Entrypoint, " "); got != "/cxop" {
		t.Errorf("Entrypoint %q, want /cxop", got)
	}
	if got, want := cfg.Created.Time, time.Unix(1700000000, 0); !got.Equal(want) {
		t.Errorf("created %s, want SOURCE_DATE_EPOCH %s", got, want)
	}
	if cfg.OS != "linux" || cfg.Architecture == "" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if cfg.Config.Labels["org.opencontainers.image.version"] != version.Version {
		t.Errorf("labels %v: want org.opencontainers.image.version=%s", cfg.Config.Labels, version.Version)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want exactly one layer (no base image), got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]*tar.Header{}
	var caBundle []byte
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[hdr.Name] = hdr
		if hdr.Name == "etc/ssl/certs/ca-certificates.crt" {
			caBundle, _ = io.ReadAll(tr)
		}
	}
	if h := entries["cxop"]; h == nil || h.Mode&0o111 == 0 || h.Size < 1<<20 {
		t.Errorf("/cxop is not an executable in the layer: %+v", h)
	}
	if h := entries["tmp/"]; h == nil || h.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp is not a sticky world-writable directory: %+v", h)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caBundle) || len(pool.Subjects()) < 100 {
		t.Errorf("CA bundle has %d roots; the webhook sender needs the public roots", len(pool.Subjects()))
	}
}

// TestImageReferencesAgree holds every place that names the release's image
// to the one `make image` tags, so no manifest asks for a tag nothing built.
func TestImageReferencesAgree(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(repoRoot, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if m := regexp.MustCompile(`(?m)^appVersion: "([^"]+)"$`).FindStringSubmatch(read("charts/cxop/Chart.yaml")); m == nil || m[1] != version.Version {
		t.Errorf("charts/cxop/Chart.yaml appVersion %v, internal/version.Version %s", m, version.Version)
	}
	kust := read("config/manager/kustomization.yaml")
	if !strings.Contains(kust, "newName: "+version.Repository) || !strings.Contains(kust, "newTag: "+version.Version) {
		t.Errorf("config/manager/kustomization.yaml does not name %s:\n%s", version.Image(), kust)
	}
	if version.Image() != version.Repository+":"+version.Version {
		t.Errorf("version.Image() = %s outside an image build", version.Image())
	}
	docker := read("Dockerfile")
	for _, line := range []string{"FROM scratch", "USER 65532:65532", `ENTRYPOINT ["/cxop"]`, "ARG VERSION=" + version.Version} {
		if !strings.Contains(docker, line+"\n") {
			t.Errorf("Dockerfile lacks %q: it must build the layout `make image` builds", line)
		}
	}
}
