package testbed

import "syscall"

// dieWithParent has the kernel stop a child (SIGTERM) when the process that
// started it dies, even by SIGKILL or SIGPIPE, so that a test killed midway
// leaves no haproxy behind holding a port.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
