package controllers

import (
	"testing"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

func TestCheckDuration(t *testing.T) {
	for _, tc := range []struct {
		in      cxv1.Duration
		wantErr string
	}{
		{"", ""},
		{"28d", ""},
		{"1h30m", ""},
		{"10y", ""},
		{"11y", `spec.window: "11y" must be greater than zero and at most 10 years`},
		{"0s", `spec.window: "0s" must be greater than zero and at most 10 years`},
		{"99999999999999999999d", `spec.window: "99999999999999999999d" is not a valid duration`},
	} {
		err := checkDuration("spec.window", tc.in)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tc.wantErr == "" && got != "" || tc.wantErr != "" && (len(got) < len(tc.wantErr) || got[:len(tc.wantErr)] != tc.wantErr) {
			t.Errorf("checkDuration(%q) = %q, want prefix %q", tc.in, got, tc.wantErr)
		}
	}
}

func TestCheckSurveySpec(t *testing.T) {
	base := func() cxv1.SurveySpec {
		return cxv1.SurveySpec{
			Type: cxv1.SurveyTypeNPS, Question: "q",
			Schedule: &cxv1.SurveySchedule{Cron: "0 9 1 */3 *", TimeZone: "Europe/Paris"},
		}
	}
	if err := checkSurveySpec(new(base())); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	badTZ := base()
	badTZ.Schedule.TimeZone = "Mars/Olympus"
	if err := checkSurveySpec(&badTZ); err == nil || err.Error() != `spec.schedule.timeZone: "Mars/Olympus" is not a known IANA time zone` {
		t.Errorf("bad time zone: %v", err)
	}
	badCron := base()
	badCron.Schedule.Cron = "61 * * * *"
	if err := checkSurveySpec(&badCron); err == nil {
		t.Error("minute 61 accepted")
	}
	badTTL := base()
	badTTL.LinkTTL = "0d"
	if err := checkSurveySpec(&badTTL); err == nil || err.Error()[:13] != "spec.linkTTL:" {
		t.Errorf("zero linkTTL: %v", err)
	}
}
