//go:build cluster

// Package cluster tests cxop where its users run it: a real single-node
// Kubernetes (hack/cluster) with a kubelet, containerd, kube-proxy and
// cluster DNS, the chart installed with the image `make image` built. Each
// scenario asserts what a user would check: pods Ready, PVCs Bound, numbers
// in `kubectl get`, a token that starts working, an alert that fires.
//
// Run it with `make test-cluster`: it starts the cluster, runs this test
// inside the cluster's network and mount namespaces, and removes the cluster.
package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/test/internal/tour"
)

// env is what `make test-cluster` passes in.
var env struct {
	kubeconfig, kubectl, helm, image, nodeIP, dnsIP, prometheus, monitoringCRDs string
}

var root string

func TestMain(m *testing.M) {
	env.kubeconfig = os.Getenv("KUBECONFIG")
	env.kubectl = os.Getenv("KUBECTL")
	env.helm = os.Getenv("HELM")
	env.image = os.Getenv("CXOP_IMAGE")
	env.nodeIP = os.Getenv("CLUSTER_NODE_IP")
	env.dnsIP = os.Getenv("CLUSTER_DNS_IP")
	env.prometheus = os.Getenv("PROMETHEUS")
	env.monitoringCRDs = os.Getenv("MONITORING_CRDS")
	for name, v := range map[string]string{"KUBECONFIG": env.kubeconfig, "KUBECTL": env.kubectl, "HELM": env.helm,
		"CXOP_IMAGE": env.image, "CLUSTER_NODE_IP": env.nodeIP, "CLUSTER_DNS_IP": env.dnsIP,
		"PROMETHEUS": env.prometheus, "MONITORING_CRDS": env.monitoringCRDs} {
		if v == "" {
			fmt.Fprintf(os.Stderr, "cluster tier: %s is not set: run \"make test-cluster\"\n", name)
			os.Exit(1)
		}
	}
	var err error
	if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

const (
	systemNS   = "cxop-system"
	shopNS     = "shop"
	release    = "cxop"
	collector  = "cxop-collector-0"
	collectPVC = "data-cxop-collector-0"
)

// TestCluster runs the scenarios in order on one cluster: each builds on the
// state the one before left, as a user's day would.
func TestCluster(t *testing.T) {
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"HelmInstall", testHelmInstall},
		{"SamplesInRestrictedNamespace", testSamplesRestricted},
		{"NumbersInStatus", testNumbersInStatus},
		{"NewTouchpointReachesRunningCollector", testConfigReload},
		{"CollectorPodDeleted", testCollectorPodDeleted},
		{"LeaderFailover", testLeaderFailover},
		{"ScheduledWave", testScheduledWave},
		{"PrometheusPagesOnBreach", testPrometheusPages},
		{"PostgresReplicaDeleted", testPostgresReplicaDeleted},
		{"HelmUninstall", testHelmUninstall},
	}
	// The PostgreSQL that a scenario starts on the node serves until the
	// tier ends.
	t.Cleanup(func() {
		if clusterPG != nil {
			clusterPG.stop(t)
		}
	})
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			dumpState(t)
			t.FailNow()
		}
	}
}

// --- scenarios -------------------------------------------------------------

