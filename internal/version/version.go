// Package version names the cxop release this binary is, and the image that
// release ships as. Both the manager's default collector image and the tag
// `make image` writes come from here, so a manager never asks the kubelet for
// a collector image that no build produced.
package version

// Version is the release, without a leading "v". It equals the chart's
// appVersion (a test holds the two equal); release builds may override it
// with -ldflags "-X github.com/cxop-dev/cxop/internal/version.Version=...".
var Version = "0.1.0"

// Repository is where cxop images are published.
const Repository = "ghcr.io/cxop-dev/cxop"

// imageRef is the reference the binary was packed under, when `make image`
// set it (-X github.com/cxop-dev/cxop/internal/version.imageRef=...), so that
// a manager started from any image defaults its collectors to that same
// image.
var imageRef string

// Image is the reference of the image this binary ships in: the manager, the
// collector and the scheduled wave jobs all run it. Outside an image build it
// is this release's published tag.
func Image() string {
	if imageRef != "" {
		return imageRef
	}
	return Repository + ":" + Version
}
