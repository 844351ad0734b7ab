package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The wrk tests run the installed wrk against a server in the test process,
// for a second or two each, and compare what run reports with what the
// server counted.

const wrkTestConns = 4

// wrkUsers are users of no service: their list path, token and list ETag.
func wrkUsers() []user {
	users := []user{{id: "u1"}, {id: "u2"}, {id: "u3"}}
	for i := range users {
		users[i].auth, users[i].first, users[i].stride, users[i].tasks, users[i].listETag = "Bearer x", 1, 1, 3, `W/"1"`
	}
	return users
}

// wrkCounter answers every request with answer's status and counts the
// requests by path and status, and the headers it was sent.
type wrkCounter struct {
	answer func(n int64, r *http.Request) int

	n           atomic.Int64
	mu          sync.Mutex
	counts      map[string]int // "GET /path 200"
	noAuth      int            // requests without the users' token
	ifNoneMatch int            // requests with If-None-Match: W/"1"
}

func (c *wrkCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := c.answer(c.n.Add(1), r)
	c.mu.Lock()
	c.counts[r.Method+" "+r.URL.Path+" "+strconv.Itoa(status)]++
	if r.Header.Get("Authorization") != "Bearer x" {
		c.noAuth++
	}
	if r.Header.Get("If-None-Match") == `W/"1"` {
		c.ifNoneMatch++
	}
	c.mu.Unlock()
	w.WriteHeader(status)
	if status != http.StatusNotModified {
		w.Write([]byte(`{"tasks":[]}`))
	}
}

func (c *wrkCounter) served() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.counts {
		n += k
	}
	return n
}

