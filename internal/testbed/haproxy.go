package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// HAProxy is an haproxy process balancing HTTP over instances of the
// service, configured as docs/scale-out.md says (HAProxyConfig).
type HAProxy struct {
	Addr      string // 127.0.0.1:port, where clients connect
	StatsAddr string // 127.0.0.1:port of the stats page
	Config    string // the configuration it runs
	cmd       *exec.Cmd
	exited    chan struct{}
	dir       string // its configuration and log
	stopping  atomic.Bool
}

// HAProxyConfig is the configuration docs/scale-out.md shows: listen is the
// address clients connect to, stats the stats page's, servers the
// instances (host:port), named s1, s2, ...
//
// Each instance's /readyz is checked every 200 ms; two failures take it out
// of rotation, two successes put it back. An instance that shuts down
// answers 503 from its first moment and keeps serving for SHUTDOWN_DRAIN
// (which must exceed fall × inter plus a check's time, here 0.4 s + slack),
// so no request meets a closed port. A request is retried on another
// instance only when the connection to the first could not be made
// (conn-failure): then nothing was sent, so even a POST without an
// Idempotency-Key is safe to repeat; a request that reached an instance is
// never sent again. Timeouts are above the event streams' heartbeat
// (SSE_HEARTBEAT, 15 s by default), which keeps a stream from looking idle.
func HAProxyConfig(listen, stats string, servers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `defaults
    mode http
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    timeout http-request 10s
    timeout http-keep-alive 1m
    timeout queue 10s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend api
    bind %s
    default_backend tasks

backend tasks
    balance roundrobin
    option http-no-delay
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
    http-response set-header X-Served-By %%[srv_name]
`, listen)
	for i, s := range servers {
		fmt.Fprintf(&b, "    server s%d %s check\n", i+1, s)
	}
	fmt.Fprintf(&b, `
listen stats
    bind %s
    stats enable
    stats uri /stats
`, stats)
	return b.String()
}

// FindHAProxy is the haproxy binary: in PATH, or where Debian and Homebrew
// put it.
func FindHAProxy() (string, error) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/opt/homebrew/bin/haproxy"} {
		if p, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no haproxy (Debian: apt-get install haproxy)")
}

// StartHAProxy starts haproxy on free ports in front of servers (host:port
// each) and waits until it listens. Stop it with Stop.
func StartHAProxy(ctx context.Context, servers []string) (*HAProxy, error) {
	bin, err := FindHAProxy()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	statsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tasks-test-haproxy-")
	if err != nil {
		return nil, err
	}
	h := &HAProxy{
		Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		StatsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(statsPort)),
		exited:    make(chan struct{}),
		dir:       dir,
	}
	h.Config = HAProxyConfig(h.Addr, h.StatsAddr, servers)
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(h.Config), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logFile, err := os.Create(h.LogPath())
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// -db: in the foreground, its messages on stderr; -W would fork a master.
	h.cmd = exec.Command(bin, "-db", "-f", conf)
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	h.cmd.SysProcAttr = dieWithParent()
	if err := h.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	go func() {
		err := h.cmd.Wait()
		logFile.Close()
		if !h.stopping.Load() {
			fmt.Fprintf(os.Stderr, "haproxy exited unexpectedly (%v); its log ends:\n%s\n", err, Tail(h.LogPath(), 30))
		}
		close(h.exited)
	}()
	if err := h.waitListening(ctx, 10*time.Second); err != nil {
		h.Stop()
		return nil, err
	}
	return h, nil
}

// LogPath is haproxy's log: its warnings and alerts (server up and down).
func (h *HAProxy) LogPath() string { return filepath.Join(h.dir, "haproxy.log") }

// URL is the balancer's base URL.
func (h *HAProxy) URL() string { return "http://" + h.Addr }

func (h *HAProxy) waitListening(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", h.Addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy did not listen on %s within %s: %w\n%s", h.Addr, limit, err, Tail(h.LogPath(), 30))
		}
		select {
		case <-h.exited:
			return fmt.Errorf("haproxy exited while starting:\n%s", Tail(h.LogPath(), 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServerStatus is what haproxy thinks of each server now, by name (s1,
// s2, ...): "UP", "DOWN", "UP 1/2" (going up), "DOWN 1/2" (going down), ...
func (h *HAProxy) ServerStatus(ctx context.Context) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.StatsAddr+"/stats;csv", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("haproxy stats: status %d", res.StatusCode)
	}
	sc := bufio.NewScanner(res.Body)
	var columns []string
	out := map[string]string{}
	for sc.Scan() {
		line := sc.Text()
		if header, ok := strings.CutPrefix(line, "# "); ok {
			columns = strings.Split(header, ",")
			continue
		}
		fields := strings.Split(line, ",")
		row := map[string]string{}
		for i, c := range columns {
			if i < len(fields) {
				row[c] = fields[i]
			}
		}
		if row["pxname"] == "tasks" && row["svname"] != "BACKEND" && row["svname"] != "FRONTEND" {
			out[row["svname"]] = row["status"]
		}
	}
	return out, sc.Err()
}

// WaitStatus waits until haproxy reports server (s1, s2, ...) as status
// ("UP" or "DOWN").
func (h *HAProxy) WaitStatus(ctx context.Context, server, status string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := ""
	for {
		st, err := h.ServerStatus(ctx)
		if err == nil && st[server] == status {
			return nil
		}
		if err == nil {
			last = st[server]
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy did not see %s %s within %s (last: %q, error: %v)\n%s", server, status, limit, last, err, Tail(h.LogPath(), 30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops haproxy (SIGUSR1 would wait for its connections; SIGTERM does
// not) and removes its directory.
func (h *HAProxy) Stop() {
	defer os.RemoveAll(h.dir)
	h.stopping.Store(true)
	Stop(h.cmd.Process, h.exited, syscall.SIGTERM, 10*time.Second)
}
