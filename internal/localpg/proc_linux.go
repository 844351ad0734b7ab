package localpg

import "syscall"

// setParentDeathSignal asks the kernel for a fast shutdown of the cluster when
// the service dies, even by SIGKILL. Go sets it after switching credentials,
// which would otherwise clear it.
func setParentDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGINT }
