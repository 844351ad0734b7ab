//go:build unix && !linux

package localpg

import "syscall"

// setParentDeathSignal has no equivalent here; an orphaned cluster is stopped
// by the next start instead (see Server.reclaim).
func setParentDeathSignal(*syscall.SysProcAttr) {}
