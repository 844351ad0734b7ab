package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tasks-api/internal/localpg"
	"tasks-api/internal/pgtest"
)

// PostgreSQL stopped under a write load, three ways: requests fail fast with
// 503 and the service says it is not ready; when PostgreSQL is back the
// service recovers by itself; and afterwards every acknowledged create,
// update and delete is there exactly as acknowledged.
func TestDatabaseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test")
	}
	dir := pgtest.ClusterDir(t)
	pg := pgtest.StartCluster(t, dir, localpg.Options{}) // durable, as a real server is
	env := map[string]string{"DATABASE_URL": pg.URL(), "BETTER_AUTH_SECRET": testSecret, "RATE_LIMIT": "0"}
	// Straight to PostgreSQL, a request fails at once while it is down (2s:
	// slack for a busy machine, far below the request deadline).
	failFast := 2 * time.Second
	if pgbouncerPass() {
		// The pgbouncer pass: the service reaches this cluster through a
		// pgbouncer of its own, as it would reach Neon through its pooler.
		// There a request does not fail at once: pgbouncer keeps the client
		// waiting for a server connection while it retries the server, and
		// the request's deadline ends the wait.
		bouncer, err := pgtest.StartPgBouncer(t.Context(), pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bouncer.Stop)
		env["DATABASE_URL"], env["DATABASE_URL_UNPOOLED"] = bouncer.URL(pg.URL()), pg.URL()
		failFast = requestDeadline + time.Second
	}
	s := startRun(t, env)
	load := startWriteLoad(t, s.baseURL, 8)

	outages := []struct {
		name string
		stop func(*localpg.Server)
		// The backends of a killed postmaster live on for a moment, and may
		// still commit (durably: crash recovery replays it) and answer.
		orphansServe bool
	}{
		{name: "fast shutdown", stop: func(pg *localpg.Server) { pgtest.StopCluster(t, pg) }},
		{name: "immediate shutdown", stop: func(pg *localpg.Server) {
			_ = pg.ShutdownImmediate()
			<-pg.Exited()
		}},
		{name: "postmaster killed", orphansServe: true, stop: func(pg *localpg.Server) {
			_ = pg.Kill()
			<-pg.Exited()
		}},
	}
	for _, outage := range outages {
		load.waitAcked(t, 200, 30*time.Second)

		stopping := time.Now()
		outage.stop(pg)
		down := time.Now()
		// The database stays down for at least half a second, and until every
		// worker has met the outage.
		waitUntil(t, requestDeadline+5*time.Second, "every worker to meet the outage", func() bool {
			return time.Since(down) > 500*time.Millisecond && load.everyWorkerFailedSince(down)
		})
		readyz := probe(t, s.baseURL+"/readyz")
		healthz := probe(t, s.baseURL+"/healthz")
		if readyz.status != http.StatusServiceUnavailable || !readyz.problem || readyz.retryAfter == "" {
			t.Errorf("%s: /readyz %s, want 503 problem+json with Retry-After", outage.name, readyz)
		}
		if healthz.status != http.StatusOK {
			t.Errorf("%s: /healthz %s, want 200", outage.name, healthz)
		}
		restarting := time.Now()

		// Every request that ran while the database was down failed fast, with a 503 to retry.
		during := load.recordsBetween(down, restarting)
		var slowest time.Duration
		for _, r := range during {
			if outage.orphansServe && r.status/100 == 2 {
				continue
			}
			if r.status != http.StatusServiceUnavailable || !r.problem || r.retryAfter == "" {
				t.Errorf("%s: %s; want 503 problem+json with Retry-After", outage.name, r)
			}
			slowest = max(slowest, r.latency())
		}
		// Those caught in flight by the stop did not hang either.
		var slowestInFlight time.Duration
		for _, r := range load.recordsOverlapping(stopping, down) {
			slowestInFlight = max(slowestInFlight, r.latency())
		}
		if slowest > failFast || slowestInFlight > failFast+time.Second {
			t.Errorf("%s: the slowest request during the outage took %s, and of those in flight at the stop %s",
				outage.name, slowest, slowestInFlight)
		}

		pg = restartLocal(t, dir)
		up := time.Now()
		ready := waitUntil(t, 15*time.Second, "/readyz to answer 200 again", func() bool {
			return probe(t, s.baseURL+"/readyz").status == http.StatusOK
		})
		load.waitAcked(t, 100, 15*time.Second)
		firstWrite := time.Duration(-1)
		failedAfter := 0
		for _, r := range load.recordsBetween(up, time.Now()) {
			if r.status/100 == 2 && (firstWrite < 0 || r.end.Sub(up) < firstWrite) {
				firstWrite = r.end.Sub(up)
			}
			if r.status/100 != 2 {
				failedAfter++
			}
		}
		t.Logf("%s: stop took %s; %d requests during the %s outage, slowest %s (in flight at the stop: %s); "+
			"/readyz %d in %s, /healthz %d in %s; after the restart (%s): ready in %s, first acknowledged write after %s, %d requests failed after the restart",
			outage.name, down.Sub(stopping).Round(time.Millisecond), len(during), restarting.Sub(down).Round(time.Millisecond),
			slowest.Round(time.Microsecond), slowestInFlight.Round(time.Microsecond),
			readyz.status, readyz.latency().Round(time.Microsecond), healthz.status, healthz.latency().Round(time.Microsecond),
			up.Sub(restarting).Round(time.Millisecond), ready.Round(time.Millisecond), firstWrite.Round(time.Millisecond), failedAfter)
	}

	load.finish()
	// At no time did the service answer anything but a success or a 503 to
	// retry (or a 404 to a delete repeated after an earlier attempt did it).
	for _, r := range load.recordsBetween(time.Time{}, time.Now()) {
		if r.status/100 == 2 || (r.status == http.StatusNotFound && r.method == "DELETE" && r.repeat) {
			continue
		}
		if r.status != http.StatusServiceUnavailable || !r.problem || r.retryAfter == "" {
			t.Errorf("%s; want a 2xx, or a 503 problem+json with Retry-After", r)
		}
	}
	tally := load.verify(t, pg.URL())
	if t.Failed() {
		t.Logf("service log:\n%s", s.stderr)
	}
	t.Logf("verified: %d acknowledged creates, %d updates, %d deletes; %d tasks exactly as acknowledged, %d deletes absent, "+
		"%d unacknowledged writes resolved whole, %d unacknowledged creates that happened",
		tally.creates, tally.updates, tally.deletes, tally.present, tally.deletedAbsent, tally.unknownWrites, tally.unackedCreatesStored)
}

