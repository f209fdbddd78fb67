// Command bench measures the manager at scale against a real control plane
// (kube-apiserver and etcd built by hack/setup-envtest.sh) and prints, one
// per line:
//
//	converge_1000_s=N         1,000 Touchpoints and 1,000 CXTargets created
//	                          until every one shows a computed status for
//	                          its current generation
//	converge_10000_s=N        the same after adding 9,000 of each, to 10,000
//	operator_rss_mib_10000=N  the manager's resident memory at 10,000
//	idle_status_writes_per_s=N  the manager's writes to the API server per
//	                          second while nothing changes
//
// The manager is the real binary (-cxop), run as a process so its memory
// is its own; collectors run as its local processes (one per namespace of
// 1,000 Touchpoints), as under `cxop dev`. Progress goes to stderr.
//
//	go run ./test/operator/bench -cxop bin/cxop -assets "$(hack/setup-envtest.sh | tail -n 1)"
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/loadgen"
)

type config struct {
	bin, assets, crdDir string
	perNamespace        int
	first, total        int
	idle                time.Duration
	timeout             time.Duration
	managerArgs         string
	managerEnv          string
	keep                bool
	profileDir          string
}

func main() {
	var c config
	flag.StringVar(&c.bin, "cxop", "bin/cxop", "the cxop binary")
	flag.StringVar(&c.assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory of kube-apiserver and etcd (hack/setup-envtest.sh)")
	flag.StringVar(&c.crdDir, "crd-dir", filepath.Join("config", "crd", "bases"), "CRD manifests")
	flag.IntVar(&c.perNamespace, "per-namespace", 1000, "Touchpoints (and CXTargets) per namespace")
	flag.IntVar(&c.first, "first", 1000, "objects of each kind in the first round")
	flag.IntVar(&c.total, "total", 10000, "objects of each kind after the second round")
	flag.DurationVar(&c.idle, "idle", 60*time.Second, "how long idle writes are counted (at least two refresh intervals)")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Minute, "give up on a round after this long")
	flag.StringVar(&c.managerArgs, "manager-args", "", "extra flags for the manager, space-separated")
	flag.StringVar(&c.managerEnv, "manager-env", "", "extra environment for the manager only, space-separated NAME=value (e.g. GOMEMLIMIT=128MiB)")
	flag.StringVar(&c.profileDir, "profile-dir", "", "write the manager's heap profile at the full count into this directory")
	flag.BoolVar(&c.keep, "keep", false, "keep the working directory (manager log, collectors)")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func run(c config) error {
	// The bench's own caches log nothing worth reading next to its figures.
	ctrllog.SetLogger(logr.Discard())
	if c.assets == "" {
		return fmt.Errorf("-assets: not set; pass \"$(hack/setup-envtest.sh | tail -n 1)\"")
	}
	dir, err := os.MkdirTemp("", "cxop-operator-bench-")
	if err != nil {
		return err
	}
	if c.keep {
		logf("working directory %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory:   c.assets,
		CRDDirectoryPaths:       []string{c.crdDir},
		ErrorIfCRDPathMissing:   true,
		ControlPlaneStopTimeout: time.Minute,
	}
	logf("starting kube-apiserver and etcd")
	restCfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() { _ = env.Stop() }()

	kubeconfig := filepath.Join(dir, "kubeconfig")
	user, err := env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	data, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return err
	}

	metricsAddr, err := loadgen.FreePort()
	if err != nil {
		return err
	}
	args := []string{"manager", "--metrics-bind-address=" + metricsAddr, "--health-probe-bind-address=0",
		"--local-collectors-dir=" + filepath.Join(dir, "collectors")}
	profilerAddr := ""
	if c.profileDir != "" {
		if profilerAddr, err = loadgen.FreePort(); err != nil {
			return err
		}
		args = append(args, "--profiler-address="+profilerAddr)
	}
	if c.managerArgs != "" {
		args = append(args, strings.Fields(c.managerArgs)...)
	}
	logFile, err := os.Create(filepath.Join(dir, "manager.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	mgr := exec.Command(c.bin, args...)
	mgr.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), strings.Fields(c.managerEnv)...)
	mgr.Stdout, mgr.Stderr = logFile, logFile
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		return fmt.Errorf("start manager: %w", err)
	}
	defer func() { _ = mgr.Process.Signal(syscall.SIGTERM); _ = mgr.Wait() }()

	// The bench's own client must not be the bottleneck.
	fast := rest.CopyConfig(restCfg)
	fast.QPS, fast.Burst = 2000, 4000
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = cxv1.AddToScheme(scheme)
	cl, err := client.New(fast, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Convergence is read from a watch-fed cache: listing 20,000 objects
	// every few seconds would load the API server more than the manager
	// does.
	watched, err := cache.New(fast, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return err
	}
	go func() { _ = watched.Start(ctx) }()
	for _, obj := range []client.Object{&cxv1.Touchpoint{}, &cxv1.CXTarget{}} {
		if _, err := watched.GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	watched.WaitForCacheSync(ctx)

	written, err := writes(metricsAddr)
	if err != nil {
		return err
	}
	secs, err := round(ctx, cl, watched, c, 0, c.first)
	if err != nil {
		return fmt.Errorf("first round: %w", err)
	}
	fmt.Printf("converge_%d_s=%.1f\n", c.first, secs)
	if written, err = logWrites(metricsAddr, written, c.first); err != nil {
		return err
	}
	var profiled sync.WaitGroup
	if c.profileDir != "" {
		// The second round is the one worth a CPU profile.
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			if err := saveProfile(profilerAddr, "profile?seconds=60", filepath.Join(c.profileDir, "manager-cpu.pprof")); err != nil {
				logf("cpu profile: %v", err)
			}
		}()
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			if err := saveAPIServerProfile(restCfg, filepath.Join(c.profileDir, "apiserver-cpu.pprof")); err != nil {
				logf("kube-apiserver cpu profile: %v", err)
			}
		}()
	}
	secs, err = round(ctx, cl, watched, c, c.first, c.total)
	profiled.Wait()
	if err != nil {
		return fmt.Errorf("second round: %w", err)
	}
	fmt.Printf("converge_%d_s=%.1f\n", c.total, secs)
	if _, err = logWrites(metricsAddr, written, c.total-c.first); err != nil {
		return err
	}
	if c.profileDir != "" {
		if err := saveProfile(profilerAddr, "heap", filepath.Join(c.profileDir, "manager-heap.pprof")); err != nil {
			return err
		}
	}

	rss, err := rssMiB(mgr.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("operator_rss_mib_%d=%.0f\n", c.total, rss)
	logMemory(metricsAddr)
	logResident(mgr.Process.Pid)

	logf("counting the manager's writes for %s with nothing changing", c.idle)
	before, err := writes(metricsAddr)
	if err != nil {
		return err
	}
	time.Sleep(c.idle)
	after, err := writes(metricsAddr)
	if err != nil {
		return err
	}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			logf("  %s +%.0f", k, d)
		}
	}
	fmt.Printf("idle_status_writes_per_s=%.2f\n", (sum(after)-sum(before))/c.idle.Seconds())
	if rss, err := rssMiB(mgr.Process.Pid); err == nil {
		logf("after %s idle: manager RSS %.0f MiB", c.idle, rss)
		logMemory(metricsAddr)
		logResident(mgr.Process.Pid)
	}
	return nil
}

