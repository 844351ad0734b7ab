//go:build !linux

package testbed

import "syscall"

// dieWithParent: only Linux ties a child's life to its parent's.
func dieWithParent() *syscall.SysProcAttr { return nil }