// probe is one GET, recorded like a request of the load.
func probe(t *testing.T, url string) requestRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestDeadline+5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	rec := requestRecord{method: "GET", start: time.Now()}
	res, err := http.DefaultClient.Do(req)
	rec.end = time.Now()
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	res.Body.Close()
	rec.status = res.StatusCode
	rec.problem = res.Header.Get("Content-Type") == "application/problem+json"
	rec.retryAfter = res.Header.Get("Retry-After")
	return rec
}

// restartLocal starts the cluster in dir again. After the postmaster was
// killed its backends take a moment to notice and exit; until they have, the
// new postmaster refuses to start on their shared memory, so it is retried.
func restartLocal(t *testing.T, dir string) *localpg.Server {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pg, err := localpg.Start(t.Context(), dir, localpg.Options{})
		if err == nil {
			t.Cleanup(func() { pgtest.StopCluster(t, pg) })
			return pg
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart PostgreSQL: %v", err)
		}
		t.Logf("restart PostgreSQL (retrying): %v", err)
		time.Sleep(100 * time.Millisecond)
	}
}

// How a failed statement's error becomes a response. A server that goes away
// mid-statement (crash, immediate shutdown) leaves pgx with an unexpected
// EOF: the database is unavailable, not an internal error.
func TestClassifyDatabaseUnavailable(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want int
	}{
		{"connection lost mid-statement", io.ErrUnexpectedEOF, http.StatusServiceUnavailable},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, http.StatusServiceUnavailable},
		{"server starting", &pgconn.PgError{Code: "57P03"}, http.StatusServiceUnavailable},
		{"lock timeout", &pgconn.PgError{Code: "55P03"}, http.StatusServiceUnavailable},
		{"deadline", context.DeadlineExceeded, http.StatusServiceUnavailable},
		{"a bug", &pgconn.PgError{Code: "42703"}, http.StatusInternalServerError},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := asError(t.Context(), dbFail("statement", c.err))
			if status := statusOf(got.Code); status != c.want || (c.want == http.StatusServiceUnavailable && got.RetryAfter == 0) {
				t.Fatalf("%d (Retry-After %s), want %d", status, got.RetryAfter, c.want)
			}
		})
	}
}

// A transaction whose database falls silent (a partition: no reset, no
// answer) after its last statement still ends, and gives its connection
// back: the rollback of a failed transaction has its own bound.
func TestRollbackOnASilentDatabaseEnds(t *testing.T) {
	if testing.Short() {
		t.Skip("a fault test of 20s")
	}
	url := newDatabase(t, true)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	network, target := "tcp", net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	if strings.HasPrefix(cfg.ConnConfig.Host, "/") { // the local cluster's socket
		network, target = "unix", filepath.Join(cfg.ConnConfig.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.ConnConfig.Port))
	}
	link := startSilencer(t, network, target)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", uint16(link.port())
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(pool, storeOptions{})

	refused := newError(CodePreconditionFailed, "refused after a statement")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- store.InTx(context.Background(), func(q Queries) error {
			if _, err := q.CreateTask(context.Background(), "silent", newTask{Title: "x", Priority: "high", Tags: []string{"home"}}); err != nil {
				return err
			}
			link.silence()
			return refused // the rollback meets the silence
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, refused) {
			t.Fatalf("InTx: %v, want the function's error", err)
		}
	case <-time.After(rollbackTimeout + 10*time.Second):
		t.Fatalf("InTx did not return %s after its rollback met a silent database", time.Since(start).Round(time.Second))
	}
	closed := make(chan struct{})
	returned := time.Now()
	go func() { pool.Close(); close(closed) }()
	select {
	case <-closed:
		t.Logf("InTx returned after %s, pool.Close took %s", returned.Sub(start), time.Since(returned))
	case <-time.After(25 * time.Second): // pgx gives a broken connection's cleanup 15s
		t.Fatal("pool.Close waits for a connection the rollback kept")
	}
}

// silencer forwards TCP connections to a server until silence, after which
// it passes nothing either way and closes nothing, as a partitioned network.
type silencer struct {
	ln     net.Listener
	silent atomic.Bool
}

func startSilencer(t *testing.T, network, target string) *silencer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silencer{ln: ln}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial(network, target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, server)
			mu.Unlock()
			conns.Go(func() { s.pipe(server, client) })
			conns.Go(func() { s.pipe(client, server) })
		}
	}()
	return s
}

func (s *silencer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *silencer) silence() { s.silent.Store(true) }

// pipe copies from src to dst while the link speaks; silent, it drops what
// it reads.
func (s *silencer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !s.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
