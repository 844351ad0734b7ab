// Package localpg runs a private PostgreSQL cluster from the server binaries
// installed on this machine: the default database of `go run .`, and the last
// resort of the tests. The cluster lives in one directory and listens only on
// a Unix socket inside it; a run that was killed is cleaned up by the next
// start (a stale postmaster.pid, or an orphaned postmaster), and on Linux the
// server stops by itself when the process that started it dies.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Server is a running cluster, started by Start.
type Server struct {
	dir     string // holds postgres/ (the cluster), run/ (the socket), postgres.log
	dataDir string
	sockDir string
	tmpSock bool // sockDir is a short directory under /tmp (the real path was too long)
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the postmaster exits
	log     *slog.Logger
}

// Options say how Start runs the cluster.
type Options struct {
	// Ephemeral trades durability for speed (fsync off); for test clusters only.
	Ephemeral bool
	Log       *slog.Logger // nil: no log
}

const port = 5432 // only names the socket file; no TCP port is opened

// Start creates the cluster under dir on first use, starts it and waits until
// it accepts connections. dir holds postgres/ (the cluster), run/ (the
// socket), postgres.log, and service.pid (the process that started it). When
// this process runs as root, the cluster runs as the postgres user, because
// PostgreSQL refuses to run as root.
func Start(ctx context.Context, dir string, opts Options) (*Server, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	owner, err := postgresOwner()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if owner != nil {
		// Root runs the cluster as the postgres user, who must be able to pass through dir.
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
	}
	p := &Server{
		dir:     dir,
		dataDir: filepath.Join(dir, "postgres"),
		sockDir: SocketDir(dir),
		exited:  make(chan struct{}),
		log:     log,
	}

	wantMajor := ""
	if v, err := os.ReadFile(filepath.Join(p.dataDir, "PG_VERSION")); err == nil {
		wantMajor = strings.TrimSpace(string(v))
	}
	bin, err := findBinaries(wantMajor, p.dir)
	if err != nil {
		return nil, err
	}
	if wantMajor == "" {
		log.Info("creating a local PostgreSQL cluster", "dir", p.dataDir, "bin", bin)
		if err := p.initdb(ctx, bin, owner); err != nil {
			return nil, err
		}
	}
	if err := p.reclaim(ctx); err != nil {
		return nil, err
	}
	if err := p.prepareSocketDir(owner); err != nil {
		return nil, err
	}
	if err := p.startAndWait(ctx, bin, owner, opts.Ephemeral); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(stopCtx)
		return nil, err
	}
	log.Info("local PostgreSQL is ready", "dir", p.dataDir, "socket", p.sockDir)
	return p, nil
}

// URL connects as the superuser to the default database over the socket.
func (p *Server) URL() string { return p.DatabaseURL("postgres") }

// DatabaseURL connects as the superuser to the named database over the socket.
func (p *Server) DatabaseURL(db string) string { return SocketURL(p.sockDir, db) }

// SocketDir is where a cluster started under dir listens, unless that path is
// too long for a Unix socket (then Start picks a short directory under /tmp).
// With SocketURL, it lets another process reach the cluster of a running
// service.
func SocketDir(dir string) string { return filepath.Join(dir, "run") }

// SocketURL connects as the superuser to database db of the cluster that
// listens in socketDir.
func SocketURL(socketDir, db string) string {
	return fmt.Sprintf("postgres:///%s?host=%s&port=%d&user=postgres&sslmode=disable",
		url.PathEscape(db), url.QueryEscape(socketDir), port)
}

// Exited is closed when the postmaster exits, whoever stopped it.
func (p *Server) Exited() <-chan struct{} { return p.exited }

// Kill ends the postmaster with SIGKILL, as a crash would, and returns at
// once: its backends live on for a moment, and the next Start recovers the
// cluster. For fault tests.
func (p *Server) Kill() error { return p.cmd.Process.Kill() }

// ShutdownImmediate asks for an immediate shutdown (no checkpoint; crash
// recovery at the next Start) and returns at once; Exited says when it is
// done. For fault tests.
func (p *Server) ShutdownImmediate() error { return p.cmd.Process.Signal(sigImmediateShutdown) }

// Stop asks for a fast shutdown (clients are disconnected, a checkpoint is
// written) and waits for it; when ctx ends first it escalates to an immediate
// shutdown and then to SIGKILL.
func (p *Server) Stop(ctx context.Context) error {
	defer p.removeTempSocketDir()
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(sigFastShutdown)
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
	}
	p.log.Warn("PostgreSQL did not stop in time; forcing an immediate shutdown")
	_ = p.cmd.Process.Signal(sigImmediateShutdown)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	return fmt.Errorf("stop PostgreSQL: %w", ctx.Err())
}

