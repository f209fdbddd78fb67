package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

// cxopBinary is built once by TestMain from the module under test.
var cxopBinary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cxop-crash-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := goCommand()
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash test: no go command to build cxop with:", err)
		return 1
	}
	cxopBinary = filepath.Join(dir, "cxop")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool, "build", "-o", cxopBinary, "github.com/cxop-dev/cxop")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "crash test: go build github.com/cxop-dev/cxop: %v\n", err)
		return 1
	}
	return m.Run()
}

// goCommand is the go that runs this test: $GOROOT/bin/go when go test
// set GOROOT, else the go on PATH.
func goCommand() (string, error) {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); isFile(p) {
			return p, nil
		}
	}
	return exec.LookPath("go")
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// TestShortCrash is the CI-sized crash test: five SIGKILLs under about ten
// seconds of load, then a recount of every acknowledged id.
func TestShortCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	res, err := loadgen.RunCrashTest(ctx, loadgen.Options{
		Binary: cxopBinary, Dir: dir, Kills: 5, Workers: 4,
		MinDelay: 50 * time.Millisecond, MaxDelay: 600 * time.Millisecond,
		// One kill after the first periodic checkpoint, so a restart
		// replays from a checkpoint.
		LongEvery: 5, LongMin: 5500 * time.Millisecond, LongMax: 7 * time.Second,
		Log: t.Logf,
	})
	if err != nil {
		dumpLog(t, filepath.Join(dir, "collector.log"))
		t.Fatalf("crash test did not finish: %v", err)
	}
	t.Logf("%s; %d batches resent, %d of their records already stored; exported %d, summary %d after the last kill, %d after a clean restart",
		res, res.Retried, res.RetriedStored, res.Exported, res.SummaryAfterCrash, res.Summary)
	if res.Kills != 5 {
		t.Errorf("killed the collector %d times, want 5", res.Kills)
	}
	if res.Acked == 0 {
		t.Fatal("nothing was acknowledged: the load never reached the collector")
	}
	if res.Mismatch != "" {
		t.Error(res.Mismatch)
	}
	if res.ServerErrors != 0 {
		t.Errorf("the collector answered %d requests with a 5xx after it was ready", res.ServerErrors)
	}
	if res.Unexpected != 0 {
		t.Errorf("%d exported ids were never sent", res.Unexpected)
	}
	if res.Lost != 0 || res.Dup != 0 {
		t.Errorf("%s, want nothing lost and nothing stored or counted twice", res)
	}
}

// dumpLog shows the end of the collector's log in the test output.
func dumpLog(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	t.Logf("end of %s:\n%s", path, b)
}
