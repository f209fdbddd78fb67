// Command cxop is the customer-experience operator: the Kubernetes manager
// that reconciles Journeys, Touchpoints, Surveys and CXTargets, and the
// collector that receives interaction events and survey answers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	// Time zones of business hours and schedules are checked against the
	// IANA database; embed it so minimal images without /usr/share/zoneinfo
	// behave the same.
	_ "time/tzdata"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/controllers"
	"github.com/cxop-dev/cxop/internal/collector"
	"github.com/cxop-dev/cxop/internal/devenv"
)

func main() {
	ctx := ctrl.SetupSignalHandler()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
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
	root.AddCommand(manager, collector.NewCommand(), devenv.NewCommand())
	return root
}

// managerOptions are the manager's command-line flags.
type managerOptions struct {
	metricsAddr    string
	probeAddr      string
	leaderElection bool
	zap            zap.Options
}

func newManagerCommand() *cobra.Command {
	opts := &managerOptions{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the controller manager (the default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runManager(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.metricsAddr, "metrics-bind-address", ":8080", `Address the Prometheus metrics endpoint binds to; "0" disables it.`)
	f.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz probes bind to.")
	f.BoolVar(&opts.leaderElection, "leader-elect", false, "Elect a leader so that only one of several replicas reconciles.")
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	opts.zap.BindFlags(zapFlags)
	f.AddGoFlagSet(zapFlags)
	return cmd
}

func newScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := cxv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return scheme, nil
}

func runManager(ctx context.Context, opts *managerOptions) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts.zap)))
	scheme, err := newScheme()
	utilruntime.Must(err)

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: opts.metricsAddr},
		HealthProbeBindAddress: opts.probeAddr,
		LeaderElection:         opts.leaderElection,
		LeaderElectionID:       "manager.cxop.dev",
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := controllers.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	ctrl.Log.WithName("setup").Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}
