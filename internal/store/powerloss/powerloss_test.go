package powerloss

import (
	"context"
	"testing"
	"time"
)

// TestPowerLoss cuts the power at 300 random moments under four writers
// (a quarter of the cuts keep exactly the synced data, the rest a random
// share of the unsynced blocks too) and expects every acknowledged record
// stored and counted once after each. make crash-test runs 1,000 or more.
func TestPowerLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{CrashPoints: 300, Log: t.Logf})
	if err != nil {
		t.Fatalf("seed %d: %v", res.Seed, err)
	}
	t.Logf("seed %d: %d crash points, %s, %d acknowledged records checked, %d unacknowledged records kept",
		res.Seed, res.CrashPoints, res, res.Checked, res.Unacked)
	if res.Acked < 1000 {
		t.Errorf("only %d records were acknowledged: the writers barely ran", res.Acked)
	}
	if !res.OK() {
		t.Errorf("seed %d: %s, %d phantom: %v", res.Seed, res, res.Phantom, res.Failures)
	}
}