func testHelmInstall(t *testing.T) {
	// The Prometheus Operator's own CRDs, so that the manager generates
	// PrometheusRules and ServiceMonitors as it does in most clusters.
	kubectl(t, "apply", "--server-side", "-f", filepath.Join(env.monitoringCRDs, "monitoring.coreos.com_prometheusrules.yaml"),
		"-f", filepath.Join(env.monitoringCRDs, "monitoring.coreos.com_servicemonitors.yaml"))
	helm(t, "install", release, filepath.Join(root, "charts", "cxop"), "--namespace", systemNS, "--create-namespace",
		"--set", "replicas=2", "--set", "statusRefreshInterval=5s",
		// The stand-in mailer listens on the node over plain http.
		"--set", "surveys.webhookAllowHosts={"+env.nodeIP+"}", "--set", "surveys.allowInsecureWebhooks=true",
		"--wait", "--timeout", "5m")
	var deploy struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct{ Image string }
				}
			}
		}
		Status struct {
			ReadyReplicas int
			Conditions    []condition
		}
	}
	kubectlJSON(t, &deploy, "-n", systemNS, "get", "deployment", release)
	if img := deploy.Spec.Template.Spec.Containers[0].Image; img != env.image {
		t.Errorf("manager image %s, want the built %s", img, env.image)
	}
	if deploy.Status.ReadyReplicas != 2 || !hasCondition(deploy.Status.Conditions, "Available", "True") {
		t.Fatalf("manager Deployment: %d ready, conditions %+v; want 2 ready and Available", deploy.Status.ReadyReplicas, deploy.Status.Conditions)
	}
}

func testSamplesRestricted(t *testing.T) {
	kubectl(t, "create", "namespace", shopNS)
	kubectl(t, "label", "namespace", shopNS, "pod-security.kubernetes.io/enforce=restricted")
	kubectl(t, "-n", shopNS, "apply", "-f", filepath.Join(root, "config", "samples"))

	eventually(t, 3*time.Minute, func() error {
		var pod struct {
			Status struct {
				Phase      string
				Conditions []condition
			}
		}
		if err := kubectlJSONErr(&pod, "-n", shopNS, "get", "pod", collector); err != nil {
			return err
		}
		if !hasCondition(pod.Status.Conditions, "Ready", "True") {
			return fmt.Errorf("collector pod %s, conditions %+v", pod.Status.Phase, pod.Status.Conditions)
		}
		return nil
	})
	var pvc struct{ Status struct{ Phase string } }
	kubectlJSON(t, &pvc, "-n", shopNS, "get", "pvc", collectPVC)
	if pvc.Status.Phase != "Bound" {
		t.Fatalf("PVC %s is %s, want Bound", collectPVC, pvc.Status.Phase)
	}
	eventually(t, 2*time.Minute, func() error { return allReady(shopNS) })
}

func testNumbersInStatus(t *testing.T) {
	now := time.Now().UTC()
	at, err := tour.InBusinessHours(now)
	if err != nil {
		t.Fatal(err)
	}
	url := ingestURL(t, "tp", "support-chat")
	for _, b := range tour.Batches(at) {
		post(t, url+b.Path, secretToken(t, b.Secret), strings.Join(b.Lines, "\n"), 30*time.Second)
	}
	want := fmt.Sprintf("%+v", tour.Targets(now, at))
	var last string
	eventually(t, 90*time.Second, func() error {
		last = fmt.Sprintf("%+v", targetStatuses(t))
		if last != want {
			return fmt.Errorf("targets\n want %s\n  got %s", want, last)
		}
		return nil
	})
	// The Touchpoint refreshes its numbers on its own schedule, not when
	// the targets do: wait for them too.
	eventually(t, 90*time.Second, func() error {
		var tp struct {
			Status struct {
				Interactions   int
				WaitCompliance string
			}
		}
		kubectlJSON(t, &tp, "-n", shopNS, "get", "tp", "support-chat")
		if tp.Status.Interactions != 120 || tp.Status.WaitCompliance != "95" {
			return fmt.Errorf("support-chat: %d interactions at %s%%, want 120 at 95%%", tp.Status.Interactions, tp.Status.WaitCompliance)
		}
		return nil
	})
}

