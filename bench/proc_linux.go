package main

import "syscall"

// dieWithParent stops the service (gracefully: SIGINT) if the bench dies
// without stopping it, so no server is left holding the port and cluster.
// Linux also sends it when the thread that started the service exits, so no
// goroutine of the bench may end locked to its thread (see stall_linux.go).
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
}

// raiseOpenFiles raises this process's limit on open files to at least n
// (the soft limit up to the hard one; the hard one too when the bench may),
// and returns the limit now. Since Go 1.21 a process started afterwards
// inherits the limit set here (os/exec restores the original only when the
// runtime itself raised it); the bench checks the service's in /proc.
func raiseOpenFiles(n int) (int, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	want := l
	want.Cur = max(l.Cur, min(uint64(n), l.Max))
	if uint64(n) > l.Max {
		want.Cur, want.Max = uint64(n), uint64(n) // allowed to root only
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want.Cur, want.Max = l.Max, l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return int(l.Cur), err
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return int(l.Cur), nil
}