// RunAsServerUser prepares cmd to run as Start runs the server: in a process
// group of its own, stopped (on Linux) when this process dies, and, when this
// process runs as root, as the postgres user, who is then given paths and
// everything under them. For pgbouncer, which refuses to run as root too.
func RunAsServerUser(cmd *exec.Cmd, paths ...string) error {
	owner, err := postgresOwner()
	if err != nil {
		return err
	}
	for _, path := range paths {
		if err := owner.chown(path); err != nil {
			return err
		}
	}
	cmd.SysProcAttr = postgresProcAttr(owner)
	return nil
}

func (p *Server) initdb(ctx context.Context, bin string, owner *osUser) error {
	if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
		return err
	}
	if err := owner.chown(p.dataDir); err != nil {
		return err
	}
	// Prefer a UTF-8 locale so lower() and ILIKE fold non-ASCII letters; not every
	// system has C.UTF-8 (macOS has en_US.UTF-8), and C always exists.
	var lastErr error
	for _, locale := range []string{"C.UTF-8", "en_US.UTF-8", "C"} {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
			"-D", p.dataDir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale="+locale)
		cmd.SysProcAttr = postgresProcAttr(owner)
		cmd.Dir = p.dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("initdb --locale=%s: %w\n%s", locale, err, tail(out, 2000))
		if !bytes.Contains(out, []byte("locale")) {
			break // not a locale problem: another locale will not help
		}
	}
	_ = os.RemoveAll(p.dataDir)
	hint := ""
	if owner != nil {
		hint = fmt.Sprintf("\n(running as root, the cluster belongs to the postgres user, who must be able to reach %s)", p.dir)
	}
	return fmt.Errorf("create the local PostgreSQL cluster: %w%s", lastErr, hint)
}