// testConfigReload applies a new Touchpoint and measures how long its token
// takes to work: the collector reads its config from a ConfigMap volume that
// the kubelet updates by swapping a symlink, with no restart.
func testConfigReload(t *testing.T) {
	before := collectorPod(t)
	kubectlStdin(t, `apiVersion: cx.cxop.dev/v1alpha1
kind: Touchpoint
metadata:
  name: store-front
spec:
  channel: store
  waitTime:
    threshold: 5m
`, "-n", shopNS, "apply", "-f", "-")
	var token string
	eventually(t, time.Minute, func() error {
		var err error
		token, err = secretTokenErr("cxop-touchpoint-store-front")
		return err
	})
	start := time.Now()
	url := ingestURL(t, "tp", "store-front")
	post(t, url+"/v1/events", token, fmt.Sprintf(`{"id":"store-1","touchpoint":"store-front","customer":"s1","time":%q,"waitSeconds":60}`,
		time.Now().UTC().Format(time.RFC3339)), 3*time.Minute)
	t.Logf("the new Touchpoint's token worked %s after its Secret existed", time.Since(start).Round(time.Second))
	after := collectorPod(t)
	if after.UID != before.UID || after.Restarts != before.Restarts {
		t.Errorf("the collector restarted to take the new config: pod %s/%d restarts, then %s/%d", before.UID, before.Restarts, after.UID, after.Restarts)
	}
}

// testCollectorPodDeleted deletes the collector's pod: the StatefulSet
// brings it back on the same volume, and every acknowledged record is
// counted again.
func testCollectorPodDeleted(t *testing.T) {
	var pvc struct{ Spec struct{ VolumeName string } }
	kubectlJSON(t, &pvc, "-n", shopNS, "get", "pvc", collectPVC)
	before := collectorPod(t)
	// While the collector restarts, the Breached target must never read
	// as anything else: an outage is no recovery.
	stop := make(chan struct{})
	seen := make(chan map[string]bool, 1)
	go func() {
		states := map[string]bool{}
		for {
			select {
			case <-stop:
				seen <- states
				return
			case <-time.After(250 * time.Millisecond):
			}
			if out, err := run(env.kubectl, "", "-n", shopNS, "get", "cxt", "delivery-csat-85", "-o", "jsonpath={.status.state}"); err == nil {
				states[out] = true
			}
		}
	}()
	kubectl(t, "-n", shopNS, "delete", "pod", collector, "--wait=true")
	eventually(t, 3*time.Minute, func() error {
		p, err := collectorPodErr()
		if err != nil {
			return err
		}
		if p.UID == before.UID || !p.Ready {
			return fmt.Errorf("collector pod %s ready=%v (old %s)", p.UID, p.Ready, before.UID)
		}
		return nil
	})
	// A few refreshes (5 s each) after the restart, so the manager has seen
	// both the outage and the collector back.
	time.Sleep(12 * time.Second)
	close(stop)
	if states := <-seen; len(states) != 1 || !states["Breached"] {
		t.Errorf("delivery-csat-85 read %v while the collector restarted, want only Breached", states)
	}
	var after struct{ Spec struct{ VolumeName string } }
	kubectlJSON(t, &after, "-n", shopNS, "get", "pvc", collectPVC)
	if after.Spec.VolumeName != pvc.Spec.VolumeName {
		t.Errorf("PVC bound to %s after the restart, %s before", after.Spec.VolumeName, pvc.Spec.VolumeName)
	}
	// Every acknowledged record, read back raw from the store.
	url := ingestURL(t, "tp", "support-chat")
	read := secretToken(t, "cxop-collector-read-token")
	for subject, want := range map[string]int{"touchpoint=support-chat": 120, "touchpoint=store-front": 1,
		"survey=support-nps": 60, "survey=delivery-csat": 40} {
		body := get(t, url+"/v1/export?"+subject, read)
		if n := bytes.Count(body, []byte("\n")); n != want {
			t.Errorf("export %s after the restart: %d records, want %d", subject, n, want)
		}
	}
	var tp struct{ Status struct{ Interactions int } }
	eventually(t, time.Minute, func() error {
		kubectlJSON(t, &tp, "-n", shopNS, "get", "tp", "support-chat")
		if tp.Status.Interactions != 120 {
			return fmt.Errorf("support-chat shows %d interactions after the restart, want 120", tp.Status.Interactions)
		}
		return nil
	})
}

