package loadgen

import "syscall"

// setDeathSignal makes the kernel SIGKILL the child when the process that
// started it dies, so no collector outlives a killed test run.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
