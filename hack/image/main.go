// Command image packs a static binary into an OCI image without a Docker
// daemon and without a base image to pull: an empty base and one layer with
// the binary, the CA certificates a TLS client needs, and /etc/passwd and
// /etc/group naming the non-root user. It writes a `docker save` tarball,
// which `docker load`, `podman load`, `ctr images import` and
// `kind load image-archive` all accept, and prints the image digest.
//
// Every input that could vary between builds is fixed: file times and the
// image's creation time come from SOURCE_DATE_EPOCH, owners are 0:0, entries
// are sorted, and the CA bundle comes from the pinned
// golang.org/x/crypto/x509roots/fallback module rather than the build
// host. Two builds of the same binary give the same digest.
//
//	go run ./hack/image -binary bin/linux-amd64/cxop -ref ghcr.io/cxop-dev/cxop:0.1.0 -out bin/cxop-image.tar
//	go run ./hack/image -binary /cxop-bin -entrypoint /cxop -write-rootfs /rootfs  # the Dockerfile's way
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		opts   options
		out    string
		rootfs string
		labels labelFlag
	)
	fs.StringVar(&opts.binary, "binary", "", "Static executable to pack (build it with CGO_ENABLED=0).")
	fs.StringVar(&opts.entrypoint, "entrypoint", "", "Path of the executable in the image, also the entrypoint (default /<base name of -binary>).")
	fs.StringVar(&opts.ref, "ref", "", "Image reference (repository:tag) recorded in the tarball; the name the image has once loaded.")
	fs.StringVar(&opts.user, "user", "65532:65532", "Numeric uid:gid the image runs as; numeric so Pod Security's runAsNonRoot can verify it.")
	fs.StringVar(&opts.platform, "platform", "linux/amd64", "os/arch of the binary.")
	fs.BoolVar(&opts.caCerts, "ca-certificates", true, "Add /etc/ssl/certs/ca-certificates.crt (Mozilla's roots as pinned in go.mod).")
	fs.Var(&labels, "label", "key=value image label; repeatable.")
	fs.StringVar(&out, "out", "", "Tarball to write (docker save format).")
	fs.StringVar(&rootfs, "write-rootfs", "", "Write the image's files into this directory instead of a tarball (the Dockerfile's way).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	epoch, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	opts.created = epoch
	opts.labels = labels
	if opts.binary == "" {
		return fmt.Errorf("-binary is required")
	}
	if opts.entrypoint == "" {
		opts.entrypoint = "/" + filepath.Base(opts.binary)
	}
	if !path.IsAbs(opts.entrypoint) {
		return fmt.Errorf("-entrypoint %q: must be an absolute path", opts.entrypoint)
	}
	if rootfs != "" {
		return writeRootFS(opts, rootfs)
	}
	if opts.ref == "" || out == "" {
		return fmt.Errorf("-ref and -out are required")
	}
	digest, err := writeImage(opts, out)
	if err != nil {
		return err
	}
	fmt.Println(digest)
	return nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org): the
// time every file and the image claim to be made at. Unset means the Unix
// epoch, so an unconfigured build is still reproducible.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: must be a whole number of seconds since 1970", v)
	}
	return time.Unix(secs, 0).UTC(), nil
}

// labelFlag collects repeated -label key=value flags.
type labelFlag map[string]string

func (l *labelFlag) String() string { return fmt.Sprint(map[string]string(*l)) }

func (l *labelFlag) Set(v string) error {
	key, value, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q: want key=value", v)
	}
	if *l == nil {
		*l = labelFlag{}
	}
	(*l)[key] = value
	return nil
}
