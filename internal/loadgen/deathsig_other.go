//go:build !linux

package loadgen

import "syscall"

// setDeathSignal does nothing where the kernel offers no parent-death
// signal; Stop and Kill still end the child on every normal path.
func setDeathSignal(*syscall.SysProcAttr) {}
