// Package chart tests charts/cxop against a real API server: its CRDs
// install, and every object it renders passes server-side validation.
package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cxop-dev/cxop/internal/version"
)

func TestChartRendersValidObjects(t *testing.T) {
	helm := os.Getenv("HELM")
	if helm == "" || os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal(`HELM and KUBEBUILDER_ASSETS must be set: run "make test"`)
	}
	chart := filepath.Join("..", "..", "charts", "cxop")

	if out, err := exec.Command(helm, "lint", "--strict", chart).CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(chart, "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane with the chart's CRDs: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// The namespaces of the namespaced mode below, for its Roles.
	for _, ns := range []string{"shop", "support"} {
		if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}

	for _, values := range [][]string{
		nil,
		{"--set", "watchNamespaces={shop,support}"},
		{"--set", "leaderElection=false", "--set", "rbac.aggregateToDefaultRoles=false", "--set", "replicas=2",
			"--set", "surveys.pageURL=https://cx.example.com/{namespace}", "--set", "surveys.webhookAllowHosts={mailer.internal,sms.internal}",
			"--set", "collector.imagePullSecrets={registry-cred,mirror-cred}",
			"--set", "surveys.allowInsecureWebhooks=true", "--set", "surveys.webhookDenyCIDRs={34.118.224.0/20,2600:1900:4000::/44}",

			"--set", "surveys.webhookRetryFor=72h", "--set", "surveys.invitationRatePerNamespace=2000000"},
		{"--set", "collector.store=postgres", "--set", "collector.postgres.secretName=cxop-postgres",
			"--set", "collector.postgres.secretKey=uri", "--set", "collector.postgres.replicas=3",
			"--set", "collector.postgres.statementCache=false", "--set", "collector.postgres.engineLeaseTTL=10s"},
	} {
		args := append([]string{"template", "cxop", chart, "--namespace", "default"}, values...)
		out, err := exec.Command(helm, args...).Output()
		if err != nil {
			t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
		}
		kinds := map[string]int{}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) == 0 {
				continue
			}
			kinds[u.GetKind()]++
			if u.GetKind() == "Deployment" {
				checkOneImage(t, values, u)
				checkManagerTakesArgs(t, values, u)
				checkWebhookArgs(t, values, u)
				checkStoreArgs(t, values, u)
			}
			if err := c.Create(context.Background(), u, client.DryRunAll); err != nil {
				t.Errorf("helm %s: %s %s rejected by the API server: %v", strings.Join(values, " "), u.GetKind(), u.GetName(), err)
			}
		}
		if kinds["Deployment"] != 1 || kinds["ClusterRole"] == 0 || kinds["ServiceAccount"] != 1 {
			t.Errorf("helm %s rendered %v; want a Deployment, a ServiceAccount and ClusterRoles", strings.Join(values, " "), kinds)
		}
	}
}

// checkOneImage holds the manager's image and the --collector-image it
// passes to the same reference, the one `make image` tags: one image runs the
// manager, the collectors and the wave jobs.
func checkOneImage(t *testing.T, values []string, deploy *unstructured.Unstructured) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("helm %s: %d containers in the manager Deployment", strings.Join(values, " "), len(containers))
	}
	c := containers[0].(map[string]any)
	image, _ := c["image"].(string)
	var collectorImage string
	args, _ := c["args"].([]any)
	for _, a := range args {
		if v, ok := strings.CutPrefix(a.(string), "--collector-image="); ok {
			collectorImage = v
		}
	}
	if image != version.Image() || collectorImage != image {
		t.Errorf("helm %s: manager image %q, collector image %q; want both %q", strings.Join(values, " "), image, collectorImage, version.Image())
	}
}

// checkWebhookArgs: the webhook values reach the manager, which hands them
// to the collectors; by default nothing loosens https-only webhooks.
func checkWebhookArgs(t *testing.T, values []string, deploy *unstructured.Unstructured) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	args := map[string]bool{}
	for _, a := range containers[0].(map[string]any)["args"].([]any) {
		args[a.(string)] = true
	}
	customised := strings.Contains(strings.Join(values, " "), "allowInsecureWebhooks")
	for _, arg := range []string{"--allow-insecure-webhooks", "--webhook-deny-cidrs=34.118.224.0/20,2600:1900:4000::/44"} {
		if args[arg] != customised {
			t.Errorf("helm %s: manager argument %s present: %v, want %v", strings.Join(values, " "), arg, args[arg], customised)
		}
	}
}

