//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tasks-api/internal/testbed"
)

// cluster is the service as it runs in production: several instances, each
// a process of its own, on one PostgreSQL, behind HAProxy configured as
// docs/scale-out.md says. Requests go through the balancer; the test stops,
// kills and restarts instances under it.
type cluster struct {
	t         *testing.T
	bin       string
	dbURL     string // the database, directly: for checks
	env       []string
	ports     []int
	instances []*serviceProcess // by index; s1 is instances[0]
	lb        *testbed.HAProxy
	tokens    syncTokens // decodes the event ids of every user
	client    *http.Client
}

// startCluster starts n instances on a database of their own and HAProxy in
// front of them, and waits until HAProxy sees every instance up. In the
// pgbouncer pass the instances reach the database through pgbouncer, and
// LISTEN directly (DATABASE_URL_UNPOOLED), as on Neon.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	dbURL := newDatabase(t, true)
	c := &cluster{t: t, bin: buildService(t), dbURL: dbURL,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	c.env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DATABASE_URL=" + testPG(t).serviceURL(dbURL), "BETTER_AUTH_SECRET=" + testSecret,
		"RATE_LIMIT=0", "LOG_FORMAT=json",
		// Less than the 2 s default, still well above what HAProxy needs to
		// see an instance go (2 failed checks 200 ms apart).
		"SHUTDOWN_DRAIN=1s",
		"SSE_HEARTBEAT=500ms",
	}
	if pgbouncerPass() {
		c.env = append(c.env, "DATABASE_URL_UNPOOLED="+dbURL)
	}
	var servers []string
	for range n {
		port, err := testbed.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.ports = append(c.ports, port)
		servers = append(servers, "127.0.0.1:"+strconv.Itoa(port))
		c.instances = append(c.instances, nil)
	}
	for i := range n {
		c.start(i)
	}
	lb, err := testbed.StartHAProxy(t.Context(), servers)
	if err != nil {
		t.Fatal(err)
	}
	c.lb = lb
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy's log ends:\n%s", testbed.Tail(lb.LogPath(), 40))
			for i, s := range c.instances {
				t.Logf("the log of s%d ends:\n%s", i+1, tail(s.stderr.String(), 40))
			}
		}
		lb.Stop()
	})
	for i := range n {
		c.waitStatus(i, "UP")
	}
	var key []byte
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), `SELECT key FROM service_keys WHERE name = 'sync_token'`).Scan(&key); err != nil {
		t.Fatal(err)
	}
	c.tokens = syncTokens{key: key, retention: 720 * time.Hour, now: time.Now}
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// start starts instance i on its port.
func (c *cluster) start(i int) {
	c.t.Helper()
	env := append(c.env[:len(c.env):len(c.env)], "PORT="+strconv.Itoa(c.ports[i]))
	c.instances[i] = startServiceProcess(c.t, c.bin, env)
}

// name is how HAProxy calls instance i.
func name(i int) string { return "s" + strconv.Itoa(i+1) }

func (c *cluster) waitStatus(i int, status string) time.Duration {
	c.t.Helper()
	start := time.Now()
	if err := c.lb.WaitStatus(c.t.Context(), name(i), status, 30*time.Second); err != nil {
		c.t.Fatal(err)
	}
	return time.Since(start)
}

// terminate sends SIGTERM to instance i and waits until it has exited.
func (c *cluster) terminate(i int) time.Duration {
	c.t.Helper()
	s := c.instances[i]
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("s%d did not exit within 30s of SIGTERM", i+1)
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		c.t.Errorf("s%d exited with status %d after SIGTERM:\n%s", i+1, code, tail(s.stderr.String(), 20))
	}
	return time.Since(start)
}

// apiResult is one request through the balancer, as the client saw it.
type apiResult struct {
	status   int // 0: no response
	err      error
	header   http.Header
	body     []byte
	servedBy string // the instance that answered (HAProxy's X-Served-By)
}

