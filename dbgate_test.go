package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// gateRig is a handler behind the gate whose database the test switches on and off.
type gateRig struct {
	gate    *dbGate
	dbUp    atomic.Bool
	reached atomic.Int64 // requests that got past the gate
	srv     *httptest.Server
}

func newGateRig(t *testing.T) *gateRig {
	rig := &gateRig{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rig.gate = newDBGate(ctx, func(ctx context.Context) error {
		if rig.dbUp.Load() {
			return nil
		}
		<-ctx.Done() // a dead server behind a pooler: the ping hangs until its timeout
		return ctx.Err()
	}, discardLog())
	rig.gate.interval, rig.gate.timeout = 20*time.Millisecond, 100*time.Millisecond
	h := func(w http.ResponseWriter, r *http.Request) error {
		rig.reached.Add(1)
		if !rig.dbUp.Load() {
			return dbFail("query", context.DeadlineExceeded)
		}
		writeJSON(w, r, http.StatusOK, []byte(`{}`))
		return nil
	}
	rig.srv = httptest.NewServer(logRequests(discardLog(), nil)(serveRoute("GET /", failFastWhenDown(rig.gate)(h))))
	t.Cleanup(rig.srv.Close)
	return rig
}

func (rig *gateRig) get(t *testing.T) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := http.Get(rig.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, time.Since(start)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestDBGateClosesAndReopens(t *testing.T) {
	rig := newGateRig(t)
	if status, _ := rig.get(t); status != http.StatusServiceUnavailable {
		t.Fatalf("first request on a dead database: %d", status)
	}
	waitFor(t, "the gate to close", rig.gate.down.Load)
	before := rig.reached.Load()
	for range 20 {
		status, took := rig.get(t)
		if status != http.StatusServiceUnavailable || took > 50*time.Millisecond {
			t.Fatalf("while down: %d in %s, want a fast 503", status, took)
		}
	}
	if rig.reached.Load() != before {
		t.Fatal("requests reached the handler while the gate was closed")
	}
	rig.dbUp.Store(true)
	waitFor(t, "the gate to reopen", func() bool { return !rig.gate.down.Load() })
	if status, _ := rig.get(t); status != http.StatusOK {
		t.Fatalf("after recovery: %d", status)
	}
}

// A request that times out while the database answers pings (a lock wait)
// does not close the gate for everyone.
func TestDBGateIgnoresASlowQuery(t *testing.T) {
	rig := newGateRig(t)
	rig.dbUp.Store(true)
	rig.gate.suspect() // as a request that hit its deadline would
	waitFor(t, "the check to finish", func() bool { return !rig.gate.probing.Load() })
	if rig.gate.down.Load() {
		t.Fatal("the gate closed although the database answers")
	}
}

// Behind a pooler whose server is gone, connections are accepted and never
// answered. Once one request has waited out its deadline, the rest fail fast.
func TestDBGateWithAnUnansweringDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // accept, and say nothing
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg, err := pgxpool.ParseConfig("postgres://u@" + ln.Addr().String() + "/db?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gate := newDBGate(ctx, pool.Ping, discardLog())
	gate.timeout = 200 * time.Millisecond
	h := newHandler(deps{log: discardLog(), store: newStore(pool, storeOptions{}), origins: []string{"*"},
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret)}), timeout: 500 * time.Millisecond, gate: gate,
		ready: func(context.Context) error { return errors.New("down") }})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a := &testAPI{URL: srv.URL, client: srv.Client()}
	tok, _ := mintToken([]byte(testSecret), "gated", "", "", time.Hour, time.Now())

	start := time.Now()
	r := mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusServiceUnavailable)
	if took := time.Since(start); took < 400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("the first request took %s; it should wait out its 500ms deadline", took)
	}
	if r.problem(t).Type != problemKinds[CodeUnavailable].typ {
		t.Fatal(r)
	}
	waitFor(t, "the gate to close", gate.down.Load)
	for range 10 {
		start := time.Now()
		mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok)), http.StatusServiceUnavailable)
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Fatalf("a request took %s while the gate was closed", took)
		}
	}
}
