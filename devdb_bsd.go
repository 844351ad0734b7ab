//go:build unix && !linux

package main

import "syscall"

// setParentDeathSignal has no equivalent here; an orphaned cluster is stopped
// by the next start instead (see localPostgres.reclaim).
func setParentDeathSignal(*syscall.SysProcAttr) {}
