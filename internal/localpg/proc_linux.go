package localpg

import "syscall"

// setParentDeathSignal asks the kernel for a fast shutdown of the cluster when
// the service dies, even by SIGKILL. Go sets it after switching credentials,
// which would otherwise clear it.
//
// Linux sends the signal when the thread that started postgres exits, not
// only the process. The Go runtime ends a thread only when a goroutine ends
// while locked to it (runtime.LockOSThread without Unlock), so no code in a
// process that starts a cluster may do that: it would stop the cluster if
// the thread was the one that forked postgres.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }
