//go:build cluster

package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// prometheus is a real Prometheus (Debian's package) run inside the
// cluster's network namespace, as an SRE's would run in the cluster.
type prometheus struct {
	url string
}

// startPrometheus writes the rules of every PrometheusRule the manager
// generated into rule files, scrapes the collector and the manager through
// their Services, and starts Prometheus on loopback.
func startPrometheus(t *testing.T) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Items []struct {
			Metadata struct{ Namespace, Name string }
			Spec     json.RawMessage
		}
	}
	kubectlJSON(t, &rules, "get", "prometheusrules", "-A", "-l", "app.kubernetes.io/managed-by=cxop")
	if len(rules.Items) == 0 {
		t.Fatal("the manager generated no PrometheusRule")
	}
	for _, r := range rules.Items {
		// JSON is YAML: the PrometheusRule's spec is a rule file as it is.
		f := filepath.Join(rulesDir, r.Metadata.Namespace+"-"+r.Metadata.Name+".yaml")
		if err := os.WriteFile(f, r.Spec, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	config := fmt.Sprintf(`global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: [%[1]q]
scrape_configs:
  # Debian's Prometheus has no Kubernetes service discovery: the targets are
  # the Services' DNS names, and the labels are the ones a ServiceMonitor
  # would add. The collector serves /metrics on its Service's "metrics"
  # port, apart from the API.
  - job_name: collector
    static_configs:
      - targets: ["cxop-collector.%[2]s.svc.cluster.local:9090"]
        labels: {namespace: %[2]s, service: cxop-collector}
  - job_name: manager
    static_configs:
      - targets: ["%[3]s-metrics.%[4]s.svc.cluster.local:8080"]
        labels: {namespace: %[4]s, service: %[3]s-metrics}
`, filepath.Join(rulesDir, "*.yaml"), shopNS, release, systemNS)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(env.prometheus, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	return &prometheus{url: "http://" + addr}
}

func (p *prometheus) api(path string, v any) error {
	resp, err := http.Get(p.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// targetsUp returns nil once a target of each Service is up.
func (p *prometheus) targetsUp(services ...string) error {
	var res struct {
		Data struct {
			ActiveTargets []struct {
				Labels    map[string]string
				Health    string
				LastError string
			}
		}
	}
	if err := p.api("/api/v1/targets", &res); err != nil {
		return err
	}
	var missing []string
	for _, svc := range services {
		up := false
		for _, tg := range res.Data.ActiveTargets {
			up = up || tg.Labels["service"] == svc && tg.Health == "up"
		}
		if !up {
			missing = append(missing, svc)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no target up for %v; targets %+v", missing, res.Data.ActiveTargets)
	}
	return nil
}

// firing returns nil once an alert carrying every one of labels fires.
func (p *prometheus) firing(labels map[string]string) error {
	var res struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string
				State  string
			}
		}
	}
	if err := p.api("/api/v1/alerts", &res); err != nil {
		return err
	}
	for _, a := range res.Data.Alerts {
		match := a.State == "firing"
		for k, v := range labels {
			match = match && a.Labels[k] == v
		}
		if match {
			return nil
		}
	}
	var seen []string
	for _, a := range res.Data.Alerts {
		seen = append(seen, fmt.Sprintf("%s %v", a.State, a.Labels))
	}
	return fmt.Errorf("no firing alert with %v; alerts: [%s]", labels, strings.Join(seen, "; "))
}