// round creates objects from..to-1 of each kind and returns the seconds
// from the first create until every object of 0..to-1 has converged.
func round(ctx context.Context, cl client.Client, watched client.Reader, c config, from, to int) (float64, error) {
	logf("creating Touchpoints and CXTargets %d..%d", from, to-1)
	start := time.Now()
	for ns := from / c.perNamespace; ns*c.perNamespace < to; ns++ {
		name := namespaceName(ns)
		if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); client.IgnoreAlreadyExists(err) != nil {
			return 0, err
		}
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := createPair(ctx, cl, c, i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	logf("created in %.1fs; waiting for every status", time.Since(start).Seconds())

	deadline := start.Add(c.timeout)
	for {
		tps, targets, err := converged(ctx, watched)
		if err != nil {
			return 0, err
		}
		if tps >= to && targets >= to {
			return time.Since(start).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("after %s only %d Touchpoints and %d CXTargets of %d have a computed status", c.timeout, tps, targets, to)
		}
		logf("converged: %d Touchpoints, %d CXTargets of %d", tps, targets, to)
		time.Sleep(time.Second)
	}
}

func namespaceName(i int) string { return fmt.Sprintf("scale-%02d", i) }

func createPair(ctx context.Context, cl client.Client, c config, i int) error {
	ns := namespaceName(i / c.perNamespace)
	name := fmt.Sprintf("tp-%05d", i)
	tp := &cxv1.Touchpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       cxv1.TouchpointSpec{Channel: cxv1.ChannelChat, WaitTime: &cxv1.WaitTimeSpec{Threshold: "2m"}},
	}
	if err := cl.Create(ctx, tp); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("create touchpoint %s/%s: %w", ns, name, err)
	}
	cxt := &cxv1.CXTarget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-wait"},
		Spec: cxv1.CXTargetSpec{
			TouchpointRef: &cxv1.LocalObjectReference{Name: name},
			Objective:     cxv1.Objective{WaitTime: &cxv1.WaitTimeObjective{Percent: resource.MustParse("95")}},
		},
	}
	if err := cl.Create(ctx, cxt); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("create cxtarget %s/%s: %w", ns, cxt.Name, err)
	}
	return nil
}

