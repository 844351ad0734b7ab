//go:build unix

package localpg

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var (
	sigFastShutdown      = syscall.SIGINT  // postmaster: disconnect clients, checkpoint, exit
	sigImmediateShutdown = syscall.SIGQUIT // postmaster: exit now, recover at next start
)

// osUser is the account the cluster runs as when the service runs as root,
// because PostgreSQL refuses to run as root.
type osUser struct{ uid, gid int }

// postgresOwner is nil unless the service runs as root; then it is the postgres user.
func postgresOwner() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as another user, but there is no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &osUser{uid: uid, gid: gid}, nil
}

func (u *osUser) chown(path string) error {
	if u == nil {
		return nil
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
}

// postgresProcAttr puts the server in its own process group, so the terminal's
// Ctrl-C reaches only the service (which then shuts the database down in
// order), and makes it stop if the service dies without doing so.
func postgresProcAttr(owner *osUser) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if owner != nil {
		attr.Credential = &syscall.Credential{Uid: uint32(owner.uid), Gid: uint32(owner.gid), NoSetGroups: true}
	}
	setParentDeathSignal(attr)
	return attr
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

func signalProcess(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// IsPostgresProcess reports whether pid is a running postgres server process.
func IsPostgresProcess(pid int) bool {
	if !processAlive(pid) {
		return false
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
		name := string(bytes.TrimSpace(comm))
		return name == "postgres" || name == "postmaster"
	}
	out, err := exec.Command("ps", "-p", strconv.Itoa(pid), "-o", "comm=").Output()
	if err != nil {
		return false
	}
	name := filepath.Base(strings.TrimSpace(string(out)))
	return name == "postgres" || name == "postmaster"
}
