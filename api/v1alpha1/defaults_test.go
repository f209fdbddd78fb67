package v1alpha1

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestDefaults(t *testing.T) {
	var tp TouchpointSpec
	if got := tp.GetWindow(); got != "28d" {
		t.Errorf("window default = %q, want 28d", got)
	}
	tp.Window = "7d"
	if got := tp.GetWindow(); got != "7d" {
		t.Errorf("window = %q, want 7d", got)
	}
	var svy SurveySpec
	if got := svy.GetLinkTTL(); got != "7d" {
		t.Errorf("linkTTL default = %q, want 7d", got)
	}
	trig := SurveyTrigger{}
	if p := trig.GetSamplePercent(); p.Cmp(resource.MustParse("100")) != 0 {
		t.Errorf("samplePercent default = %s, want 100", p.String())
	}
	var cxt CXTargetSpec
	if got := cxt.GetMinSamples(); got != 30 {
		t.Errorf("minSamples default = %d, want 30", got)
	}
	var a *Alerting
	if !a.GetBurnRateAlerts() {
		t.Error("burn-rate alerts are on by default")
	}
	if p := a.GetAtRiskBelow(); p.Cmp(resource.MustParse("25")) != 0 {
		t.Errorf("atRiskBelow default = %s, want 25", p.String())
	}
	off := false
	if (&Alerting{BurnRateAlerts: &off}).GetBurnRateAlerts() {
		t.Error("burnRateAlerts: false ignored")
	}
}

func TestDurationParse(t *testing.T) {
	for in, want := range map[Duration]time.Duration{
		"90s": 90 * time.Second, "5m": 5 * time.Minute, "28d": 28 * 24 * time.Hour,
		"1w": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute,
	} {
		got, err := in.Parse()
		if err != nil || got != want {
			t.Errorf("Duration(%q).Parse() = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := Duration("2 minutes").Parse(); err == nil {
		t.Error(`"2 minutes" parsed`)
	}
}

func TestSubject(t *testing.T) {
	s := CXTargetSpec{SurveyRef: &LocalObjectReference{Name: "nps"}}
	if k, n := s.Subject(); k != "Survey" || n != "nps" {
		t.Errorf("Subject() = %s/%s", k, n)
	}
	if k, _ := (&CXTargetSpec{}).Subject(); k != "" {
		t.Errorf("empty Subject() kind = %q", k)
	}
}
