package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"tasks-api/internal/localpg"
	"tasks-api/internal/testbed"
)

// PgBouncer is a pgbouncer process in transaction pooling mode in front of a
// server, as Neon's -pooler endpoint is.
//
// A service behind it must send every statement unnamed (pgx's
// QueryExecModeCacheDescribe): Debian 12's pgbouncer 1.18 does not track
// protocol-level prepared statements (1.21 does, with
// max_prepared_statements), so pgx's default named statements would be
// missing, or already exist, on the server connection a later transaction
// gets: about half of concurrent requests fail that way ("prepared statement
// stmtcache_... already exists").
type PgBouncer struct {
	Addr     string // 127.0.0.1:port
	cmd      *exec.Cmd
	exited   chan struct{}
	dir      string // its configuration and log
	stopping atomic.Bool
}

func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer", "/opt/homebrew/bin/pgbouncer"} {
		if p, err := exec.LookPath(p); err == nil { // an absolute path: only checks that it is executable
			return p, nil
		}
	}
	return "", errors.New("TEST_PGBOUNCER is set but there is no pgbouncer (Debian: apt-get install pgbouncer)")
}

// StartPgBouncer starts pgbouncer on a free port, forwarding every database
// name to the server that serverURL points at.
func StartPgBouncer(ctx context.Context, serverURL string) (*PgBouncer, error) {
	bin, err := findPgBouncer()
	if err != nil {
		return nil, err
	}
	server, err := pgconn.ParseConfig(serverURL)
	if err != nil {
		return nil, err
	}
	upstream := []string{"host=" + server.Host, "port=" + strconv.Itoa(int(server.Port)), "user=" + server.User}
	if server.Password != "" {
		upstream = append(upstream, "password="+server.Password)
	}
	for _, kv := range upstream {
		if strings.ContainsAny(kv, " '\"\\\n") {
			return nil, fmt.Errorf("pgbouncer: cannot pass %q in its connection string", strings.SplitN(kv, "=", 2)[0])
		}
	}
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tasks-test-pgbouncer-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*PgBouncer, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	b := &PgBouncer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{}), dir: dir}
	// auth_type=any: clients are not authenticated and every server
	// connection logs in as the user named in [databases]. Idle server
	// connections close soon, so the many short-lived test databases do not
	// pile up connections on the server. After a failed server login
	// pgbouncer fails every client for server_login_retry (15s by default)
	// before it tries the server again; 1s lets the outage test see how fast
	// the service itself recovers.
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 10
server_idle_timeout = 5
server_login_retry = 1
logfile = %s
`, strings.Join(upstream, " "), port, b.logPath())
	conf := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(conf, []byte(ini), 0o600); err != nil {
		return fail(err)
	}
	b.cmd = exec.Command(bin, conf)
	// pgbouncer refuses to run as root: run it as the launcher runs the cluster.
	if err := localpg.RunAsServerUser(b.cmd, dir); err != nil {
		return fail(err)
	}
	if err := b.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start pgbouncer: %w", err))
	}
	go func() {
		err := b.cmd.Wait()
		if !b.stopping.Load() { // every later test would fail for want of it: say why
			fmt.Fprintf(os.Stderr, "pgbouncer exited unexpectedly (%v); its log ends:\n%s\n", err, testbed.Tail(b.logPath(), 30))
		}
		close(b.exited)
	}()
	if err := b.waitListening(ctx, 10*time.Second); err != nil {
		b.Stop()
		return nil, err
	}
	return b, nil
}

func (b *PgBouncer) logPath() string { return filepath.Join(b.dir, "pgbouncer.log") }

func (b *PgBouncer) waitListening(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgbouncer did not listen on %s within %s: %w\n%s", b.Addr, limit, err, testbed.Tail(b.logPath(), 30))
		}
		select {
		case <-b.exited:
			return fmt.Errorf("pgbouncer exited while starting:\n%s", testbed.Tail(b.logPath(), 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts pgbouncer down at once (SIGTERM), and removes its directory.
func (b *PgBouncer) Stop() {
	defer os.RemoveAll(b.dir)
	b.stopping.Store(true)
	testbed.Stop(b.cmd.Process, b.exited, syscall.SIGTERM, 10*time.Second)
}

// URL is dbURL's database reached through pgbouncer; the other parameters of
// dbURL (pool settings, for example) are kept.
func (b *PgBouncer) URL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for _, k := range []string{"host", "port", "user", "password"} {
		q.Del(k)
	}
	q.Set("sslmode", "disable")
	u.Host = b.Addr
	u.User = url.User("tasks") // any name: auth_type=any ignores it
	u.RawQuery = q.Encode()
	return u.String()
}
