// Package pgtest provides the PostgreSQL the tests run against: a server for
// the suite (TEST_DATABASE_URL, else a testcontainers container when a Docker
// engine answers, else a throwaway localpg cluster), directories for the
// tests' own clusters, and pgbouncer in front of a server.
//
// Nothing here starts by itself: a test asks, and under -short every test
// that would start PostgreSQL is skipped.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"tasks-api/internal/localpg"
)

// SkipShort skips t under -short, which runs only the tests that need no
// database.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL, which -short does not start")
	}
}

// Server is a PostgreSQL server for a test binary.
type Server struct {
	Kind     string // where it came from, for the log
	AdminURL string // a URL on the server whose role may create databases
	stop     func()
}

// Start provides a server, in this order: TEST_DATABASE_URL (its role must be
// able to create databases); a container from testcontainers-go when a Docker
// engine answers; else a throwaway cluster from the local server binaries
// (the launcher of `go run .`). Stop releases it.
func Start(ctx context.Context) (*Server, error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return &Server{Kind: "TEST_DATABASE_URL", AdminURL: u, stop: func() {}}, nil
	}
	if dockerAvailable(ctx) {
		ctr, err := tcpostgres.Run(ctx, "postgres:17-alpine",
			tcpostgres.WithDatabase("tasks"), tcpostgres.WithUsername("tasks"), tcpostgres.WithPassword("tasks"),
			tcpostgres.BasicWaitStrategies())
		if err != nil {
			return nil, fmt.Errorf("start a PostgreSQL container: %w", err)
		}
		u, err := ctr.ConnectionString(ctx, "sslmode=disable")
		if err != nil {
			_ = testcontainers.TerminateContainer(ctr)
			return nil, err
		}
		return &Server{Kind: "testcontainers (postgres:17-alpine)", AdminURL: u,
			stop: func() { _ = testcontainers.TerminateContainer(ctr) }}, nil
	}
	dir, err := os.MkdirTemp("", "tasks-test-pg-")
	if err != nil {
		return nil, err
	}
	pg, err := localpg.Start(ctx, dir, localpg.Options{Ephemeral: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("no TEST_DATABASE_URL, no Docker engine, and the local binaries failed: %w", err)
	}
	return &Server{Kind: "local server binaries (" + dir + ")", AdminURL: pg.URL(), stop: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pg.Stop(ctx)
		os.RemoveAll(dir)
	}}, nil
}

// Stop stops the container or cluster that Start started.
func (s *Server) Stop() { s.stop() }

// dockerAvailable asks testcontainers whether a Docker engine answers, quickly.
func dockerAvailable(ctx context.Context) (ok bool) {
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			return false
		}
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return false
	}
	defer provider.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return provider.Health(ctx) == nil
}

// ClusterDir is a fresh directory for a test's own localpg cluster, removed
// at the end of the test. Unlike t.TempDir's, its parent (the system's
// temporary directory) lets the postgres user through when the tests run as
// root. It skips the test under -short, and where there are no server
// binaries.
func ClusterDir(t testing.TB) string {
	t.Helper()
	SkipShort(t)
	if _, err := localpg.FindBinaries(); errors.Is(err, localpg.ErrNoBinaries) {
		t.Skip("no local PostgreSQL server binaries")
	}
	dir, err := os.MkdirTemp("", "tasks-launcher-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// QueryInt runs a query that returns one integer, on a connection of its own.
func QueryInt(t testing.TB, url, sql string) int {
	t.Helper()
	var n int
	withConn(t, url, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql).Scan(&n)
	})
	return n
}

// Exec runs sql (one or more statements) on a connection of its own.
func Exec(t testing.TB, url, sql string) {
	t.Helper()
	withConn(t, url, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql)
		return err
	})
}

func withConn(t testing.TB, url string, f func(context.Context, *pgx.Conn) error) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := f(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

// StartCluster starts a localpg cluster in dir (from ClusterDir) and stops
// it at the end of the test.
func StartCluster(t testing.TB, dir string, opts localpg.Options) *localpg.Server {
	t.Helper()
	pg, err := localpg.Start(t.Context(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { StopCluster(t, pg) })
	return pg
}

// StopCluster stops pg (a fast shutdown), failing the test when that takes
// longer than 30 seconds.
func StopCluster(t testing.TB, pg *localpg.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}