// testLeaderFailover deletes the leading manager pod: the other replica
// takes the lease and status keeps updating within 20 s.
func testLeaderFailover(t *testing.T) {
	leader := leaseHolder(t)
	if leader == "" {
		t.Fatal("no manager holds the lease manager.cxop.dev")
	}
	start := time.Now()
	kubectl(t, "-n", systemNS, "delete", "pod", leader, "--wait=false")
	url := ingestURL(t, "tp", "support-chat")
	post(t, url+"/v1/events", secretToken(t, "cxop-touchpoint-support-chat"),
		fmt.Sprintf(`{"id":"after-failover","touchpoint":"support-chat","customer":"f1","time":%q,"waitSeconds":10}`,
			time.Now().UTC().Format(time.RFC3339)), 30*time.Second)
	eventually(t, 20*time.Second, func() error {
		var tp struct{ Status struct{ Interactions int } }
		if err := kubectlJSONErr(&tp, "-n", shopNS, "get", "tp", "support-chat"); err != nil {
			return err
		}
		if h := leaseHolder(t); h == leader || h == "" {
			return fmt.Errorf("lease still held by %q", h)
		}
		if tp.Status.Interactions != 121 {
			return fmt.Errorf("support-chat shows %d interactions, want 121", tp.Status.Interactions)
		}
		return nil
	})
	t.Logf("new leader %s; status updated %s after the leader was deleted", leaseHolder(t), time.Since(start).Round(time.Second))
}

