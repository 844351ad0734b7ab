package main

import "syscall"

// dieWithParent stops the service (gracefully: SIGINT) if the bench dies
// without stopping it, so no server is left holding the port and cluster.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
}
