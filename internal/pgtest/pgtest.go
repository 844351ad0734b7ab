// Package pgtest provides the PostgreSQL the tests run against: directories
// for the tests' own localpg clusters, and a connection for a quick query.
//
// Nothing here starts by itself: a test asks, and under -short every test
// that would start PostgreSQL is skipped.
package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
