//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tasks-api/internal/localpg"
	"tasks-api/internal/pgtest"
	"tasks-api/internal/testbed"
)

// The built service, with its embedded PostgreSQL, killed with SIGKILL under
// a write load and started again on the same DATA_DIR, twice: once alone
// (its PostgreSQL must stop by itself, on the parent-death signal), once
// together with its PostgreSQL (the next start must recover the cluster from
// the stale postmaster.pid). Clients retry what is safe to retry. In the
// end every acknowledged write is there exactly as acknowledged, the quota
// counters match the rows, every recorded Idempotency-Key has its task, and
// a repeat of every acknowledged keyed create is a replay of the same task.
func TestServiceCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test")
	}
	dir := pgtest.ClusterDir(t)
	bin := buildService(t)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DATA_DIR=" + dir, "BETTER_AUTH_SECRET=" + testSecret, "PORT=" + strconv.Itoa(port),
		"RATE_LIMIT=0", "LOG_FORMAT=json",
	}
	svc := startServiceProcess(t, bin, env)
	load := startWriteLoad(t, svc.baseURL, 8)

	crashes := []struct {
		name         string
		killPostgres bool
	}{
		{"service killed", false},
		{"service and its PostgreSQL killed", true},
	}
	for _, crash := range crashes {
		load.waitAcked(t, 300, 30*time.Second)
		postmaster := postmasterPID(t, dir)
		killed := time.Now()
		svc.kill(t)
		if crash.killPostgres {
			_ = syscall.Kill(postmaster, syscall.SIGKILL)
		}
		// No PostgreSQL outlives its service: on Linux the kernel tells it to
		// stop (the parent-death signal); elsewhere the next start stops it.
		var orphan time.Duration
		if runtime.GOOS == "linux" {
			orphan = waitUntil(t, 30*time.Second, "the killed service's PostgreSQL to exit", func() bool {
				return !localpg.IsPostgresProcess(postmaster)
			})
		}
		_, staleErr := os.Stat(filepath.Join(dir, "postgres", "postmaster.pid"))

		svc = startServiceProcess(t, bin, env)
		listening := time.Since(killed)
		if localpg.IsPostgresProcess(postmaster) {
			t.Errorf("%s: the killed service's PostgreSQL (pid %d) is still running", crash.name, postmaster)
		}
		load.waitAcked(t, 300, 30*time.Second)
		t.Logf("%s: its PostgreSQL was gone after %s (postmaster.pid left behind: %t); the new instance listened %s after the kill",
			crash.name, orphan.Round(time.Millisecond), staleErr == nil, listening.Round(time.Millisecond))
		if crash.killPostgres && !strings.Contains(svc.stderr.String(), "recovered from an unclean stop") {
			t.Errorf("%s: the launcher did not report the stale postmaster.pid:\n%s", crash.name, svc.stderr)
		}
	}
	load.finish()

	dbURL := localpg.SocketURL(localpg.SocketDir(dir), "postgres")
	tally := load.verify(t, dbURL)
	replayed := verifyKeyedCreates(t, load, dbURL)
	if t.Failed() {
		t.Logf("the last instance's log:\n%s", svc.stderr)
	}
	t.Logf("verified: %d acknowledged creates, %d updates, %d deletes; %d tasks exactly as acknowledged, %d deletes absent, "+
		"%d unacknowledged writes resolved whole, %d unacknowledged creates that happened; %d keyed creates replayed as acknowledged",
		tally.creates, tally.updates, tally.deletes, tally.present, tally.deletedAbsent, tally.unknownWrites,
		tally.unackedCreatesStored, replayed)
}

// verifyKeyedCreates checks that every Idempotency-Key recorded for a create
// has its task (unless the task was deleted since), and that repeating each
// keyed create is a replay: an acknowledged one gives back the acknowledged
// body; one that never got an answer runs at most once.
func verifyKeyedCreates(t *testing.T, load *writeLoad, dbURL string) (replayed int) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, w := range load.workers {
		rows, err := conn.Query(t.Context(), `SELECT key, body FROM idempotency_keys WHERE user_id = $1 AND status = 201`, w.user)
		if err != nil {
			t.Fatal(err)
		}
		recorded := map[string]int64{}
		for rows.Next() {
			var key string
			var body []byte
			var task taskJSON
			if err := rows.Scan(&key, &body); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(body, &task); err != nil {
				t.Fatalf("recorded body of key %s: %v", key, err)
			}
			recorded[key] = task.ID
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for key, id := range recorded {
			var exists bool
			if err := conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM tasks WHERE id = $1 AND user_id = $2)`, id, w.user).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			_, unknown := w.unknown[id]
			if !exists && !w.deleted[id] && !unknown {
				t.Errorf("user %s: key %s is recorded for task %d, which was never deleted and is not there", w.user, key, id)
			}
		}
		for _, k := range w.keyed {
			if k.ack != nil {
				if _, ok := recorded[k.key]; !ok {
					t.Errorf("user %s: the acknowledged create with key %s has no record", w.user, k.key)
				}
			}
			rec, h, b := w.request("POST", "/api/me/tasks", k.body, k.key)
			switch {
			case rec.status != http.StatusCreated:
				t.Errorf("user %s: repeat of key %s: %s %s", w.user, k.key, rec, b)
			case k.ack != nil && (h.Get("Idempotent-Replayed") != "true" || string(b) != string(k.ack)):
				t.Errorf("user %s: repeat of key %s is not a replay of\n%s\nbut (replayed %q)\n%s", w.user, k.key, k.ack, h.Get("Idempotent-Replayed"), b)
			default:
				replayed++
			}
			var n int
			if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM tasks WHERE user_id = $1 AND title = $2`, w.user, k.title).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 1 {
				t.Errorf("user %s: the create with key %s ran %d times", w.user, k.key, n)
			}
		}
	}
	return replayed
}

// postmasterPID is the pid of the cluster's running postmaster: the first
// line of its postmaster.pid.
func postmasterPID(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// buildService builds the service's binary into a temporary directory.
func buildService(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bin, err := testbed.BuildService(ctx, t.TempDir())
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("no go tool in PATH to build the service with")
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// serviceProcess is the built service running as a process of its own.
type serviceProcess struct {
	cmd     *exec.Cmd
	baseURL string
	stderr  *syncBuffer
	exited  chan struct{}
}

// startServiceProcess starts bin with exactly env, in an empty directory
// (so no .env is read), and waits until it listens.
func startServiceProcess(t *testing.T, bin string, env []string) *serviceProcess {
	t.Helper()
	s := &serviceProcess{stderr: &syncBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin)
	s.cmd.Env = env
	s.cmd.Dir = t.TempDir()
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	go func() {
		listening := regexp.MustCompile(`listening on (http://localhost:\d+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case s.baseURL = <-found:
	case <-s.exited:
		t.Fatalf("the service exited while starting: %v\n%s", s.cmd.ProcessState, s.stderr)
	case <-time.After(90 * time.Second):
		t.Fatalf("the service did not start\n%s", s.stderr)
	}
	return s
}

// kill is kill -9: no shutdown of any kind.
func (s *serviceProcess) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	<-s.exited
}

// stop asks for a graceful shutdown, which stops the embedded PostgreSQL.
func (s *serviceProcess) stop(t *testing.T) {
	if !testbed.Stop(s.cmd.Process, s.exited, syscall.SIGTERM, 60*time.Second) {
		t.Errorf("the service did not stop on SIGTERM; killed it")
	}
}
