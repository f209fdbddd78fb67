//go:build !nodev

package main

import (
	"github.com/spf13/cobra"

	"github.com/cxop-dev/cxop/internal/devenv"
)

// newDevCommand returns `cxop dev`. It links controller-runtime's envtest,
// whose package initialisation creates a directory under the user's cache
// or temporary directory; the image is built with -tags nodev to leave it
// out, because its root filesystem is read-only.
func newDevCommand() *cobra.Command { return devenv.NewCommand() }
