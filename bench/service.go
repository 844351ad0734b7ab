package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"tasks-api/internal/localpg"
	"tasks-api/internal/testbed"
)

// service is one running tasks-api process.
type service struct {
	name    string
	cmd     *exec.Cmd
	base    string // http://127.0.0.1:PORT
	dataDir string // DATA_DIR: the embedded cluster and its socket live here
	debug   string // DEBUG_ADDR, "" when off
	logPath string
	exited  chan struct{}
	waitErr error
}

// serviceEnvNames are the variables the service reads. The bench sets the
// ones it needs and passes none of the others through from its own
// environment, so a DATABASE_URL exported in the shell cannot redirect the run.
var serviceEnvNames = []string{
	"DATABASE_URL", "DATABASE_URL_UNPOOLED", "PORT", "BETTER_AUTH_SECRET", "JWKS_URL", "JWT_ISSUER",
	"JWT_AUDIENCE", "JWT_LEEWAY", "CORS_ORIGINS", "RATE_LIMIT", "MAX_TASKS_PER_USER", "LOG_LEVEL",
	"LOG_FORMAT", "MIGRATE_ON_START", "DATA_DIR", "DEBUG_ADDR",
}

// newSecret is a BETTER_AUTH_SECRET of 48 characters, which the bench also
// signs its tokens with.
func newSecret() []byte {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// serviceSpec says how to start one instance.
type serviceSpec struct {
	name        string // names its working directory and log file
	bin         string
	secret      []byte
	dataDir     string
	databaseURL string // empty: the embedded cluster under dataDir
	debug       bool   // listen for pprof and expvar on a free port
}

// startService starts an instance in a fresh working directory (so no .env
// applies) and waits until /readyz answers 200.
func startService(ctx context.Context, w *workspace, spec serviceSpec) (*service, error) {
	workDir := filepath.Join(w.dir, spec.name)
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"PORT":               strconv.Itoa(port),
		"DATA_DIR":           spec.dataDir,
		"BETTER_AUTH_SECRET": string(spec.secret),
		// The default per-user limit (50/s) would refuse most of the load.
		"RATE_LIMIT": "0",
	}
	if spec.databaseURL != "" {
		env["DATABASE_URL"] = spec.databaseURL
		// The instance that runs the database has migrated it already; and the
		// service's migration connection would send pool_max_conns to the
		// server as a setting, which the server refuses.
		env["MIGRATE_ON_START"] = "false"
	}
	s := &service{
		name:    spec.name,
		base:    "http://127.0.0.1:" + strconv.Itoa(port),
		dataDir: spec.dataDir,
		logPath: filepath.Join(w.dir, spec.name+".log"),
		exited:  make(chan struct{}),
	}
	if spec.debug {
		dport, err := testbed.FreePort()
		if err != nil {
			return nil, err
		}
		s.debug = "127.0.0.1:" + strconv.Itoa(dport)
		env["DEBUG_ADDR"] = s.debug
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(spec.bin)
	s.cmd.Dir = workDir
	s.cmd.Env = serviceEnv(env)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = dieWithParent()
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", spec.bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, 2*time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func serviceEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(serviceEnvNames, name) {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// waitReady polls /readyz: the first start creates a cluster (initdb), which
// takes a few seconds.
func (s *service) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		res, err := client.Get(s.base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("the service exited while starting (%v); the end of %s:\n%s", s.waitErr, s.logPath, s.logTail(30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service was not ready within %s; the end of %s:\n%s", limit, s.logPath, s.logTail(30))
		}
	}
}

// stop asks for a graceful shutdown (SIGINT, as Ctrl-C would), which also
// stops the embedded PostgreSQL; it kills the process if that takes too long.
func (s *service) stop() {
	testbed.Stop(s.cmd.Process, s.exited, os.Interrupt, 45*time.Second)
}

func (s *service) running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

func (s *service) pid() int { return s.cmd.Process.Pid }

// socketDir is where the embedded cluster listens.
func (s *service) socketDir() string { return localpg.SocketDir(s.dataDir) }

// databaseURL connects to the embedded cluster as the service does.
func (s *service) databaseURL(extra url.Values) string {
	u, err := url.Parse(localpg.SocketURL(s.socketDir(), "postgres"))
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for k, v := range extra {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *service) logTail(lines int) string { return testbed.Tail(s.logPath, lines) }

// memoryKB reads a Vm* line of /proc/PID/status: VmHWM is the peak resident
// set, VmRSS the current one.
func memoryKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// debugVars is the part of /debug/vars the soak reads.
type debugVars struct {
	TasksAPI struct {
		Goroutines int `json:"goroutines"`
		DBPool     struct {
			TotalConns    int `json:"total_conns"`
			AcquiredConns int `json:"acquired_conns"`
			MaxConns      int `json:"max_conns"`
		} `json:"db_pool"`
	} `json:"tasks_api"`
}

func (s *service) debugVars(ctx context.Context) (debugVars, error) {
	var v debugVars
	if s.debug == "" {
		return v, errors.New("the service runs without DEBUG_ADDR")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.debug+"/debug/vars", nil)
	if err != nil {
		return v, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, fmt.Errorf("debug vars: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return v, fmt.Errorf("debug vars: status %d", res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("debug vars: %w", err)
	}
	return v, nil
}
