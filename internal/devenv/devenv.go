// Package devenv runs cxop on a laptop with no cluster: a kube-apiserver and
// etcd built from their Go modules (hack/setup-envtest.sh), the CRDs, and
// the manager as a child process, which runs each namespace's collector as
// a local process on a loopback port. State (etcd, the collectors' stores)
// is kept under one directory so it survives a restart.
//
// The manager runs as a child process of the same binary rather than in
// this process so that devenv does not import the reconcilers (internal/
// packages never depend on controllers/), and so that what runs here is
// exactly what runs in a cluster.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options configure a local environment.
type Options struct {
	// Dir holds the kubeconfig, etcd's data and the logs.
	Dir string
	// AssetsDir holds kube-apiserver, etcd and kubectl.
	AssetsDir string
	// CRDDir holds the CRD manifests to install.
	CRDDir string
	// Out receives what the user should read.
	Out io.Writer
	// Store is where the local collectors keep records: "embedded" (the
	// default, under Dir) or "postgres" (a database per namespace on the
	// server DSNFile's connection string reaches).
	Store   string
	DSNFile string
}

// NewCommand returns the `cxop dev` command.
func NewCommand() *cobra.Command {
	opts := Options{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local control plane and the manager, with no cluster",
		Long: `dev starts a kube-apiserver and etcd (built by hack/setup-envtest.sh),
installs the cxop CRDs, runs the manager, and writes DIR/kubeconfig.
State is kept in DIR and survives a restart. Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out = cmd.OutOrStdout()
			return Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", ".dev", "Directory for the kubeconfig, etcd data and logs.")
	f.StringVar(&opts.AssetsDir, "assets", os.Getenv("KUBEBUILDER_ASSETS"),
		"Directory holding kube-apiserver, etcd and kubectl (default $KUBEBUILDER_ASSETS; printed by hack/setup-envtest.sh).")
	f.StringVar(&opts.CRDDir, "crd-dir", filepath.Join("config", "crd", "bases"), "Directory of CRD manifests to install.")
	f.StringVar(&opts.Store, "store", "embedded", "Where the local collectors keep records: embedded (under --dir) or postgres (a database per namespace, cxop_NAMESPACE, created through --dsn-file's connection string; surveys do not run there yet).")
	f.StringVar(&opts.DSNFile, "dsn-file", "", "With --store postgres: a file holding a PostgreSQL connection string whose role may create databases.")
	cmd.AddCommand(NewReceiverCommand())
	return cmd
}

// Run starts the environment and blocks until ctx is cancelled, then stops
// every process it started.
func Run(ctx context.Context, opts Options) error {
	if err := opts.check(); err != nil {
		return err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "etcd"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory: opts.AssetsDir,
		CRDDirectoryPaths:     []string{opts.CRDDir},
		ErrorIfCRDPathMissing: true,
	}
	// A fixed data directory, unlike envtest's default temporary one, keeps
	// every object across restarts.
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	fmt.Fprintln(opts.Out, "starting kube-apiserver and etcd ...")
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(opts.Out, "stop control plane:", err)
		}
	}()

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(env, kubeconfig); err != nil {
		return err
	}

	manager, err := startManager(kubeconfig, filepath.Join(dir, "logs", "manager.log"), filepath.Join(dir, "collectors"), opts.dsnFile())
	if err != nil {
		return err
	}
	defer stopProcess(manager)

	printWelcome(opts.Out, kubeconfig, opts.AssetsDir, dir)

	exited := make(chan error, 1)
	go func() { exited <- manager.Wait() }()
	select {
	case <-ctx.Done():
		fmt.Fprintln(opts.Out, "stopping ...")
		return nil
	case err := <-exited:
		return fmt.Errorf("manager exited: %v (see %s)", err, filepath.Join(dir, "logs", "manager.log"))
	}
}

func (o Options) check() error {
	if o.AssetsDir == "" {
		return errors.New("--assets: not set; run `make dev`, or pass --assets \"$(hack/setup-envtest.sh | tail -n 1)\"")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(o.AssetsDir, bin)); err != nil {
			return fmt.Errorf("--assets: %s has no %s; run hack/setup-envtest.sh", o.AssetsDir, bin)
		}
	}
	if _, err := os.Stat(o.CRDDir); err != nil {
		return fmt.Errorf("--crd-dir: %w (run from the repository root)", err)
	}
	switch o.Store {
	case "", "embedded":
		if o.DSNFile != "" {
			return errors.New("--dsn-file: only with --store postgres")
		}
	case "postgres":
		if o.DSNFile == "" {
			return errors.New("--dsn-file: required with --store postgres (a file holding a PostgreSQL connection string whose role may create databases)")
		}
		if _, err := os.Stat(o.DSNFile); err != nil {
			return fmt.Errorf("--dsn-file: %w", err)
		}
	default:
		return fmt.Errorf("--store: %q is not embedded or postgres", o.Store)
	}
	return nil
}

// dsnFile is the absolute path of --dsn-file with --store postgres, else "".
func (o Options) dsnFile() string {
	if o.Store != "postgres" {
		return ""
	}
	abs, err := filepath.Abs(o.DSNFile)
	if err != nil {
		return o.DSNFile
	}
	return abs
}

// writeKubeconfig writes an admin kubeconfig for the control plane.
func writeKubeconfig(env *envtest.Environment, path string) error {
	user, err := env.AddUser(envtest.User{Name: "cxop-dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("create admin user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// startManager runs `cxop manager` from this same binary against
// kubeconfig. The child is killed if this process dies, so Ctrl-C or a crash
// never leaves a stray manager behind.
func startManager(kubeconfig, logPath, collectorsDir, dsnFile string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open manager log: %w", err)
	}
	cmd := exec.Command(self, "manager",
		// Metrics on loopback, away from a collector's default :8080;
		// nothing probes a local manager, so no probe listener.
		"--metrics-bind-address=127.0.0.1:18080",
		"--health-probe-bind-address=0",
		// Collectors run as processes of the manager on loopback ports,
		// with their stores under the dev directory.
		"--local-collectors-dir="+collectorsDir,
		// A laptop shows new numbers sooner than a cluster needs to.
		"--status-refresh-interval=5s")
	if dsnFile != "" {
		// The manager gives each namespace's collector a database there.
		cmd.Args = append(cmd.Args, "--local-collectors-postgres-dsn-file="+dsnFile)
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start manager: %w", err)
	}
	return cmd, nil
}

// stopProcess asks a child to stop, and kills it if it has not within 10s.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
	}
}

func printWelcome(w io.Writer, kubeconfig, assets, dir string) {
	fmt.Fprintf(w, `
cxop is running.

kubeconfig: %s
manager log: %s
manager metrics: http://127.0.0.1:18080/metrics

Try it, in another shell from the repository root:
  export KUBECONFIG=%s PATH=%s:$PATH
  kubectl apply -f config/samples/
  kubectl get cx

Post a chat interaction with the touchpoint's own token:
  URL=$(kubectl get tp support-chat -o jsonpath='{.status.ingest.url}')
  TOKEN=$(kubectl get secret cxop-touchpoint-support-chat -o jsonpath='{.data.token}' | base64 -d)
  curl -H "Authorization: Bearer $TOKEN" -d '{"id":"e1","touchpoint":"support-chat","customer":"c1","time":"'$(date -u +%%FT%%TZ)'","waitSeconds":45}' $URL/v1/events
  kubectl get tp support-chat -o wide

Collectors' data and logs: %s
Ctrl-C stops the control plane, the manager and the collectors; everything is kept in %s.
`, kubeconfig, filepath.Join(dir, "logs", "manager.log"), kubeconfig, assets, filepath.Join(dir, "collectors"), dir)
}