// do sends one request through the balancer and reads the answer whole.
func (c *cluster) do(ctx context.Context, method, path, token, body string, headers ...string) apiResult {
	ctx, cancel := context.WithTimeout(ctx, requestDeadline+5*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.lb.URL()+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := c.client.Do(req)
	if err != nil {
		return apiResult{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return apiResult{err: err}
	}
	return apiResult{status: res.StatusCode, header: res.Header, body: b, servedBy: res.Header.Get("X-Served-By")}
}

func (r apiResult) String() string {
	if r.status == 0 {
		return fmt.Sprintf("no response: %v", r.err)
	}
	return fmt.Sprintf("%d from %s: %s", r.status, r.servedBy, r.body)
}

// liveTasks are the user's live tasks in the database: id → version.
func (c *cluster) liveTasks(user string) map[int64]int {
	c.t.Helper()
	conn, err := pgx.Connect(c.t.Context(), c.dbURL)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(c.t.Context(), `SELECT id, version FROM tasks WHERE user_id = $1 AND deleted_at IS NULL`, user)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[int64]int{}
	var id int64
	var version int
	if _, err := pgx.ForEachRow(rows, []any{&id, &version}, func() error { out[id] = version; return nil }); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// ---- an event stream that resumes, as EventSource does --------------------

// resumingStream is one client's event stream through the balancer: when
// the server ends it (a shutdown, SSE_MAX_AGE) or the connection breaks (a
// killed instance), it reconnects with Last-Event-ID, as a browser's
// EventSource does (sooner than the 2 s the server asks, to keep the test
// short). It checks every event as it comes: each change's id is a token
// of the user's feed at a position after the previous one (in order, none
// repeated), and it applies the changes to a copy of the user's tasks,
// which must end equal to the database's (none lost).
type resumingStream struct {
	c      *cluster
	user   string
	token  string
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	lastID     string        // the Last-Event-ID of the next connection
	lastSeq    int64         // the feed position of the last change; -1 before ready
	tasks      map[int64]int // the client's copy: id → version
	deleted    map[int64]bool
	changes    int                 // change events applied
	arrived    map[int64]time.Time // when each task's latest event came
	opens      []streamOpen
	violations []string
	ready      chan struct{} // closed at the first ready event
	readyOnce  sync.Once
}

// streamOpen is one connection of a stream.
type streamOpen struct {
	status   int // 0: no response
	err      error
	servedBy string
	ended    string // why it ended: the server's last comment, or the read error
}

// openResumingStream opens a stream for user; since, when not "", is where
// it starts (a token), as if resuming. It returns once the stream is ready.
func (c *cluster) openResumingStream(user, token, since string) *resumingStream {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &resumingStream{c: c, user: user, token: token, cancel: cancel, done: make(chan struct{}),
		lastID: since, lastSeq: -1, tasks: map[int64]int{}, deleted: map[int64]bool{},
		arrived: map[int64]time.Time{}, ready: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			s.connect(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	c.t.Cleanup(s.stop)
	select {
	case <-s.ready:
	case <-time.After(15 * time.Second):
		c.t.Fatalf("the stream of %s was not ready within 15s: %+v", user, s.connections())
	}
	return s
}

func (s *resumingStream) stop() {
	s.cancel()
	<-s.done
}

func (s *resumingStream) violate(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

// connect makes one connection and reads it until it ends.
func (s *resumingStream) connect(ctx context.Context) {
	req, err := http.NewRequestWithContext(ctx, "GET", s.c.lb.URL()+"/api/me/events", nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	s.mu.Lock()
	if s.lastID != "" {
		req.Header.Set("Last-Event-ID", s.lastID)
	}
	s.mu.Unlock()
	res, err := s.c.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.record(streamOpen{err: err})
		}
		return
	}
	defer res.Body.Close()
	n := s.record(streamOpen{status: res.StatusCode, servedBy: res.Header.Get("X-Served-By")})
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		s.ended(n, string(b))
		return
	}
	sc := bufio.NewScanner(res.Body)
	var ev sseEvent
	last := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Event != "" {
				s.receive(ev)
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			last = strings.TrimSpace(line[1:])
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Event = value
			case "id":
				ev.ID = value
			case "data":
				ev.Data = value
			}
		}
	}
	if err := sc.Err(); err != nil {
		last = err.Error()
	}
	s.ended(n, last)
}

// record adds a connection and returns its index.
func (s *resumingStream) record(o streamOpen) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens = append(s.opens, o)
	return len(s.opens) - 1
}

// ended says why connection n ended.
func (s *resumingStream) ended(n int, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens[n].ended = why
}

// receive checks and applies one event.
func (s *resumingStream) receive(ev sseEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, err := s.c.tokens.decode(s.user, ev.ID)
	if err != nil {
		s.violate("event %s: its id %q is not a token of %s: %v", ev.Event, ev.ID, s.user, err)
		return
	}
	switch ev.Event {
	case "ready":
		if s.lastSeq >= 0 && tok.Seq != s.lastSeq {
			s.violate("resumed at position %d, but the last change received was at %d", tok.Seq, s.lastSeq)
		}
		s.lastSeq, s.lastID = tok.Seq, ev.ID
		s.readyOnce.Do(func() { close(s.ready) })
	case "change":
		if tok.Seq <= s.lastSeq {
			s.violate("a change at position %d after one at %d: out of order or repeated", tok.Seq, s.lastSeq)
		}
		var ch changeJSON
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			s.violate("change data %q: %v", ev.Data, err)
			return
		}
		switch {
		case ch.Op == "upsert" && ch.Task != nil:
			if ch.Task.UserID != s.user {
				s.violate("a change of %s's task %d on %s's stream", ch.Task.UserID, ch.Task.ID, s.user)
			}
			s.tasks[ch.Task.ID] = ch.Task.Version
			delete(s.deleted, ch.Task.ID)
		case ch.Op == "delete":
			delete(s.tasks, ch.ID)
			s.deleted[ch.ID] = true
		default:
			s.violate("malformed change %q", ev.Data)
		}
		s.arrived[ch.id()] = time.Now()
		s.lastSeq, s.lastID = tok.Seq, ev.ID
		s.changes++
	default:
		s.violate("unexpected event %q (%s)", ev.Event, ev.Data)
	}
}

