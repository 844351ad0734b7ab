//go:build !linux

package main

import "syscall"

// dieWithParent: only Linux can tie the child's life to the bench's.
func dieWithParent() *syscall.SysProcAttr { return nil }
