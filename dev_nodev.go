//go:build nodev

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newDevCommand stands in for `cxop dev` in builds without it (the image):
// the local environment needs kube-apiserver and etcd binaries that an
// image does not carry, and its envtest dependency writes at start-up.
func newDevCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Not in this build: run `make dev` from a source checkout",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("cxop dev is not part of this build (built with -tags nodev, as the image is); run `make dev` from a source checkout")
		},
	}
}
