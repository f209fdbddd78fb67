// Command cxop is the customer-experience operator: the Kubernetes manager
// that reconciles Journeys, Touchpoints, Surveys and CXTargets, and the
// collector that receives interaction events and survey answers.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cxop:", err)
		os.Exit(1)
	}
}

// newRootCommand returns the cxop command; running it without a subcommand
// runs the manager, so a container's entrypoint needs no arguments.
func newRootCommand() *cobra.Command {
	manager := newManagerCommand()
	root := &cobra.Command{
		Use:           "cxop",
		Short:         "Kubernetes-native customer-experience operator",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          manager.RunE,
	}
	root.Flags().AddFlagSet(manager.Flags())
	root.AddCommand(manager)
	return root
}

func newManagerCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "manager",
		Short: "Run the controller manager (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented")
		},
	}
}