// testWrk starts a server with h and a wrkLoad on it; stop closes the
// server and waits for its handlers, after which the counts are final.
func testWrk(t *testing.T, h http.Handler) (w *wrkLoad, stop func()) {
	t.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skipf("wrk is not installed (apt-get install wrk): %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	w, err := newWrkLoad(t.TempDir(), &load{base: srv.URL, users: wrkUsers(), conns: wrkTestConns})
	if err != nil {
		t.Fatal(err)
	}
	return w, srv.Close
}

// checkWrkStats checks what holds for every run: latencies sorted and
// positive, the run as long as asked (plus wrk's stop, up to 100 ms), CPU
// spent, and every request the server served reported, but for at most one
// in flight per connection when wrk stopped.
func checkWrkStats(t *testing.T, st stats, cpu, d time.Duration, served int) {
	t.Helper()
	n := st.requests()
	t.Logf("%d requests in %s (%.0f/s), served %d; wrk CPU %s, %.1f µs per request; p50 %s, p99 %s",
		n, st.elapsed, st.rate(), served, cpu, float64(cpu.Microseconds())/float64(n), st.percentile(50), st.percentile(99))
	if n == 0 {
		t.Fatal("no requests")
	}
	if !slices.IsSorted(st.latencies) || st.latencies[0] <= 0 {
		t.Fatalf("latencies not sorted or not positive: first %s, sorted %v", st.latencies[0], slices.IsSorted(st.latencies))
	}
	if st.elapsed < d || st.elapsed > d+time.Second/2 {
		t.Fatalf("elapsed %s for a run of %s", st.elapsed, d)
	}
	if cpu <= 0 {
		t.Fatalf("wrk's CPU time %s", cpu)
	}
	// wrk stops with up to one request in flight per connection, which
	// the server answered (or will) and wrk never saw.
	if lost := served - n; lost < 0 || lost > wrkTestConns {
		t.Fatalf("wrk reported %d responses, the server served %d: want at most %d fewer", n, served, wrkTestConns)
	}
}

// list and list-304 send each user's list request with the users' token,
// and the ETag for list-304; the server's counts match wrk's.
func TestWrkList(t *testing.T) {
	for _, c := range []struct {
		scenario string
		status   int
	}{{"list", http.StatusOK}, {"list-304", http.StatusNotModified}} {
		t.Run(c.scenario, func(t *testing.T) {
			srv := &wrkCounter{counts: map[string]int{}, answer: func(_ int64, r *http.Request) int {
				if r.Header.Get("If-None-Match") == `W/"1"` {
					return http.StatusNotModified
				}
				return http.StatusOK
			}}
			w, stop := testWrk(t, srv)
			d := time.Second
			st, cpu, err := w.run(t.Context(), scenarioNamed(c.scenario), d)
			if err != nil {
				t.Fatal(err)
			}
			stop()
			served := srv.served()
			checkWrkStats(t, st, cpu, d, served)
			if st.errors() != 0 || st.firstError != "" {
				t.Fatalf("%d errors (%s)", st.errors(), st.firstError)
			}
			for _, u := range wrkUsers() {
				if k := "GET /api/" + u.id + "/tasks " + strconv.Itoa(c.status); srv.counts[k] < served/10 {
					t.Errorf("%d of %d requests %q", srv.counts[k], served, k)
				}
			}
			if len(srv.counts) != 3 || srv.noAuth != 0 {
				t.Errorf("requests %v, %d without the token", srv.counts, srv.noAuth)
			}
			if want := map[string]int{"list": 0, "list-304": served}[c.scenario]; srv.ifNoneMatch != want {
				t.Errorf("%d of %d requests had If-None-Match, want %d", srv.ifNoneMatch, served, want)
			}
		})
	}
}

// A status > 399 counts as unexpected, and says so in firstError.
func TestWrkCountsErrorStatuses(t *testing.T) {
	srv := &wrkCounter{counts: map[string]int{}, answer: func(n int64, _ *http.Request) int {
		if n%2 == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}}
	w, stop := testWrk(t, srv)
	d := time.Second
	st, cpu, err := w.run(t.Context(), scenarioNamed("get"), d)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	checkWrkStats(t, st, cpu, d, srv.served())
	// Every other request the server served failed; wrk missed at most
	// the conns it had in flight.
	if n := st.requests(); st.failed.unexpected < n/2-wrkTestConns || st.failed.unexpected > n/2+wrkTestConns ||
		st.failed.transport != 0 || st.failed.server != 0 {
		t.Fatalf("failed %+v of %d requests; want about half unexpected", st.failed, n)
	}
	if want := "responses with status > 399"; !strings.Contains(st.firstError, want) {
		t.Fatalf("firstError %q, want one saying %q", st.firstError, want)
	}
}

func TestWrkSupports(t *testing.T) {
	w := &wrkLoad{}
	for _, s := range scenarios {
		if got, want := w.supports(s), s.name != "delete" && s.name != "purge"; got != want {
			t.Errorf("supports(%s) = %v, want %v", s.name, got, want)
		}
	}
	for _, name := range []string{"list", "get", "changes", "list-304", "create", "update", "toggle", "mixed", "mcp-list"} {
		if !w.supports(scenarioNamed(name)) {
			t.Errorf("supports(%s) = false", name)
		}
	}
}

// Nothing listening: wrk refuses to start, and run says why.
func TestWrkCannotConnect(t *testing.T) {
	w, _ := testWrk(t, http.NotFoundHandler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.l.base = "http://" + ln.Addr().String()
	ln.Close()
	_, _, err = w.run(t.Context(), scenarioNamed("list"), time.Second)
	if err == nil || !strings.Contains(err.Error(), "unable to connect") {
		t.Fatalf("error %v, want wrk's unable to connect", err)
	}
}

// A server that answers some requests with what is not HTTP: those count
// as transport errors; one that answers none: wrk reconnects without
// counting errors, and run fails.
func TestWrkTransportErrors(t *testing.T) {
	garble := func(every int64) http.Handler {
		var n atomic.Int64
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%every != 0 {
				return
			}
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			buf.WriteString("not HTTP\r\n\r\n")
			buf.Flush()
			conn.Close()
		})
	}
	w, _ := testWrk(t, garble(2))
	st, _, err := w.run(t.Context(), scenarioNamed("get"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, failed %+v: %s", st.requests(), st.failed, st.firstError)
	if st.failed.transport == 0 || !strings.Contains(st.firstError, "socket errors") {
		t.Fatalf("failed %+v (%s), want transport errors", st.failed, st.firstError)
	}

	closer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	})
	w, _ = testWrk(t, closer)
	if _, _, err := w.run(t.Context(), scenarioNamed("get"), time.Second); err == nil || !strings.Contains(err.Error(), "no responses") {
		t.Fatalf("error %v, want no responses", err)
	}
}

// wrkCorrect is wrk 4.1.0's stats_correct: each latency n ≥ 2e adds a
// sample at n-e, n-2e, ... while above e.
func wrkCorrect(d map[int64]int64, e int64) map[int64]int64 {
	c := maps.Clone(d)
	for n, count := range d {
		for m := n - e; n >= 2*e && m > e; m -= e {
			c[m] += count
		}
	}
	return c
}

// stats undoes wrk's correction exactly, and refuses a histogram that does
// not come out as one latency per response.
func TestWrkResultUndoesTheCorrection(t *testing.T) {
	// 4 connections, 1 s, 1000 responses: e = 1e6 / (1000/4) = 4000 µs.
	measured := map[int64]int64{100: 500, 101: 300, 3999: 100, 4001: 50, 9000: 30, 12001: 10, 250000: 9, 400000: 1}
	res := wrkResult{duration: time.Second, requests: 1000, histogram: wrkCorrect(measured, 4000)}
	st, err := res.stats(4)
	if err != nil {
		t.Fatal(err)
	}
	var want []time.Duration
	for v, c := range measured {
		for range c {
			want = append(want, time.Duration(v)*time.Microsecond)
		}
	}
	slices.Sort(want)
	if !slices.Equal(st.latencies, want) || st.elapsed != time.Second {
		t.Fatalf("%d latencies, p99 %s, elapsed %s; want the %d measured, p99 %s", len(st.latencies), st.percentile(99), st.elapsed,
			len(want), stats{latencies: want}.percentile(99))
	}

	res.requests = 900
	if _, err := res.stats(4); err == nil || !strings.Contains(err.Error(), "after undoing its correction, for 900 responses") {
		t.Fatalf("a histogram of 1000 responses for 900: error %v", err)
	}
}

