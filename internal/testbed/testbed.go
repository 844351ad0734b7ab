// Package testbed runs the service as a process of its own, for the tests
// that need a real process (crash and restart) and for the load benchmark:
// it builds the binary, finds a free port, and stops a process politely
// before it kills it.
package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BuildService compiles the service (the main package at the root of the
// module the working directory belongs to) into dir and returns the
// binary's path. The error wraps exec.ErrNotFound when there is no go tool in
// PATH.
func BuildService(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("build the service: %w", err)
	}
	return BuildServiceFrom(ctx, root, dir)
}

// ModuleRoot is the directory of the go.mod of the module the current
// directory is in: the repository's root, from any directory in it.
func ModuleRoot(ctx context.Context) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module (go env GOMOD is %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// BuildServiceFrom compiles the service whose source is in src (the root of
// its module, for example a git worktree of another commit) into dir and
// returns the binary's path.
func BuildServiceFrom(ctx context.Context, src, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the service: %w", err)
	}
	bin := filepath.Join(dir, "tasks-api")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// FreePort asks the kernel for a TCP port on 127.0.0.1 that is free now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Stop sends sig to p and waits up to grace for exited (closed once p has
// been waited for) to close; then it kills p and waits again. It reports
// whether p stopped on sig; a process that has exited already counts.
func Stop(p *os.Process, exited <-chan struct{}, sig os.Signal, grace time.Duration) bool {
	select {
	case <-exited:
		return true
	default:
	}
	_ = p.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(grace):
	}
	_ = p.Kill()
	<-exited
	return false
}

// Tail is the last n lines of the file at path (a log), or what went wrong
// reading it.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
