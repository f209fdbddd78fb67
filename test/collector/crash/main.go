// Command crash kills a collector with SIGKILL at random moments under
// load, restarts it, recounts, and prints "acked=N lost=L dup=D" as its
// last line. It exits 1 unless nothing was lost or counted twice.
//
//	go run ./test/collector/crash -cxop bin/cxop -kills 20
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cxop-dev/cxop/internal/loadgen"
)

func main() {
	bin := flag.String("cxop", "bin/cxop", "the cxop binary")
	kills := flag.Int("kills", 20, "how many times to SIGKILL the collector")
	workers := flag.Int("workers", 4, "concurrent writers")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()

	dir, err := os.MkdirTemp("", "cxop-crash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := loadgen.RunCrashTest(ctx, loadgen.CrashOptions{
		Binary: *bin, Dir: dir, Kills: *kills, Workers: *workers,
		Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash test:", err)
		os.Exit(2)
	}
	fmt.Printf("acked=%d lost=%d dup=%d\n", res.Acked, res.Lost, res.Dup)
	if res.Lost != 0 || res.Dup != 0 {
		os.Exit(1)
	}
}
