package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/collectorapi"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// The survey engine's flags default to a day of retries and finite
// invitation caps, and refuse values that would drop messages early or
// mean nothing.
func TestDeliveryFlags(t *testing.T) {
	cmd := NewCommand()
	f := cmd.Flags()
	for name, want := range map[string]string{
		"webhook-retry-for": "24h0m0s", "webhook-probe-interval": "10m0s",
		"invitation-rate-per-touchpoint": "10000", "invitation-rate-per-namespace": "50000",
	} {
		if fl := f.Lookup(name); fl == nil || fl.DefValue != want {
			t.Errorf("--%s: %+v, want default %s", name, fl, want)
		}
	}
	if collectorapi.DefaultDelivery.RetryFor < 24*time.Hour {
		t.Errorf("default retry window %s is under a day", collectorapi.DefaultDelivery.RetryFor)
	}
	for _, tc := range []struct {
		o    collectorapi.DeliveryOptions
		want string
	}{
		{collectorapi.DeliveryOptions{RetryFor: 30 * time.Minute, ProbeInterval: time.Minute}, "--webhook-retry-for: 30m0s is under 1h"},
		{collectorapi.DeliveryOptions{RetryFor: time.Hour}, "--webhook-probe-interval: 0s is under 1s"},
		{collectorapi.DeliveryOptions{RetryFor: time.Hour, ProbeInterval: time.Minute, PerTouchpoint: -1}, "--invitation-rate-per-touchpoint: -1 is negative"},
		{collectorapi.DeliveryOptions{RetryFor: time.Hour, ProbeInterval: time.Minute, PerNamespace: -5}, "--invitation-rate-per-namespace: -5 is negative"},
	} {
		if err := tc.o.Check(""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	if err := collectorapi.DefaultDelivery.Check(""); err != nil {
		t.Errorf("the defaults: %v", err)
	}
	cmd.SetArgs([]string{"--data-dir", t.TempDir(), "--config", "/nonexistent", "--webhook-retry-for", "10m"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--webhook-retry-for") {
		t.Errorf("a 10m retry window: %v", err)
	}
}

// The manager passes its collector- flags on as the collector's.
func TestManagerDeliveryFlagsBecomeCollectorArgs(t *testing.T) {
	cmd := NewCommand()
	var o collectorapi.DeliveryOptions
	collectorapi.AddManagerDeliveryFlags(cmd.Flags(), &o)
	if err := cmd.Flags().Parse([]string{"--collector-webhook-retry-for=48h", "--collector-invitation-rate-per-touchpoint=0"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"--webhook-retry-for=48h0m0s", "--invitation-rate-per-touchpoint=0", "--invitation-rate-per-namespace=50000", "--webhook-probe-interval=10m0s"}
	if got := o.Args(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Args() = %v, want %v", got, want)
	}
	if err := o.Check("collector-"); err != nil {
		t.Error(err)
	}
	o.RetryFor = time.Minute
	if err := o.Check("collector-"); err == nil || !strings.Contains(err.Error(), "--collector-webhook-retry-for: 1m0s is under 1h") {
		t.Errorf("Check = %v", err)
	}
	if args := (collectorapi.DeliveryOptions{}).Args(); args != nil {
		t.Errorf("zero options pass %v", args)
	}
	// Every flag Args writes is one the collector declares.
	for _, a := range want {
		name := strings.TrimPrefix(strings.SplitN(a, "=", 2)[0], "--")
		if NewCommand().Flags().Lookup(name) == nil {
			t.Errorf("the collector has no --%s", name)
		}
	}
}

// The contract repeats the survey engine's delivery defaults rather than
// importing the engine; they must not drift apart.
func TestContractDeliveryDefaultsAreTheEngines(t *testing.T) {
	d := collectorapi.DefaultDelivery
	if d.RetryFor != engine.DefaultRetryFor || d.ProbeInterval != engine.DefaultProbeInterval {
		t.Fatalf("collectorapi.DefaultDelivery = %s retry, %s probe; the engine defaults to %s, %s",
			d.RetryFor, d.ProbeInterval, engine.DefaultRetryFor, engine.DefaultProbeInterval)
	}
}