// testScheduledWave gives a Survey a schedule: the CronJob's Job pod runs
// `cxop survey-wave` and the invitations reach a receiver.
func testScheduledWave(t *testing.T) {
	recv := newReceiver(t)
	kubectlStdin(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: wave-webhook
stringData:
  signing-key: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: wave-audience
data:
  customers.txt: |
    # customer-id,email
    w-1,ana@example.com
    w-2,ben@example.com
    w-3
---
apiVersion: cx.cxop.dev/v1alpha1
kind: Survey
metadata:
  name: monthly-nps
spec:
  type: NPS
  question: How likely are you to recommend us?
  schedule:
    cron: "* * * * *"
    audience: {name: wave-audience, key: customers.txt}
  delivery:
    webhook:
      url: %s/invitations
      secretRef: {name: wave-webhook, key: signing-key}
`, recv.url), "-n", shopNS, "apply", "-f", "-")
	eventually(t, 4*time.Minute, func() error {
		got := recv.customers()
		for _, c := range []string{"w-1", "w-2", "w-3"} {
			if !got[c] {
				return fmt.Errorf("invitations received for %v, want w-1, w-2 and w-3", got)
			}
		}
		return nil
	})
	// The invitations can arrive before the Job controller records the
	// pod's exit.
	eventually(t, time.Minute, func() error {
		var jobs struct {
			Items []struct {
				Metadata struct{ Name string }
				Status   struct{ Succeeded int }
			}
		}
		if err := kubectlJSONErr(&jobs, "-n", shopNS, "get", "jobs", "-l", "app.kubernetes.io/managed-by=cxop"); err != nil {
			return err
		}
		for _, j := range jobs.Items {
			if j.Status.Succeeded > 0 {
				return nil
			}
		}
		return fmt.Errorf("no wave Job succeeded: %+v", jobs.Items)
	})
}

// testPrometheusPages runs a real Prometheus that discovers the collector
// and the manager through their Services, loads the rules the manager
// generated, and pages once the chat's waits breach their target.
func testPrometheusPages(t *testing.T) {
	prom := startPrometheus(t)
	eventually(t, 2*time.Minute, func() error { return prom.targetsUp("cxop-collector", release+"-metrics") })
	// A scrape before the breach, so the counters' increase is seen.
	time.Sleep(6 * time.Second)
	now := time.Now().UTC()
	at, err := tour.InBusinessHours(now)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := range 100 {
		lines = append(lines, fmt.Sprintf(`{"id":"breach-%d","touchpoint":"support-chat","customer":"b%d","time":%q,"waitSeconds":900}`,
			i, i, at.Format(time.RFC3339)))
	}
	post(t, ingestURL(t, "tp", "support-chat")+"/v1/events", secretToken(t, "cxop-touchpoint-support-chat"), strings.Join(lines, "\n"), 30*time.Second)
	// The page carries the target's identity and its spec.alerting.labels.
	eventually(t, 3*time.Minute, func() error {
		return prom.firing(map[string]string{"severity": "page", "namespace": shopNS, "cxtarget": "chat-wait-2m", "team": "customer-care"})
	})
}

// testHelmUninstall removes the release: the operator's own objects go, the
// collector's data stays on its PVC, and ingest does not depend on the
// operator: the collector keeps acknowledging data (docs/design-notes.md,
// "Uninstalling").
func testHelmUninstall(t *testing.T) {
	helm(t, "uninstall", release, "--namespace", systemNS, "--wait", "--timeout", "2m")
	for _, obj := range [][]string{
		{"-n", systemNS, "deployment", release},
		{"-n", systemNS, "service", release + "-metrics"},
		{"-n", systemNS, "serviceaccount", release},
		{"clusterrole", release + "-manager"},
		{"clusterrolebinding", release + "-manager"},
	} {
		eventually(t, time.Minute, func() error {
			args := append([]string{"get", "--ignore-not-found", "-o", "name"}, obj...)
			if out := strings.TrimSpace(kubectlOut(t, args...)); out != "" {
				return fmt.Errorf("%s still exists after helm uninstall", out)
			}
			return nil
		})
	}
	var pvc struct{ Status struct{ Phase string } }
	kubectlJSON(t, &pvc, "-n", shopNS, "get", "pvc", collectPVC)
	if pvc.Status.Phase != "Bound" {
		t.Errorf("the collector's PVC is %s after helm uninstall, want it kept and Bound", pvc.Status.Phase)
	}
	post(t, ingestURL(t, "tp", "support-chat")+"/v1/events", secretToken(t, "cxop-touchpoint-support-chat"),
		fmt.Sprintf(`{"id":"after-uninstall","touchpoint":"support-chat","customer":"u1","time":%q,"waitSeconds":10}`,
			time.Now().UTC().Format(time.RFC3339)), 30*time.Second)
}

// --- helpers ---------------------------------------------------------------

type condition struct{ Type, Status, Reason, Message string }

func hasCondition(cs []condition, typ, status string) bool {
	for _, c := range cs {
		if c.Type == typ && c.Status == status {
			return true
		}
	}
	return false
}

// eventually polls f every second until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(time.Second)
	}
}

func run(name string, stdin string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.kubeconfig)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func kubectl(t *testing.T, args ...string) { t.Helper(); kubectlOut(t, args...) }

func kubectlOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(env.kubectl, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kubectlStdin(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if _, err := run(env.kubectl, stdin, args...); err != nil {
		t.Fatal(err)
	}
}

func helm(t *testing.T, args ...string) {
	t.Helper()
	if _, err := run(env.helm, "", args...); err != nil {
		t.Fatal(err)
	}
}

func kubectlJSONErr(v any, args ...string) error {
	out, err := run(env.kubectl, "", append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

func kubectlJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	if err := kubectlJSONErr(v, args...); err != nil {
		t.Fatal(err)
	}
}

// allReady returns nil once every cx object in ns is Ready=True.
func allReady(ns string) error {
	var list struct {
		Items []struct {
			Kind     string
			Metadata struct{ Name string }
			Status   struct{ Conditions []condition }
		}
	}
	if err := kubectlJSONErr(&list, "-n", ns, "get", "cx"); err != nil {
		return err
	}
	if len(list.Items) == 0 {
		return fmt.Errorf("no cx objects in %s", ns)
	}
	var notReady []string
	for _, it := range list.Items {
		if !hasCondition(it.Status.Conditions, "Ready", "True") {
			notReady = append(notReady, fmt.Sprintf("%s/%s %+v", it.Kind, it.Metadata.Name, it.Status.Conditions))
		}
	}
	if len(notReady) > 0 {
		return fmt.Errorf("not Ready: %s", strings.Join(notReady, "; "))
	}
	return nil
}

func ingestURL(t *testing.T, kind, name string) string {
	t.Helper()
	return nsIngestURL(t, shopNS, kind, name)
}

func secretTokenErr(name string) (string, error) {
	out, err := run(env.kubectl, "", "-n", shopNS, "get", "secret", name, "-o", "jsonpath={.data.token}")
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(out)
	if err != nil || len(b) == 0 {
		return "", fmt.Errorf("secret %s holds no token (%v)", name, err)
	}
	return string(b), nil
}

func secretToken(t *testing.T, name string) string {
	t.Helper()
	tok, err := secretTokenErr(name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// httpClient resolves Service names through the cluster's DNS, as a pod
// does: the test runs in the cluster's network namespace but keeps the
// machine's resolv.conf.
var httpClient = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(host, ".svc") {
			host += ".cluster.local"
		}
		if net.ParseIP(host) == nil {
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(env.dnsIP, "53"))
			}}
			ips, err := r.LookupHost(ctx, host)
			if err != nil {
				return nil, err
			}
			host = ips[0]
		}
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, net.JoinHostPort(host, port))
	}},
}

// post sends body until the collector answers 200: it answers 401 for a
// token until it has loaded the config holding the token's hash.
func post(t *testing.T, url, token, body string, within time.Duration) {
	t.Helper()
	eventually(t, within, func() error {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		switch resp.StatusCode {
		case http.StatusOK:
			return nil
		case http.StatusUnauthorized, http.StatusServiceUnavailable:
			return fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, msg)
		}
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, msg)
		return nil
	})
}

func get(t *testing.T, url, token string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body
}

type podState struct {
	UID      string
	Restarts int
	Ready    bool
}

func collectorPodErr() (podState, error) {
	var pod struct {
		Metadata struct{ UID string }
		Status   struct {
			Conditions        []condition
			ContainerStatuses []struct{ RestartCount int }
		}
	}
	if err := kubectlJSONErr(&pod, "-n", shopNS, "get", "pod", collector); err != nil {
		return podState{}, err
	}
	s := podState{UID: pod.Metadata.UID, Ready: hasCondition(pod.Status.Conditions, "Ready", "True")}
	for _, c := range pod.Status.ContainerStatuses {
		s.Restarts += c.RestartCount
	}
	return s, nil
}

func collectorPod(t *testing.T) podState {
	t.Helper()
	p, err := collectorPodErr()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaseHolder returns the pod holding the manager's lease. A holder's
// identity is "<pod>_<uuid>".
func leaseHolder(t *testing.T) string {
	t.Helper()
	var lease struct {
		Spec struct{ HolderIdentity string }
	}
	if err := kubectlJSONErr(&lease, "-n", systemNS, "get", "lease", "manager.cxop.dev"); err != nil {
		return ""
	}
	pod, _, _ := strings.Cut(lease.Spec.HolderIdentity, "_")
	return pod
}

func targetStatuses(t *testing.T) map[string]tour.Target {
	t.Helper()
	got, err := tour.ReadTargets([]byte(kubectlOut(t, "-n", shopNS, "get", "cxt", "-o", "json")))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// dumpState logs what a person would look at first when a scenario fails.
func dumpState(t *testing.T) {
	for _, args := range [][]string{
		{"get", "pods,pvc,statefulsets,cronjobs,jobs", "-A", "-o", "wide"},
		{"get", "cx", "-A"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", systemNS, "logs", "-l", "app.kubernetes.io/name=cxop", "--tail=50", "--prefix"},
		{"-n", shopNS, "logs", collector, "--tail=50"},
	} {
		out, err := run(env.kubectl, "", args...)
		t.Logf("kubectl %s:\n%s%v", strings.Join(args, " "), out, err)
	}
}
