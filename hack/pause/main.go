// Command pause is the sandbox ("pause") container of the local cluster that
// hack/cluster/up.sh starts. It holds a Pod's namespaces open and does
// nothing else: it blocks until SIGINT or SIGTERM and, running as PID 1 of
// the Pod's PID namespace when namespaces are shared, reaps zombies so
// orphaned processes do not pile up.
//
// It is built with CGO_ENABLED=0 into a static binary that is the only file of
// the image registry.k8s.io/pause:cxop, which containerd is configured to use
// as its sandbox image so that nothing is ever pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that exited; WNOHANG so a burst of SIGCHLDs
		// merged into one signal is still fully drained.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