// reclaim makes sure no other postmaster serves the cluster, and clears what a
// killed run left behind: a stale postmaster.pid, or an orphaned postmaster
// whose service died without stopping it.
func (p *Server) reclaim(ctx context.Context) error {
	pidFile := filepath.Join(p.dataDir, "postmaster.pid")
	ownerFile := filepath.Join(p.dir, "service.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", pidFile, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if pid > 0 && IsPostgresProcess(pid) {
		if svc := readPID(ownerFile); svc > 0 && svc != os.Getpid() && processAlive(svc) {
			return fmt.Errorf("PostgreSQL (pid %d) is already serving %s for another running instance (pid %d); stop that one first", pid, p.dataDir, svc)
		}
		p.log.Warn("stopping an orphaned PostgreSQL left by an earlier run", "pid", pid)
		if err := signalProcess(pid, sigFastShutdown); err != nil {
			return fmt.Errorf("stop orphaned PostgreSQL (pid %d): %w", pid, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for IsPostgresProcess(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("orphaned PostgreSQL (pid %d) on %s did not stop within 30s", pid, p.dataDir)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	// The pid is gone, or now belongs to an unrelated process: the file is stale.
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", pidFile, err)
	}
	p.log.Info("recovered from an unclean stop", "stale_pid", pid)
	return nil
}

func (p *Server) prepareSocketDir(owner *osUser) error {
	// A Unix socket path must fit in 108 bytes; deep checkouts fall back to /tmp.
	if len(p.sockDir)+len("/.s.PGSQL.5432.lock") > 100 {
		d, err := os.MkdirTemp("", "tasks-pg-")
		if err != nil {
			return err
		}
		p.sockDir, p.tmpSock = d, true
	} else {
		// No postmaster runs on this cluster now, so any socket or lock file here is stale.
		_ = os.RemoveAll(p.sockDir)
		if err := os.Mkdir(p.sockDir, 0o700); err != nil {
			return err
		}
	}
	return owner.chown(p.sockDir)
}

func (p *Server) start(bin string, owner *osUser, ephemeral bool) error {
	logPath := filepath.Join(p.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := []string{
		"-D", p.dataDir,
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories=" + p.sockDir,
		"-c", "unix_socket_permissions=0700",
		"-c", fmt.Sprintf("port=%d", port),
	}
	if ephemeral {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off",
			"-c", "full_page_writes=off", "-c", "max_connections=300")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = postgresProcAttr(owner)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	p.cmd = cmd
	_ = os.WriteFile(filepath.Join(p.dir, "service.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	exited := p.exited
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.log.Info("local PostgreSQL exited", "status", err)
		close(exited)
	}()
	return nil
}

// startAndWait starts the server and waits until it accepts connections. The
// backends of a postmaster that was killed (kill -9) can hold its shared
// memory for a moment after it died; a start in that moment refuses to run
// ("pre-existing shared memory block is still in use"), so it is tried again
// for a while.
func (p *Server) startAndWait(ctx context.Context, bin string, owner *osUser, ephemeral bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := p.start(bin, owner, ephemeral); err != nil {
			return err
		}
		err := p.waitReady(ctx, 60*time.Second)
		if err == nil || !errors.Is(err, errSharedMemoryInUse) || time.Now().After(deadline) {
			return err
		}
		p.log.Info("the killed server's backends still hold its shared memory; starting again shortly")
		p.exited = make(chan struct{})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var errSharedMemoryInUse = errors.New("the shared memory of a killed server is still in use")

func (p *Server) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		attempt, stop := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(attempt, p.URL())
		stop()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-p.exited:
			out, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
			last := tail(out, 2000)
			if i := strings.LastIndex(last, " LOG:  starting PostgreSQL"); i >= 0 &&
				strings.Contains(last[i:], "pre-existing shared memory block") {
				return fmt.Errorf("%w; the end of %s:\n%s", errSharedMemoryInUse, filepath.Join(p.dir, "postgres.log"), last)
			}
			return fmt.Errorf("PostgreSQL exited while starting; the end of %s:\n%s",
				filepath.Join(p.dir, "postgres.log"), last)
		case <-ctx.Done():
			return fmt.Errorf("PostgreSQL did not accept connections within %s: %w", limit, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Server) removeTempSocketDir() {
	if p.tmpSock {
		_ = os.RemoveAll(p.sockDir)
	}
}

// FindBinaries returns a directory holding initdb and postgres, looking where
// each platform's packages install them, newest version first; the error is
// ErrNoBinaries when there are none.
func FindBinaries() (string, error) { return findBinaries("", "") }

// findBinaries is FindBinaries for the cluster under clusterDir when
// wantMajor is set: then only that major version will do.
func findBinaries(wantMajor, clusterDir string) (string, error) {
	var candidates []string
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real // a symlink in PATH: use the real installation's directory
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	for _, pattern := range postgresBinPatterns {
		matches, _ := filepath.Glob(pattern)
		slices.SortFunc(matches, func(a, b string) int { return versionOf(b) - versionOf(a) })
		candidates = append(candidates, matches...)
	}

	var found []string
	for _, dir := range slices.Compact(candidates) {
		if !isExecutable(filepath.Join(dir, "postgres")) || !isExecutable(filepath.Join(dir, "initdb")) {
			continue
		}
		major := postgresMajor(dir)
		if wantMajor == "" || major == wantMajor {
			return dir, nil
		}
		found = append(found, fmt.Sprintf("%s (PostgreSQL %s)", dir, major))
	}
	if len(found) > 0 {
		return "", fmt.Errorf("the local cluster was created by PostgreSQL %s, but only these binaries were found: %s;\n"+
			"install PostgreSQL %s, or move %s aside to start a new cluster", wantMajor, strings.Join(found, ", "), wantMajor, clusterDir)
	}
	return "", ErrNoBinaries
}

// postgresBinPatterns are where packages install the server binaries, in
// order of preference; versioned directories are tried newest first.
var postgresBinPatterns = []string{
	"/usr/lib/postgresql/*/bin",                          // Debian, Ubuntu
	"/usr/pgsql-*/bin",                                   // RHEL, Fedora (PGDG)
	"/opt/homebrew/opt/postgresql@*/bin",                 // Homebrew, Apple silicon
	"/usr/local/opt/postgresql@*/bin",                    // Homebrew, Intel
	"/Applications/Postgres.app/Contents/Versions/*/bin", // Postgres.app
	"/opt/homebrew/opt/postgresql/bin",
	"/usr/local/opt/postgresql/bin",
	"/opt/homebrew/bin",
	"/usr/local/pgsql/bin",
	"/usr/local/bin",
}

// ErrNoBinaries says that no server binaries were found, and what to do.
var ErrNoBinaries = errors.New(`no PostgreSQL server binaries (initdb, postgres) were found in PATH, ` +
	"`pg_config --bindir`, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or Homebrew's locations.\n" +
	"Do one of these:\n" +
	"  - install PostgreSQL (Debian/Ubuntu: sudo apt install postgresql; macOS: brew install postgresql@17)\n" +
	"  - set DATABASE_URL to a PostgreSQL database you already have\n" +
	"  - run `docker compose up -d db` and set DATABASE_URL=postgres://tasks:tasks@localhost:5432/tasks?sslmode=disable")

var versionInPath = regexp.MustCompile(`(\d+)(?:\.\d+)?`)

// versionOf extracts the major version from a path like /usr/lib/postgresql/15/bin.
func versionOf(path string) int {
	m := versionInPath.FindAllStringSubmatch(path, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// postgresMajor asks the binary: "postgres (PostgreSQL) 15.18 ..." gives "15".
func postgresMajor(bin string) string {
	out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return "?"
	}
	fields := strings.Fields(string(out))
	for _, f := range fields {
		if f != "" && f[0] >= '0' && f[0] <= '9' {
			return strings.SplitN(f, ".", 2)[0]
		}
	}
	return "?"
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
