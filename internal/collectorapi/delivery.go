package collectorapi

import (
	"fmt"
	"strconv"
	"time"
)

// DeliveryOptions tune how the survey engine delivers and how many
// invitations interactions may trigger.
type DeliveryOptions struct {
	// RetryFor is how long a failing message is retried before it is
	// parked (kept) and its webhook reported failing.
	RetryFor time.Duration
	// ProbeInterval is how often a failing webhook is tried with one
	// parked message.
	ProbeInterval time.Duration
	// PerTouchpoint and PerNamespace cap the invitations interactions
	// trigger per hour; 0 means no cap.
	PerTouchpoint, PerNamespace int
}

// FlagSet is the part of a pflag.FlagSet the delivery flags use.
type FlagSet interface {
	DurationVar(p *time.Duration, name string, value time.Duration, usage string)
	IntVar(p *int, name string, value int, usage string)
}

// DefaultDelivery is what the flags default to, and what Run takes when
// Options.Delivery is left zero.
// RetryFor and ProbeInterval are the survey engine's own defaults
// (engine.DefaultRetryFor, engine.DefaultProbeInterval; a collector test
// keeps them equal), repeated so the contract does not depend on the engine.
var DefaultDelivery = DeliveryOptions{RetryFor: 24 * time.Hour, ProbeInterval: 10 * time.Minute, PerTouchpoint: 10_000, PerNamespace: 50_000}

// AddManagerDeliveryFlags declares the manager's flags that set the
// collectors' delivery options: the collector flags, prefixed with
// "collector-".
func AddManagerDeliveryFlags(f FlagSet, o *DeliveryOptions) {
	d := DefaultDelivery
	o.ProbeInterval = d.ProbeInterval
	f.DurationVar(&o.RetryFor, "collector-webhook-retry-for", d.RetryFor, "each collector's --webhook-retry-for: how long a failing webhook message is retried before it is parked (kept) and the Survey's Delivering condition turns False")
	f.IntVar(&o.PerTouchpoint, "collector-invitation-rate-per-touchpoint", d.PerTouchpoint, "each collector's --invitation-rate-per-touchpoint: invitations one touchpoint may trigger per hour; 0: no cap")
	f.IntVar(&o.PerNamespace, "collector-invitation-rate-per-namespace", d.PerNamespace, "each collector's --invitation-rate-per-namespace: invitations one namespace's touchpoints may trigger per hour; 0: no cap")
}

// Args are the collector flags that set o; none for the zero value, which
// leaves the collector's defaults.
func (o DeliveryOptions) Args() []string {
	if o == (DeliveryOptions{}) {
		return nil
	}
	args := []string{
		"--webhook-retry-for=" + o.RetryFor.String(),
		"--invitation-rate-per-touchpoint=" + strconv.Itoa(o.PerTouchpoint),
		"--invitation-rate-per-namespace=" + strconv.Itoa(o.PerNamespace),
	}
	if o.ProbeInterval > 0 {
		args = append(args, "--webhook-probe-interval="+o.ProbeInterval.String())
	}
	return args
}

// Check refuses options the collector would refuse, naming the flag with
// its prefix ("" for the collector's, "collector-" for the manager's).
func (o DeliveryOptions) Check(prefix string) error {
	switch {
	case o.RetryFor < time.Hour:
		return fmt.Errorf("--%swebhook-retry-for: %s is under 1h", prefix, o.RetryFor)
	case o.ProbeInterval < time.Second:
		return fmt.Errorf("--%swebhook-probe-interval: %s is under 1s", prefix, o.ProbeInterval)
	case o.PerTouchpoint < 0:
		return fmt.Errorf("--%sinvitation-rate-per-touchpoint: %d is negative", prefix, o.PerTouchpoint)
	case o.PerNamespace < 0:
		return fmt.Errorf("--%sinvitation-rate-per-namespace: %d is negative", prefix, o.PerNamespace)
	}
	return nil
}
