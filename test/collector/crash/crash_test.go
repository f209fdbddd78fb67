package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

// TestShortCrash is the CI-sized crash test: five SIGKILLs under load.
func TestShortCrash(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cxop")
	build := exec.Command("go", "build", "-o", bin, "github.com/cxop-dev/cxop")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build cxop: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := loadgen.RunCrashTest(ctx, loadgen.CrashOptions{
		Binary: bin, Dir: t.TempDir(), Kills: 5, Workers: 4,
		MinDelay: 50 * time.Millisecond, MaxDelay: 400 * time.Millisecond, Log: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("acked=%d lost=%d dup=%d", res.Acked, res.Lost, res.Dup)
	if res.Acked == 0 {
		t.Fatal("nothing was acknowledged: the load never reached the collector")
	}
	if res.Lost != 0 || res.Dup != 0 {
		t.Errorf("acked=%d lost=%d dup=%d, want nothing lost or counted twice", res.Acked, res.Lost, res.Dup)
	}
}
