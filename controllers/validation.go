package controllers

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
)

// The schema validates the shape of every field; these checks cover what a
// schema cannot: durations that overflow, time zones that do not exist, cron
// expressions that parse as five fields but not as a schedule. Each error
// names the field, as the API server's own messages do.

// maxDuration bounds windows and TTLs: ten years is far beyond any useful
// CX window and keeps every arithmetic on it far from overflow.
const maxDuration = 10 * 365 * 24 * time.Hour

func checkDuration(field string, d cxv1.Duration) error {
	if d == "" {
		return nil
	}
	v, err := d.Parse()
	if err != nil {
		return fmt.Errorf("%s: %q is not a valid duration: %w", field, d, err)
	}
	if v <= 0 || v > maxDuration {
		return fmt.Errorf("%s: %q must be greater than zero and at most 10 years", field, d)
	}
	return nil
}

func checkTimeZone(field, tz string) error {
	if _, err := time.LoadLocation(tz); err != nil {
		return fmt.Errorf("%s: %q is not a known IANA time zone", field, tz)
	}
	return nil
}

// cronParser accepts the five-field syntax of Kubernetes CronJobs, which
// use the same library.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func checkCron(field, expr string) error {
	if _, err := cronParser.Parse(expr); err != nil {
		return fmt.Errorf("%s: %q is not a valid cron expression: %w", field, expr, err)
	}
	return nil
}

// firstError returns the first non-nil error, so a status names one problem
// at a time in spec order.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
