package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Timeouts short enough for a test; the service's defaults are the same
// shape, ten times longer.
var shortTimeouts = serverTimeouts{
	readHeader: 500 * time.Millisecond,
	read:       time.Second,
	write:      5 * time.Second,
	idle:       5 * time.Second,
	shutdown:   time.Second,
}

// slowClient sends head at once, then dribble one byte at a time, every
// interval, until the server closes the connection; it returns what the
// server answered (if anything) and when the connection was closed.
func slowClient(addr, head, dribble string, interval time.Duration) (answer string, closedAfter time.Duration, err error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, head); err != nil {
		return "", 0, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i = (i + 1) % len(dribble) {
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
			if _, err := conn.Write([]byte{dribble[i]}); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
	b, err := io.ReadAll(conn)
	closedAfter = time.Since(start)
	<-done
	if errors.Is(err, syscall.ECONNRESET) {
		// The server closed the connection with the client's bytes unread,
		// so TCP reset it, which may discard the answer: cut off all the same.
		return string(b), closedAfter, nil
	}
	return string(b), closedAfter, err
}

// A slowloris client (headers dribbled) and a slow-body client are cut off by
// the server's timeouts, while other clients are served as usual meanwhile.
func TestSlowClientsAreCutOff(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.server = &shortTimeouts })
	addr := strings.TrimPrefix(a.URL, "http://")
	user, tok := a.newUser(t)

	// Normal clients, all the while.
	stop := make(chan struct{})
	var normal sync.WaitGroup
	var mu sync.Mutex
	var servedAt []time.Time
	var latencies []time.Duration
	var failures []string
	for range 4 {
		normal.Add(1)
		go func() {
			defer normal.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				req, _ := http.NewRequest("GET", a.URL+"/api/me/tasks", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				res, err := http.DefaultClient.Do(req)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case res.StatusCode != http.StatusOK:
					failures = append(failures, res.Status)
				default:
					servedAt = append(servedAt, time.Now())
					latencies = append(latencies, time.Since(start))
				}
				mu.Unlock()
				if err == nil {
					res.Body.Close()
				}
			}
		}()
	}

	type result struct {
		kind        string
		answer      string
		closedAfter time.Duration
		closedAt    time.Time
		err         error
	}
	results := make(chan result)
	var slow sync.WaitGroup
	// Leading whitespace makes the body take 7s to dribble, far past the read timeout.
	body := strings.Repeat(" ", 50) + `{"title":"sent slowly"}`
	post := func(extra string) string {
		return "POST /api/me/tasks HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok +
			"\r\nContent-Type: application/json\r\n" + extra + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	}
	clients := []struct{ kind, head, dribble string }{
		{"slowloris", "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n", "X-Slow: 1\r\n"}, // header lines, never the blank line
		{"slow body", post(""), body},
		{"slow body with Idempotency-Key", post("Idempotency-Key: slow-body\r\n"), body},
	}
	for _, c := range clients {
		for range 10 {
			slow.Add(1)
			go func() {
				defer slow.Done()
				answer, after, err := slowClient(addr, c.head, c.dribble, 100*time.Millisecond)
				results <- result{c.kind, answer, after, time.Now(), err}
			}()
		}
	}
	go func() { slow.Wait(); close(results) }()

	longest := map[string]time.Duration{}
	answers := map[string]map[string]int{}
	firstCut := time.Now().Add(time.Hour)
	for r := range results {
		if r.closedAt.Before(firstCut) {
			firstCut = r.closedAt
		}
		if r.err != nil {
			t.Errorf("%s: %v after %s", r.kind, r.err, r.closedAfter)
			continue
		}
		longest[r.kind] = max(longest[r.kind], r.closedAfter)
		status := "no answer" // closed, or reset
		if r.answer != "" {
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(r.answer)), nil)
			if err != nil {
				t.Errorf("%s: unreadable answer %q", r.kind, r.answer)
				continue
			}
			status = res.Status
			// net/http itself answers a request whose headers never end
			// (before any handler runs: text/plain); the service answers
			// a body that never arrives.
			if ct := res.Header.Get("Content-Type"); r.kind != "slowloris" && ct != "application/problem+json" {
				t.Errorf("%s: %s with Content-Type %q", r.kind, res.Status, ct)
			}
		}
		if answers[r.kind] == nil {
			answers[r.kind] = map[string]int{}
		}
		answers[r.kind][status]++
	}
	close(stop)
	normal.Wait()

	bound := map[string]time.Duration{ // the timeout, plus slack for a busy machine
		"slowloris":                      shortTimeouts.readHeader + time.Second,
		"slow body":                      shortTimeouts.read + time.Second,
		"slow body with Idempotency-Key": shortTimeouts.read + time.Second,
	}
	for kind, d := range longest {
		if d > bound[kind] {
			t.Errorf("%s: a connection lasted %s, want at most %s", kind, d, bound[kind])
		}
	}
	for kind, got := range answers {
		for status := range got {
			if status != "400 Bad Request" && status != "no answer" {
				t.Errorf("%s: answers %v, want 400 (or the connection closed)", kind, got)
			}
		}
	}
	for _, kind := range []string{"slow body", "slow body with Idempotency-Key"} {
		if answers[kind]["400 Bad Request"] == 0 { // the service's own answer, seen at least once
			t.Errorf("%s: answers %v, want a 400 problem", kind, answers[kind])
		}
	}
	if n := a.countTasks(t, user); n != 0 {
		t.Errorf("%d tasks stored from bodies that never arrived", n)
	}
	// Had the slow clients held the server up, nothing would have been
	// served before the first of them was cut off.
	servedBefore := 0
	for _, at := range servedAt {
		if at.Before(firstCut) {
			servedBefore++
		}
	}
	slices.Sort(latencies)
	if len(failures) > 0 || servedBefore < 4 {
		t.Errorf("normal clients meanwhile: %d served before the first slow client was cut off (want one each at least), failures %v",
			servedBefore, failures)
	}
	t.Logf("cut off after at most: %v; answers: %v; meanwhile %d normal requests served (%d before the first cut-off), median %s, slowest %s",
		longest, answers, len(latencies), servedBefore, latencies[len(latencies)/2], latencies[len(latencies)-1])
}

