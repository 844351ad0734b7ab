package localpg_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tasks-api/internal/localpg"
	"tasks-api/internal/pgtest"
)

func startLocal(t *testing.T, dir string) *localpg.Server {
	t.Helper()
	return pgtest.StartCluster(t, dir, localpg.Options{Ephemeral: true})
}

func TestRestartKeepsData(t *testing.T) {
	dir := pgtest.ClusterDir(t)
	pg := startLocal(t, dir)
	pgtest.Exec(t, pg.URL(), `CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)`)
	if fi, err := os.Stat(filepath.Join(dir, "run", ".s.PGSQL.5432")); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no socket in %s: %v", filepath.Join(dir, "run"), err)
	}
	if want := localpg.SocketURL(localpg.SocketDir(dir), "postgres"); pg.URL() != want {
		t.Fatalf("URL %s, want %s", pg.URL(), want)
	}
	pgtest.StopCluster(t, pg)
	select {
	case <-pg.Exited():
	default:
		t.Fatal("postmaster still running after Stop")
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid left after a clean stop: %v", err)
	}

	pg2 := startLocal(t, dir)
	if n := pgtest.QueryInt(t, pg2.URL(), `SELECT n FROM kept`); n != 42 {
		t.Fatalf("data after restart: %d", n)
	}
	// Only a Unix socket: no TCP listener.
	if got := pgtest.QueryInt(t, pg2.URL(), `SELECT count(*) FROM pg_settings WHERE name = 'listen_addresses' AND setting = ''`); got != 1 {
		t.Fatal("listen_addresses is not empty")
	}
}

// A postmaster killed outright leaves postmaster.pid behind; the next start recovers.
func TestRecoversStalePID(t *testing.T) {
	dir := pgtest.ClusterDir(t)
	pg := pgtest.StartCluster(t, dir, localpg.Options{}) // durable, as `go run .` runs it
	pgtest.Exec(t, pg.URL(), `CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)`)
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	<-pg.Exited()
	pidFile := filepath.Join(dir, "postgres", "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("expected a stale postmaster.pid: %v", err)
	}
	waitNoBackends(t, dir)

	pg2 := startLocal(t, dir)
	if n := pgtest.QueryInt(t, pg2.URL(), `SELECT n FROM kept`); n != 7 {
		t.Fatalf("data after crash recovery: %d", n)
	}
}

// waitNoBackends waits for the backends of a killed postmaster to notice and exit.
func waitNoBackends(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "postgres")).Output()
		if strings.TrimSpace(string(out)) == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A postmaster whose service died without stopping it is stopped and replaced.
func TestStopsOrphan(t *testing.T) {
	dir := pgtest.ClusterDir(t)
	pg := startLocal(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "service.pid"), []byte(strconv.Itoa(deadPID(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	pg2 := startLocal(t, dir)
	select {
	case <-pg.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the orphaned postmaster is still running")
	}
	if n := pgtest.QueryInt(t, pg2.URL(), `SELECT 1`); n != 1 {
		t.Fatal("new cluster does not answer")
	}
}

// A postmaster that belongs to another running service is left alone.
func TestRefusesSecondInstance(t *testing.T) {
	dir := pgtest.ClusterDir(t)
	pg := startLocal(t, dir)
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "service.pid"), []byte(strconv.Itoa(other.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := localpg.Start(t.Context(), dir, localpg.Options{Ephemeral: true})
	if err == nil || !strings.Contains(err.Error(), "another running instance") {
		t.Fatalf("want a refusal, got %v", err)
	}
	if n := pgtest.QueryInt(t, pg.URL(), `SELECT 1`); n != 1 {
		t.Fatal("the first cluster was disturbed")
	}
}

// A cluster made by a major version that is not installed is not started
// with another; the error says what to do.
func TestRefusesClusterOfAnotherVersion(t *testing.T) {
	if _, err := localpg.FindBinaries(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir() // nothing runs as the postgres user
	if err := os.MkdirAll(filepath.Join(dir, "postgres"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "postgres", "PG_VERSION"), []byte("9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := localpg.Start(t.Context(), dir, localpg.Options{Ephemeral: true})
	if err == nil || !strings.Contains(err.Error(), "created by PostgreSQL 9") || !strings.Contains(err.Error(), "move "+dir+" aside") {
		t.Fatalf("want an error naming the cluster's version and directory, got %v", err)
	}
}

func deadPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}