// has reports whether the client's copy reflects a write: the task at
// version (or later), or, for version 0, the task deleted; and since when.
func (s *resumingStream) has(id int64, version int) (bool, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version == 0 {
		_, live := s.tasks[id]
		return !live && s.deleted[id], s.arrived[id]
	}
	v, ok := s.tasks[id]
	return ok && v >= version, s.arrived[id]
}

func (s *resumingStream) connections() []streamOpen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamOpen(nil), s.opens...)
}

// copyOf is the client's copy of the user's tasks.
func (s *resumingStream) copyOf() map[int64]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]int, len(s.tasks))
	for id, v := range s.tasks {
		out[id] = v
	}
	return out
}

// check waits until the client's copy equals the user's live tasks in the
// database (the writes have stopped), then reports every violation seen,
// and every connection that was refused. It returns how many connections
// the stream made.
func (s *resumingStream) check(t *testing.T) int {
	t.Helper()
	return s.checkAllowing(t, func(streamOpen) bool { return false })
}

// checkAllowing is check, with the failed connections that allowed says
// may fail.
func (s *resumingStream) checkAllowing(t *testing.T, allowed func(streamOpen) bool) int {
	t.Helper()
	want := s.c.liveTasks(s.user)
	deadline := time.Now().Add(10 * time.Second)
	got := s.copyOf()
	for !equalVersions(got, want) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		got = s.copyOf()
	}
	if !equalVersions(got, want) {
		t.Errorf("the stream of %s ends with %d tasks unlike the database's %d: %s", s.user, len(got), len(want), versionDiff(got, want))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.violations {
		t.Errorf("the stream of %s: %s", s.user, v)
	}
	for _, o := range s.opens {
		if o.status != http.StatusOK && !allowed(o) {
			t.Errorf("the stream of %s: a connection was refused: %d %v %s", s.user, o.status, o.err, o.ended)
		}
	}
	return len(s.opens)
}

func equalVersions(a, b map[int64]int) bool {
	if len(a) != len(b) {
		return false
	}
	for id, v := range a {
		if w, ok := b[id]; !ok || w != v {
			return false
		}
	}
	return true
}

// versionDiff names the first few tasks where the copy and the database differ.
func versionDiff(got, want map[int64]int) string {
	var out []string
	for id, v := range want {
		if g, ok := got[id]; !ok {
			out = append(out, fmt.Sprintf("task %d (version %d) missing", id, v))
		} else if g != v {
			out = append(out, fmt.Sprintf("task %d at version %d, not %d", id, g, v))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			out = append(out, fmt.Sprintf("task %d should be gone", id))
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}