// checkStoreArgs: the store values reach the manager, and by default
// collectors keep the embedded store.
func checkStoreArgs(t *testing.T, values []string, deploy *unstructured.Unstructured) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	args := map[string]bool{}
	for _, a := range containers[0].(map[string]any)["args"].([]any) {
		args[a.(string)] = true
	}
	want := []string{"--collector-store=embedded", "--collector-postgres-secret-key=dsn",
		"--collector-postgres-replicas=2", "--collector-postgres-statement-cache=true"}
	if strings.Contains(strings.Join(values, " "), "collector.store=postgres") {
		want = []string{"--collector-store=postgres", "--collector-postgres-secret=cxop-postgres", "--collector-postgres-secret-key=uri",
			"--collector-postgres-replicas=3", "--collector-postgres-statement-cache=false", "--collector-postgres-engine-lease-ttl=10s"}
	}
	for _, arg := range want {
		if !args[arg] {
			t.Errorf("helm %s: manager arguments lack %s", strings.Join(values, " "), arg)
		}
	}
	if !strings.Contains(strings.Join(values, " "), "engineLeaseTTL") {
		for a := range args {
			if strings.HasPrefix(a, "--collector-postgres-engine-lease-ttl") {
				t.Errorf("helm %s: manager arguments hold %s; want the collectors' default", strings.Join(values, " "), a)
			}
		}
	}
}

// TestChartRefusesAnUnusableStore: a store the manager cannot run, or
// PostgreSQL with no Secret named, fails the install with the value to fix
// rather than a manager that crash-loops.
func TestChartRefusesAnUnusableStore(t *testing.T) {
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal(`HELM must be set: run "make test"`)
	}
	chart := filepath.Join("..", "..", "charts", "cxop")
	for _, tc := range []struct {
		values []string
		want   string
	}{
		{[]string{"--set", "collector.store=pg"}, `collector.store: "pg" is neither "embedded" nor "postgres"`},
		{[]string{"--set", "collector.store=postgres"}, "collector.postgres.secretName: must name the Secret with the connection string when collector.store is postgres"},
		{[]string{"--set", "collector.postgres.replicas=0"}, "collector.postgres.replicas: 0 is under 1"},
	} {
		args := append([]string{"template", "cxop", chart, "--namespace", "default"}, tc.values...)
		out, err := exec.Command(helm, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("helm %s: err %v, output %q; want a failure saying %q", strings.Join(args, " "), err, out, tc.want)
		}
	}
}

// checkManagerTakesArgs runs the manager with the arguments the chart
// renders, and no cluster to reach: it must get past its flags and their
// checks to loading a kubeconfig. A flag the chart passes and the binary
// does not know would crash-loop every install.
func checkManagerTakesArgs(t *testing.T, values []string, deploy *unstructured.Unstructured) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(deploy.Object, "spec", "template", "spec", "containers")
	var args []string
	for _, a := range containers[0].(map[string]any)["args"].([]any) {
		args = append(args, a.(string))
	}
	cmd := exec.Command(cxopBinary(t), args...)
	cmd.Env = []string{"KUBECONFIG=" + filepath.Join(t.TempDir(), "none"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "load kubeconfig") {
		t.Errorf("helm %s: cxop %s did not get as far as loading a kubeconfig: %v\n%s", strings.Join(values, " "), strings.Join(args, " "), err, out)
	}
}

var builtCxop string

// cxopBinary builds cxop once per test run.
func cxopBinary(t *testing.T) string {
	t.Helper()
	if builtCxop == "" {
		dir, err := os.MkdirTemp("", "cxop-chart-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		bin := filepath.Join(dir, "cxop")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build cxop: %v\n%s", err, out)
		}
		builtCxop = bin
	}
	return builtCxop
}