// done() reads the histogram through LuaJIT's FFI on this wrk, and
// latency(i), its fallback, works too; either way wrk has added samples to
// it (its correction, filling in below the tail), and stats finds one
// latency per response after undoing that.
func TestWrkHistogramReaders(t *testing.T) {
	var n atomic.Int64
	slowSome := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%200 == 0 { // a tail, which wrk's correction fills in
			time.Sleep(time.Duration(n.Load()%20) * time.Millisecond)
		}
	})
	w, _ := testWrk(t, slowSome)
	script := wrkScript(w.requests(scenarioNamed("get"), rand.New(rand.NewPCG(1, 2))), 1)
	fallback := bytes.Replace(script, []byte(`pcall(require, "ffi")`), []byte("false"), 1)
	if bytes.Equal(fallback, script) {
		t.Fatal("no FFI to switch off in the script")
	}
	for _, c := range []struct {
		source string
		script []byte
	}{{"ffi", script}, {"latency(i)", fallback}} {
		path := filepath.Join(w.dir, c.source+".lua")
		if err := os.WriteFile(path, c.script, 0o644); err != nil {
			t.Fatal(err)
		}
		res, cpu, err := w.exec(t.Context(), path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		total := int64(0)
		for _, k := range res.histogram {
			total += k
		}
		st, err := res.stats(wrkTestConns)
		t.Logf("%s: %d responses, %d in wrk's histogram, %d after undoing its correction; wrk CPU %s", res.source, res.requests, total, len(st.latencies), cpu)
		if err != nil {
			t.Fatal(err)
		}
		if res.source != c.source || total <= res.requests || int64(st.requests()) != res.requests {
			t.Fatalf("histogram read by %q, %d samples, %d latencies for %d responses; want %q, more samples, one latency each",
				res.source, total, st.requests(), res.requests, c.source)
		}
	}
}

func TestLuaQuote(t *testing.T) {
	if got, want := luaQuote("a\"b\\c\n\x00é1 ~"), `"a\"b\\c\010\000\195\1691 ~"`; got != want {
		t.Fatalf("luaQuote: %s, want %s", got, want)
	}
}

// mixed and mcp-list, for 50 users with real tokens: every request carries
// the headers the Go client sends, and bodies arrive whole.
func TestWrkSendsTheGoClientsHeaders(t *testing.T) {
	var mu sync.Mutex
	methods, bad := map[string]int{}, []string{}
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		ok := err == nil && strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey")
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			ok = ok && r.Header.Get("Content-Type") == "application/json" && json.Valid(body)
		}
		if r.URL.Path == "/mcp" {
			ok = ok && r.Header.Get("Accept") == "application/json, text/event-stream" && r.Header.Get("Mcp-Protocol-Version") == "2025-11-25"
		}
		mu.Lock()
		methods[r.Method]++
		if !ok && len(bad) < 3 {
			bad = append(bad, fmt.Sprintf("%s %s %q %s", r.Method, r.URL, r.Header, body))
		}
		mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	w, stop := testWrk(t, check)
	w.l.users = nil
	for n := 1; n <= seedUsers; n++ {
		u, err := newUser([]byte("secret"), strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		u.first, u.stride, u.tasks = int64(n-1)*seedTasksPerUser+1, 1, seedTasksPerUser
		w.l.users = append(w.l.users, u)
	}
	for _, name := range []string{"mixed", "mcp-list"} {
		st, _, err := w.run(t.Context(), scenarioNamed(name), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.errors() != 0 || st.requests() == 0 {
			t.Fatalf("%s: %d requests, %d errors (%s): %q", name, st.requests(), st.errors(), st.firstError, bad)
		}
	}
	stop()
	// mixed: 70+10 % GET, 10 % POST, 5 % PUT, 5 % PATCH; mcp-list: POST.
	t.Logf("methods: %v", methods)
	if methods["GET"] == 0 || methods["PUT"] == 0 || methods["PATCH"] == 0 || methods["POST"] <= methods["GET"]/8 {
		t.Fatalf("methods %v", methods)
	}
}

// A script wrk cannot load: wrk runs its default request and prints no
// result; exec says so and quotes wrk's complaint.
func TestWrkScriptError(t *testing.T) {
	w, _ := testWrk(t, http.NotFoundHandler())
	path := filepath.Join(w.dir, "broken.lua")
	if err := os.WriteFile(path, []byte("function done(\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := w.exec(t.Context(), path, time.Second)
	if err == nil || !strings.Contains(err.Error(), "no result from the script's done()") || !strings.Contains(err.Error(), "broken.lua") {
		t.Fatalf("error %v, want no result and wrk's message", err)
	}
}
