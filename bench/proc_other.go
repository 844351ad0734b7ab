//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// dieWithParent: only Linux can tie the child's life to the bench's.
func dieWithParent() *syscall.SysProcAttr { return nil }

// raiseOpenFiles: the stream modes run on Linux only.
func raiseOpenFiles(int) (int, error) { return 0, errors.ErrUnsupported }
