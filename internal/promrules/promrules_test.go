package promrules

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const day = 24 * time.Hour

func TestBurnRateThresholdsScaleWithTheWindow(t *testing.T) {
	for _, tc := range []struct {
		window time.Duration
		want   []float64
	}{
		{30 * day, []float64{14.4, 6, 3, 1}},
		{28 * day, []float64{13.44, 5.6, 2.8, 28.0 / 30}},
		{7 * day, []float64{3.36, 1.4, 0.7, 7.0 / 30}},
	} {
		for i, p := range pairs {
			if got := BurnRateThreshold(tc.window, p.long, p.budgetShare); math.Abs(got-tc.want[i]) > 1e-9 {
				t.Errorf("window %s, long %s: threshold %v, want %v", tc.window, p.long, got, tc.want[i])
			}
		}
	}
}

func TestGenerateRefusesWhatCannotBeRuled(t *testing.T) {
	base := Target{Namespace: "shop", Name: "t", Kind: WaitTime, Objective: 95, Touchpoints: []string{"chat"}, Window: 28 * day}
	for _, tc := range []struct {
		mutate func(*Target)
		want   string
	}{
		{func(t *Target) { t.Window = time.Hour }, "window: 1h is shorter than the 6h the slowest alert needs"},
		{func(t *Target) { t.Objective = 100 }, "objective: 100% must be between 0 and 100, exclusive"},
		{func(t *Target) { t.Kind = "responseRate" }, `kind: "responseRate" has no Prometheus rules`},
		{func(t *Target) { t.Touchpoints = nil }, "the target counts no touchpoint or survey"},
		{func(t *Target) { t.Touchpoints = []string{`a"|.*`} }, `"a\"|.*" is not a touchpoint or survey name`},
	} {
		target := base
		tc.mutate(&target)
		if _, err := Generate(target); err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// TestRulesWithPromtool checks every generated group with `promtool check
// rules` and runs testdata/*.test.yaml through `promtool test rules`: each
// alert fires in at least one case and stays silent in another, and no
// traffic records a burn rate of 0, not NaN.
func TestRulesWithPromtool(t *testing.T) {
	promtool := os.Getenv("PROMTOOL")
	if promtool == "" {
		t.Fatal(`PROMTOOL is not set: run "make test", or export PROMTOOL="$(hack/setup-promtool.sh | tail -n 1)"`)
	}
	dir := t.TempDir()
	targets := map[string]Target{
		"wait.rules.yaml": {Namespace: "shop", Name: "chat-wait", SubjectKind: "Touchpoint", Kind: WaitTime, Objective: 95,
			Touchpoints: []string{"chat"}, Window: 28 * day, Labels: map[string]string{"team": "care"}, RunbookURL: "https://runbooks.example/chat-wait"},
		"nps.rules.yaml": {Namespace: "shop", Name: "support-nps", SubjectKind: "Survey", Kind: NPS, Objective: 40,
			Surveys: []string{"support-nps"}, Window: 28 * day},
		"journey.rules.yaml": {Namespace: "shop", Name: "help-wait", SubjectKind: "Journey", Kind: WaitTime, Objective: 95,
			Touchpoints: []string{"chat", "phone"}, Window: 7 * day},
		"ces.rules.yaml": {Namespace: "shop", Name: "returns-ces", SubjectKind: "Survey", Kind: CES, Objective: 5,
			Surveys: []string{"returns-ces"}, Window: 28 * day},
	}
	for file, target := range targets {
		groups, err := Generate(target)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		data, err := yaml.Marshal(groups)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s\n%s", file, err, out, data)
		}
	}
	collector, err := Collector("shop")
	if err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(collector)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "collector.rules.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules collector.rules.yaml: %v\n%s\n%s", err, out, data)
	}
	tests, err := filepath.Glob(filepath.Join("testdata", "*.test.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no rule tests in testdata: %v", err)
	}
	for _, test := range tests {
		data, err := os.ReadFile(test)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.Base(test))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool test rules %s: %v\n%s", test, err, out)
		}
	}
}
