package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgTempDir is a fresh directory the postgres user can reach when the tests
// run as root (t.TempDir's parent is private to root).
func pgTempDir(t *testing.T) string {
	t.Helper()
	if _, err := findPostgresBinaries(""); errors.Is(err, errNoPostgresBinaries) {
		t.Skip("no local PostgreSQL server binaries; the launcher cannot be tested here")
	}
	dir, err := os.MkdirTemp("", "tasks-launcher-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startLocal(t *testing.T, dir string) *localPostgres {
	t.Helper()
	return startLocalWith(t, dir, localPGOptions{Ephemeral: true})
}

func startLocalWith(t *testing.T, dir string, opts localPGOptions) *localPostgres {
	t.Helper()
	pg, err := startLocalPostgres(t.Context(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopLocal(t, pg) })
	return pg
}

func stopLocal(t *testing.T, pg *localPostgres) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func queryInt(t *testing.T, url, sql string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func execSQL(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

func TestLocalPostgresRestartKeepsData(t *testing.T) {
	dir := pgTempDir(t)
	pg := startLocal(t, dir)
	execSQL(t, pg.URL(), `CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)`)
	if fi, err := os.Stat(pg.sockDir); err != nil || !fi.IsDir() || pg.sockDir != filepath.Join(dir, "run") {
		t.Fatalf("socket dir %s: %v", pg.sockDir, err)
	}
	stopLocal(t, pg)
	select {
	case <-pg.Exited():
	default:
		t.Fatal("postmaster still running after Stop")
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid left after a clean stop: %v", err)
	}

	pg2 := startLocal(t, dir)
	if n := queryInt(t, pg2.URL(), `SELECT n FROM kept`); n != 42 {
		t.Fatalf("data after restart: %d", n)
	}
	// Only a Unix socket: no TCP listener.
	if got := queryInt(t, pg2.URL(), `SELECT count(*) FROM pg_settings WHERE name = 'listen_addresses' AND setting = ''`); got != 1 {
		t.Fatal("listen_addresses is not empty")
	}
}

// A postmaster killed outright leaves postmaster.pid behind; the next start recovers.
func TestLocalPostgresRecoversStalePID(t *testing.T) {
	dir := pgTempDir(t)
	pg := startLocalWith(t, dir, localPGOptions{}) // durable, as `go run .` runs it
	execSQL(t, pg.URL(), `CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)`)
	if err := pg.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-pg.Exited()
	pidFile := filepath.Join(dir, "postgres", "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("expected a stale postmaster.pid: %v", err)
	}
	waitNoBackends(t, dir)

	pg2 := startLocal(t, dir)
	if n := queryInt(t, pg2.URL(), `SELECT n FROM kept`); n != 7 {
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
func TestLocalPostgresStopsOrphan(t *testing.T) {
	dir := pgTempDir(t)
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
	if n := queryInt(t, pg2.URL(), `SELECT 1`); n != 1 {
		t.Fatal("new cluster does not answer")
	}
}

// A postmaster that belongs to another running service is left alone.
func TestLocalPostgresRefusesSecondInstance(t *testing.T) {
	dir := pgTempDir(t)
	pg := startLocal(t, dir)
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "service.pid"), []byte(strconv.Itoa(other.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := startLocalPostgres(t.Context(), dir, localPGOptions{Ephemeral: true})
	if err == nil || !strings.Contains(err.Error(), "another running instance") {
		t.Fatalf("want a refusal, got %v", err)
	}
	if n := queryInt(t, pg.URL(), `SELECT 1`); n != 1 {
		t.Fatal("the first cluster was disturbed")
	}
}

func TestFindPostgresBinariesForAnotherVersion(t *testing.T) {
	_ = pgTempDir(t) // skips without binaries
	_, err := findPostgresBinaries("9")
	if err == nil || !strings.Contains(err.Error(), "created by PostgreSQL 9") {
		t.Fatalf("want an error naming the cluster's version, got %v", err)
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

// ---- the service as `go run .` runs it ---------------------------------------

// runningService is run() in a goroutine, as main calls it.
type runningService struct {
	baseURL string
	stdout  *syncBuffer
	stderr  *syncBuffer
	stop    context.CancelFunc
	done    chan error
}

func startRun(t *testing.T, env map[string]string) *runningService {
	t.Helper()
	env["PORT"] = "0"
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &runningService{stdout: &syncBuffer{}, stderr: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() {
		err := run(ctx, nil, envMap(env), io.MultiWriter(pw, s.stdout), s.stderr)
		pw.Close()
		s.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	listening := regexp.MustCompile(`listening on (http://localhost:\d+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case s.baseURL = <-found:
	case err := <-s.done:
		t.Fatalf("run exited: %v\n%s", err, s.stderr)
	case <-time.After(90 * time.Second):
		t.Fatalf("service did not start\n%s", s.stderr)
	}
	return s
}

func (s *runningService) shutdown(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return after cancel")
		return nil
	}
}

// `go run .` with nothing configured: an embedded cluster, a dev secret, a
// curl line that works as printed, and a clean stop that leaves no server.
func TestRunEmbeddedDevMode(t *testing.T) {
	dir := pgTempDir(t)
	s := startRun(t, map[string]string{"DATA_DIR": dir})
	curlLine := regexp.MustCompile(`curl -H 'Authorization: Bearer ([^']+)' (http://\S+/api/me/tasks)\n`)
	var m []string
	for deadline := time.Now().Add(5 * time.Second); m == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		m = curlLine.FindStringSubmatch(s.stdout.String())
	}
	if m == nil {
		t.Fatalf("no curl line in:\n%s", s.stdout)
	}
	req, _ := http.NewRequest("GET", m[2], nil)
	req.Header.Set("Authorization", "Bearer "+m[1])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("the printed curl line got %d", res.StatusCode)
	}
	fi, err := os.Stat(filepath.Join(dir, "dev-secret"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev secret: %v %v", fi, err)
	}
	secret, _ := os.ReadFile(filepath.Join(dir, "dev-secret"))
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(s.baseURL + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, res, err)
		}
		res.Body.Close()
	}
	if err := s.shutdown(t); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("PostgreSQL still running after the service stopped: %v", err)
	}
	if strings.Contains(s.stderr.String(), strings.TrimSpace(string(secret))) || strings.Contains(s.stderr.String(), m[1]) {
		t.Fatal("a secret or token reached the log")
	}

	// The next start reuses the cluster and the secret.
	s2 := startRun(t, map[string]string{"DATA_DIR": dir})
	if strings.Contains(s2.stderr.String(), "creating a local PostgreSQL cluster") {
		t.Fatal("the second start created a new cluster")
	}
	secret2, _ := os.ReadFile(filepath.Join(dir, "dev-secret"))
	if string(secret) != string(secret2) {
		t.Fatal("the dev secret changed between runs")
	}
}

// Shutdown stops accepting, lets the request in flight finish, then returns.
func TestShutdownLetsInFlightRequestFinish(t *testing.T) {
	dbURL := newDatabase(t, false)
	s := startRun(t, map[string]string{"DATABASE_URL": dbURL, "BETTER_AUTH_SECRET": testSecret, "SHUTDOWN_DRAIN": "0s"})
	token, _ := mintToken([]byte(testSecret), "shutdown-user", "", "", time.Hour, time.Now())

	body := `{"title":"finished during shutdown"}`
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", s.baseURL+"/api/me/tasks", pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	type result struct {
		status int
		err    error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		res.Body.Close()
		got <- result{status: res.StatusCode}
	}()
	if _, err := pw.Write([]byte(body[:10])); err != nil { // the request is now in flight
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s.stop() // SIGINT
	time.Sleep(300 * time.Millisecond)
	if _, err := http.Get(s.baseURL + "/healthz"); err == nil {
		t.Error("new connections are still accepted during shutdown")
	}
	if _, err := pw.Write([]byte(body[10:])); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-got
	if r.err != nil || r.status != http.StatusCreated {
		t.Fatalf("in-flight request: status %d, err %v", r.status, r.err)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after the in-flight request finished")
	}
	if n := queryInt(t, dbURL, `SELECT count(*) FROM tasks WHERE user_id = 'shutdown-user'`); n != 1 {
		t.Fatalf("task stored %d times", n)
	}
}

func TestTokenCommand(t *testing.T) {
	var out, errOut syncBuffer
	if err := run(t.Context(), []string{"token", "--sub", "alice", "--ttl", "2h"},
		envMap(map[string]string{"BETTER_AUTH_SECRET": testSecret, "DATABASE_URL": "postgres://x/y"}), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	v := newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute})
	sub, err := v.Verify(t.Context(), strings.TrimSpace(out.String()))
	if err != nil || sub != "alice" {
		t.Fatalf("token: sub %q err %v", sub, err)
	}
	err = run(t.Context(), []string{"token"}, envMap(map[string]string{"BETTER_AUTH_SECRET": testSecret}), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--sub") {
		t.Fatalf("want a usage error, got %v", err)
	}
	err = run(t.Context(), []string{"token", "--sub", "a"}, envMap(map[string]string{"DATABASE_URL": "postgres://x/y"}), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_SECRET") {
		t.Fatalf("want a missing-secret error, got %v", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	dbURL := newDatabase(t, false)
	env := envMap(map[string]string{"DATABASE_URL": dbURL})
	var out syncBuffer
	if err := run(t.Context(), []string{"migrate", "status"}, env, &out, &syncBuffer{}); err != nil {
		t.Fatal(err)
	}
	versions := len(mustMigrator(t).migrations)
	if c := strings.Count(out.String(), "pending"); c != versions {
		t.Fatalf("status before migrating:\n%s", out.String())
	}
	out = syncBuffer{}
	if err := run(t.Context(), []string{"migrate"}, env, &out, &syncBuffer{}); err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(out.String(), "applied"); c != versions || strings.Contains(out.String(), "pending") {
		t.Fatalf("status after migrating:\n%s", out.String())
	}
	if err := run(t.Context(), []string{"migrate", "sideways"}, env, &out, &syncBuffer{}); err == nil {
		t.Fatal("want a usage error")
	}
}

// With no server binaries anywhere and no DATABASE_URL, the service exits
// and says what to do.
func TestRunWithoutBinariesSaysWhatToDo(t *testing.T) {
	saved := postgresBinPatterns
	postgresBinPatterns = nil
	t.Cleanup(func() { postgresBinPatterns = saved })
	t.Setenv("PATH", t.TempDir())

	err := run(t.Context(), nil, envMap(map[string]string{"DATA_DIR": t.TempDir(), "PORT": "0"}), &syncBuffer{}, &syncBuffer{})
	if err == nil {
		t.Fatal("run started without a database")
	}
	for _, want := range []string{"no PostgreSQL server binaries", "install PostgreSQL", "DATABASE_URL", "docker compose up -d db"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q:\n%v", want, err)
		}
	}
}
