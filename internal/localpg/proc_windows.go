package localpg

import (
	"errors"
	"os"
	"syscall"
)

// The embedded database needs Unix sockets and process groups; on Windows,
// set DATABASE_URL instead.

var (
	sigFastShutdown      os.Signal = os.Interrupt
	sigImmediateShutdown os.Signal = os.Kill
)

type osUser struct{}

func postgresOwner() (*osUser, error) {
	return nil, errors.New("the embedded PostgreSQL is not supported on Windows: set DATABASE_URL")
}
func (*osUser) chown(string) error                  { return nil }
func postgresProcAttr(*osUser) *syscall.SysProcAttr { return nil }
func processAlive(int) bool                         { return false }
func signalProcess(int, os.Signal) error            { return errors.ErrUnsupported }
func IsPostgresProcess(int) bool                    { return false }