// converged counts the Touchpoints and CXTargets whose status describes
// their current generation with a verdict computed from the collector:
// Ready is True and, for a target, a state is set.
func converged(ctx context.Context, cl client.Reader) (int, int, error) {
	var tpList cxv1.TouchpointList
	if err := cl.List(ctx, &tpList); err != nil {
		return 0, 0, err
	}
	tps := 0
	for _, tp := range tpList.Items {
		if current(tp.Generation, tp.Status.ObservedGeneration, tp.Status.Conditions) && tp.Status.Ingest != nil {
			tps++
		}
	}
	var cxtList cxv1.CXTargetList
	if err := cl.List(ctx, &cxtList); err != nil {
		return 0, 0, err
	}
	targets := 0
	for _, t := range cxtList.Items {
		if current(t.Generation, t.Status.ObservedGeneration, t.Status.Conditions) && t.Status.State != "" {
			targets++
		}
	}
	return tps, targets, nil
}

func current(generation, observed int64, conds []metav1.Condition) bool {
	ready := meta.FindStatusCondition(conds, cxv1.ReadyCondition)
	return observed == generation && ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == generation
}

// rssMiB reads a process's resident set size.
func rssMiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// writes reads the manager's requests to the API server that change
// something, by series of client-go's rest_client_requests_total.
func writes(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		for _, m := range []string{`method="POST"`, `method="PUT"`, `method="PATCH"`, `method="DELETE"`} {
			if strings.Contains(line, m) {
				i := strings.LastIndexByte(line, ' ')
				v, err := strconv.ParseFloat(line[i+1:], 64)
				if err != nil {
					return nil, err
				}
				out[line[:i]] = v
			}
		}
	}
	return out, s.Err()
}

// logWrites logs the manager's writes since before, per object created,
// and returns the current counts.
func logWrites(addr string, before map[string]float64, created int) (map[string]float64, error) {
	now, err := writes(addr)
	if err != nil {
		return nil, err
	}
	total := 0.0
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			total += d
			logf("  %s +%.0f", k, d)
		}
	}
	logf("%.0f writes for %d Touchpoint and CXTarget pairs: %.2f per pair", total, created, total/float64(created))
	return now, nil
}

// logMemory logs how the manager's Go runtime splits its memory, to tell
// the live heap from what the collector's pacing and the scavenger leave
// resident.
func logMemory(addr string) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		logf("memory: %v", err)
		return
	}
	defer resp.Body.Close()
	var parts []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		switch name {
		case "go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
			"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_next_gc_bytes", "go_memstats_sys_bytes":
			if v, err := strconv.ParseFloat(value, 64); ok && err == nil {
				parts = append(parts, fmt.Sprintf("%s=%.0fMiB", strings.TrimPrefix(name, "go_memstats_"), v/(1<<20)))
			}
		}
	}
	logf("manager memory: %s", strings.Join(parts, " "))
}

// logResident logs the anonymous and file-backed parts of a process's
// resident set: the binary's mapped pages count in VmRSS too.
func logResident(pid int) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	var parts []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "RssAnon:") || strings.HasPrefix(line, "RssFile:") {
			parts = append(parts, strings.Join(strings.Fields(line), " "))
		}
	}
	logf("manager resident: %s", strings.Join(parts, ", "))
}

// saveProfile fetches a net/http/pprof profile from the manager.
func saveProfile(addr, name, path string) error {
	return saved(path, loadgen.Download(http.DefaultClient, "http://"+addr+"/debug/pprof/"+name, path))
}

// saved logs that path was written, unless err says otherwise.
func saved(path string, err error) error {
	if err == nil {
		logf("wrote %s", path)
	}
	return err
}

// saveAPIServerProfile fetches 60 seconds of the API server's CPU profile,
// to see what the manager's writes cost it.
func saveAPIServerProfile(cfg *rest.Config, path string) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	return saved(path, loadgen.Download(hc, strings.TrimSuffix(cfg.Host, "/")+"/debug/pprof/profile?seconds=60", path))
}

// download writes the body of a GET of url to path.