// A request's database work ends with its deadline: an update that waits
// for a row lock held elsewhere is answered 503 as soon as the request's
// time is up, and its statement does not linger on the server.
func TestRequestDatabaseWorkIsBounded(t *testing.T) {
	dbURL := newDatabase(t, true)
	a := startAPI(t, func(o *apiOptions) { o.dbURL = dbURL; o.timeout = 300 * time.Millisecond })
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"locked"}`)

	holderPID, release := lockTaskRow(t, dbURL, task.ID)

	for _, key := range []string{"", "bounded"} { // plain, and inside the Idempotency-Key transaction
		start := time.Now()
		opts := []reqOption{bearer(tok)}
		if key != "" {
			opts = append(opts, idemKey(key))
		}
		r := a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", task.ID), `{"title":"changed"}`, opts...)
		took := time.Since(start)
		mustStatus(t, r, http.StatusServiceUnavailable).problem(t)
		if r.Header.Get("Retry-After") == "" || took > 2*time.Second {
			t.Errorf("key %q: 503 after %s, Retry-After %q; want it soon after the 300ms deadline, with Retry-After", key, took, r.Header.Get("Retry-After"))
		}
		// The statement was cancelled on the server, not left waiting for the
		// lock, and its transaction (with the Idempotency-Key's lock) ended.
		gone := waitUntil(t, 5*time.Second, "the cancelled UPDATE and its transaction to end on the server", func() bool {
			return len(pendingUpdates(t, dbURL, holderPID)) == 0
		})
		t.Logf("key %q: 503 after %s; the statement was gone from the server %s later", key, took.Round(time.Millisecond), gone.Round(time.Millisecond))
	}
	release()
	// Nothing was changed, and the pool works on.
	got := mustStatus(t, a.do(t, "GET", fmt.Sprintf("/api/me/tasks/%d", task.ID), nil, bearer(tok)), http.StatusOK).task(t)
	if got.Title != "locked" || got.Version != task.Version {
		t.Fatalf("after the cancelled updates: %+v", got)
	}
	mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", task.ID), `{"title":"changed"}`, bearer(tok), idemKey("bounded")), http.StatusOK)
}

// Clients that give up mid-request (a closed tab, a client timeout) cancel
// their statements on the server, and the pool, and a pooler in front of the
// server, go on serving: the pgbouncer pass runs this through Debian's
// PgBouncer, which older releases crash on a badly timed cancel request.
func TestAbandonedRequestsAreCancelledOnTheServer(t *testing.T) {
	dbURL := newDatabase(t, true)
	a := startAPI(t, func(o *apiOptions) { o.dbURL = dbURL })
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"locked"}`)
	path := fmt.Sprintf("/api/me/tasks/%d", task.ID)

	holderPID, release := lockTaskRow(t, dbURL, task.ID)

	// Forty clients each wait 200ms for an update stuck behind the lock, then hang up.
	impatient := &http.Client{Timeout: 200 * time.Millisecond}
	var wg sync.WaitGroup
	var answered atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			req, _ := http.NewRequest("PATCH", a.URL+path, strings.NewReader(fmt.Sprintf(`{"title":"abandoned %d"}`, i)))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			if i%2 == 1 {
				req.Header.Set("Idempotency-Key", fmt.Sprintf("abandoned-%d", i))
			}
			if res, err := impatient.Do(req); err == nil {
				res.Body.Close()
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	if n := answered.Load(); n != 0 {
		t.Errorf("%d of the updates stuck behind the lock were answered within 200ms", n)
	}
	// While the lock is still held, every one of those statements ends.
	gone := waitUntil(t, 5*time.Second, "the abandoned UPDATEs to end on the server", func() bool {
		return len(pendingUpdates(t, dbURL, holderPID)) == 0
	})
	release()
	got := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).task(t)
	if got.Title != "locked" || got.Version != task.Version {
		t.Fatalf("the abandoned updates changed the task: %+v", got)
	}
	// The pool (and the pooler) serve on: forty updates at once all succeed.
	var failed atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"title":"served %d"}`, i)
			if r := a.do(t, "PATCH", path, body, bearer(tok)); r.Status != http.StatusOK {
				failed.Add(1)
				t.Errorf("update %d after the abandoned ones: %d %s", i, r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	got = mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).task(t)
	if got.Version != task.Version+40 {
		t.Errorf("version %d after 40 updates from %d", got.Version, task.Version)
	}
	t.Logf("40 abandoned updates cancelled on the server within %s; 40 updates after them: %d failed", gone.Round(time.Millisecond), failed.Load())
}

// lockTaskRow locks the task's row in a transaction of its own session, as
// another client's long transaction would, until release (or the test's end).
// It returns that session's pid.
func lockTaskRow(t *testing.T, dbURL string, id int64) (pid uint32, release func()) {
	t.Helper()
	holder, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(context.Background()) })
	tx, err := holder.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT FROM tasks WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return holder.PgConn().PID(), func() {
		if err := tx.Rollback(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// pendingUpdates lists the server's sessions on dbURL's database, other than
// the one with pid except, that are running an UPDATE of tasks or sit in an
// open transaction. It asks over a connection of its own: a session's view of
// pg_stat_activity is a snapshot that lasts until its transaction ends.
func pendingUpdates(t *testing.T, dbURL string, except uint32) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `
SELECT pid || ' ' || state || ': ' || left(query, 40) FROM pg_stat_activity
WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), $1)
  AND (state = 'active' AND query ILIKE '%UPDATE tasks%' OR state LIKE 'idle in transaction%')`, except)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return pending
}

// Straight to PostgreSQL every connection of the pool carries a
// statement_timeout, so no statement runs unbounded whatever the client does.
// (A transaction-mode pooler refuses that startup parameter; there the
// request's deadline and pgx's cancel request bound the work, as above.)
func TestDirectPoolSetsStatementTimeout(t *testing.T) {
	db := testPG(t)
	pool, err := openPool(t.Context(), db.sharedURL, poolOptions{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var got string
	if err := pool.QueryRow(t.Context(), `SHOW statement_timeout`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "10s" {
		t.Fatalf("statement_timeout %q on a direct connection, want 10s", got)
	}
	if db.pooler != nil {
		// Behind pgbouncer the service's pool sends none (pgbouncer would
		// refuse the connection), so the server's default applies.
		if err := db.shared.QueryRow(t.Context(), `SHOW statement_timeout`).Scan(&got); err != nil || got != "0" {
			t.Fatalf("statement_timeout %q (%v) behind pgbouncer, want the server's default 0", got, err)
		}
	}
	// An explicit setting in the URL wins.
	pool2, err := openPool(t.Context(), withParam(db.sharedURL, "statement_timeout", "250ms"), poolOptions{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	if err := pool2.QueryRow(t.Context(), `SHOW statement_timeout`).Scan(&got); err != nil || got != "250ms" {
		t.Fatalf("statement_timeout %q (%v), want the URL's 250ms", got, err)
	}
}

// withParam is dbURL with the query parameter k set to v.
func withParam(dbURL, k, v string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}

// Far more concurrent requests than pool connections, Idempotency-Key
// requests (which hold a transaction, and so a connection, throughout) among
// them: every one completes with its 2xx, none waits for the request
// deadline.
func TestPoolDoesNotDeadlock(t *testing.T) {
	const requests = 200
	a := startAPI(t, func(o *apiOptions) {
		o.dbURL = withParam(newDatabase(t, true), "pool_max_conns", "2")
		// A wait for a connection that never comes would end here, as a 503;
		// generous, so that a slow (race-instrumented, busy) machine is no deadlock.
		o.timeout = 20 * time.Second
	})
	if got := a.pool.Config().MaxConns; got != 2 {
		t.Fatalf("pool of %d connections, want 2", got)
	}
	_, tok := a.newUser(t)
	targets := make([]taskJSON, requests)
	for i := range targets {
		targets[i] = a.createTask(t, tok, fmt.Sprintf(`{"title":"target %d"}`, i))
	}

	type request struct {
		method, path, body, key string
		want                    int
	}
	reqs := make([]request, requests)
	for i, task := range targets {
		path := fmt.Sprintf("/api/me/tasks/%d", task.ID)
		key := ""
		if i%2 == 0 {
			key = fmt.Sprintf("pool-%d", i) // half of the writes hold a transaction
		}
		switch i % 7 {
		case 0:
			reqs[i] = request{"POST", "/api/me/tasks", fmt.Sprintf(`{"title":"new %d"}`, i), key, http.StatusCreated}
		case 1:
			reqs[i] = request{"PATCH", path, `{"priority":"high","tags":["x"]}`, key, http.StatusOK}
		case 2:
			reqs[i] = request{"PATCH", path + "/complete", "", key, http.StatusOK}
		case 3:
			reqs[i] = request{"DELETE", path, "", key, http.StatusNoContent}
		case 4:
			reqs[i] = request{"GET", path, "", "", http.StatusOK}
		case 5:
			reqs[i] = request{"GET", "/api/me/tasks?limit=50&sort=priority", "", "", http.StatusOK}
		case 6:
			reqs[i] = request{"GET", "/api/me/tasks/stats", "", "", http.StatusOK}
		}
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]testResponse, requests)
	took := make([]time.Duration, requests)
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body any
			if r.body != "" {
				body = r.body
			}
			opts := []reqOption{bearer(tok)}
			if r.key != "" {
				opts = append(opts, idemKey(r.key))
			}
			<-start
			t0 := time.Now()
			results[i] = a.do(t, r.method, r.path, body, opts...)
			took[i] = time.Since(t0)
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	total := time.Since(began)

	var slowest time.Duration
	for i, r := range results {
		if r.Status != reqs[i].want {
			t.Errorf("%s %s (key %q): %s, want %d", reqs[i].method, reqs[i].path, reqs[i].key, r, reqs[i].want)
		}
		slowest = max(slowest, took[i])
	}
	t.Logf("%d concurrent requests on a pool of 2 connections: all done in %s, the slowest in %s", requests, total.Round(time.Millisecond), slowest.Round(time.Millisecond))
}

// The pool's ping of an idle connection has its own bound, unless the URL
// sets one: pgxpool's default is none.
func TestPoolPingIsBounded(t *testing.T) {
	db := testPG(t)
	for _, c := range []struct {
		url  string
		want time.Duration
	}{
		{db.sharedURL, 5 * time.Second},
		{withParam(db.sharedURL, "pool_ping_timeout", "250ms"), 250 * time.Millisecond},
	} {
		pool, err := openPool(t.Context(), c.url, poolOptions{}, discardLog())
		if err != nil {
			t.Fatal(err)
		}
		if got := pool.Config().PingTimeout; got != c.want {
			t.Errorf("ping timeout %s, want %s", got, c.want)
		}
		pool.Close()
	}
}
