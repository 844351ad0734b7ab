package main

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The open loop's tests run against a server in the test process and
// assert on counts and orderings, with generous bounds: a loaded machine
// only makes latencies longer and the generator later.

// stallOnce answers at once, except its stallAt-th request, which it holds
// for stall; it counts the requests that arrive meanwhile.
type stallOnce struct {
	stallAt  int64
	stall    time.Duration
	n        atomic.Int64
	stalling atomic.Bool
	during   atomic.Int64
}

func (s *stallOnce) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := s.n.Add(1)
	switch {
	case k == s.stallAt:
		s.stalling.Store(true)
		time.Sleep(s.stall)
		s.stalling.Store(false)
	case s.stalling.Load():
		s.during.Add(1)
	}
}

var getRoot = newScenario("root", weightedOp{op{build: func(*rand.Rand, *user) request {
	return request{method: http.MethodGet, path: "/", want: http.StatusOK}
}}, 1})

func testOpenLoop(t *testing.T, h http.Handler, maxInFlight int) *openLoop {
	t.Helper()
	srv := httptest.NewServer(h)
	ol, err := newOpenLoop(srv.URL, []user{{id: "1", auth: "Bearer t"}}, maxInFlight)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ol.client.c.CloseIdleConnections()
		srv.Close()
	})
	return ol
}

// Every scheduled request is sent, and no faster than the rate.
func TestOpenLoopHoldsTheRate(t *testing.T) {
	ol := testOpenLoop(t, &stallOnce{}, openLoopMaxInFlight)
	r := ol.run(t.Context(), getRoot, 400, 500*time.Millisecond)
	if r.st.requests() != 200 || r.st.errors() != 0 {
		t.Fatalf("%d requests, %d errors (%s); want 200 and none", r.st.requests(), r.st.errors(), r.st.firstError)
	}
	if ratio := r.achieved / r.target; ratio < 0.5 || ratio > 1.001 {
		t.Fatalf("achieved %.0f req/s of %.0f: ratio %.2f", r.achieved, r.target, ratio)
	}
}

// A request that stalls does not hold back the ones scheduled after it:
// they reach the server while it stalls.
func TestOpenLoopSendsThroughAStall(t *testing.T) {
	srv := &stallOnce{stallAt: 10, stall: 200 * time.Millisecond}
	ol := testOpenLoop(t, srv, openLoopMaxInFlight)
	r := ol.run(t.Context(), getRoot, 200, 500*time.Millisecond)
	if r.st.requests() != 100 || r.st.errors() != 0 {
		t.Fatalf("%d requests, %d errors (%s); want 100 and none", r.st.requests(), r.st.errors(), r.st.firstError)
	}
	// About 40 are scheduled during the stall.
	if n := srv.during.Load(); n < 5 {
		t.Fatalf("%d requests reached the server during the stall; the schedule waited for the stalled one", n)
	}
	if r.capped != 0 {
		t.Fatalf("%d requests waited for a slot", r.capped)
	}
}

// When the generator itself cannot send on time (here one request in
// flight at most, so the stalled one holds back the rest), each request
// is still timed from its intended start: the requests scheduled during
// the stall carry the time they waited to be sent (wrk2's correction of
// coordinated omission), where timing from the send would show one slow
// request.
func TestOpenLoopCountsTheWaitOfHeldBackRequests(t *testing.T) {
	srv := &stallOnce{stallAt: 10, stall: 200 * time.Millisecond}
	ol := testOpenLoop(t, srv, 1)
	r := ol.run(t.Context(), getRoot, 200, 500*time.Millisecond)
	if r.st.requests() != 100 || r.st.errors() != 0 {
		t.Fatalf("%d requests, %d errors (%s); want 100 and none", r.st.requests(), r.st.errors(), r.st.firstError)
	}
	if n := srv.during.Load(); n != 0 {
		t.Fatalf("%d requests reached the server during the stall, past the limit of one in flight", n)
	}
	// The stalled request and the ~20 scheduled in the first 100 ms of the
	// stall each took at least 100 ms from their intended start.
	slow := 0
	for _, d := range r.st.latencies {
		if d >= 100*time.Millisecond {
			slow++
		}
	}
	if slow < 10 {
		t.Fatalf("%d requests took 100 ms or more from their intended start; want the ~20 scheduled during the stall", slow)
	}
	if r.late < 10 || r.capped < 1 || r.lag < 100*time.Millisecond {
		t.Fatalf("%d late (p99 %s), %d waited for a slot; want the requests scheduled during the stall in both", r.late, r.lag, r.capped)
	}
}

func TestParseOpenLoop(t *testing.T) {
	for _, c := range []struct {
		args      []string
		scenarios []string
		err       string
	}{
		{args: []string{"-openloop"}, scenarios: scenarioNames()},
		{args: []string{"-openloop", "-scenarios", "create,delete", "-duration", "5s"}, scenarios: []string{"create", "delete"}},
		{args: []string{"-openloop", "-soak", "1m"}, err: "separate runs"},
		{args: []string{"-openloop", "-ratelimit"}, err: "separate runs"},
		{args: []string{"-openloop", "-fanout"}, err: "separate runs"},
		{args: []string{"-openloop", "-baseline", "cdb29a8"}, err: "-baseline goes with the table"},
	} {
		o, err := parseOptions(c.args, io.Discard)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one saying %q", c.args, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.args, err)
		case c.err == "" && (!o.openLoop || !slices.Equal(o.scenarios, c.scenarios)):
			t.Errorf("%q: openLoop %v, scenarios %q; want true, %q", c.args, o.openLoop, o.scenarios, c.scenarios)
		}
	}
	if o, err := parseOptions(nil, io.Discard); err != nil || o.openLoop {
		t.Fatalf("the table: openLoop %v, error %v", o.openLoop, err)
	}
}

// The section says how the rate was held and coordinated omission avoided,
// and marks the goal at 50 % per scenario; a miss fails the run.
func TestOpenLoopSection(t *testing.T) {
	ms := time.Millisecond
	scenario := func(name string, p99 time.Duration) openLoopScenario {
		r := openLoopScenario{name: name, capacity: stats{elapsed: time.Second, latencies: make([]time.Duration, 400)}}
		for _, share := range openLoopShares {
			lat := make([]time.Duration, 100)
			for i := range lat {
				lat[i] = ms
			}
			lat[98], lat[99] = p99, p99
			r.runs = append(r.runs, openLoopRun{share: share, target: share * 400, achieved: share * 400,
				st: stats{elapsed: time.Second, latencies: lat}})
		}
		return r
	}
	create := scenario("create", 12*ms)
	create.runs[0].cpu = &cpuUse{machine: 1200 * ms, stolen: 100 * ms} // of 2 cores × 1 s
	create.runs[0].stalls = &hostStalls{realtime: true, wakeups: 900, max: 15 * ms, over: 3}
	create.runs[1].stalls = &hostStalls{wakeups: 900, max: 15 * ms} // not at real-time priority: not reported
	create.runs[1].alone = &stats{elapsed: time.Second, latencies: []time.Duration{ms, 2 * ms, 3 * ms, 15 * ms}, failed: errorCounts{server: 1}}
	rep := openLoopReport{host: host{cores: 2, date: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}, o: options{conns: 32, pool: 6, warmup: time.Second, duration: 5 * time.Second},
		users: 50, scenarios: []openLoopScenario{scenario("get", 4*ms), create}}
	page := withSection("", "openloop", rep.section("go run ./bench -openloop -out docs/performance.md"))
	inOrder(t, page,
		"<!-- bench:openloop -->\n## Latency at normal load", "Measured 2026-12-02 10:00 UTC", "```sh\ngo run ./bench -openloop -out docs/performance.md\n```",
		"*How the rate is held constant.*", "t0 + i/rate", "*How coordinated omission is avoided.*", "from the request's intended start",
		"| get | 400 | 25 % | 100 | 100 | 100 | 1.00 ms | 4.00 ms |", "|  |  | 50 % | 200 |", "| create | 400 | 25 % | 100 | 100 | 100 | 1.00 ms | 12.00 ms | 12.00 ms | 12.00 ms | 0 | 0 | 0.00 ms | 0 | 60 % | 5 % | 15.00 ms (3) |",
		"|  |  | 50 % | 200 | 200 | 100 | 1.00 ms | 12.00 ms | 12.00 ms | 12.00 ms | 0 | 0 | 0.00 ms | 0 | ? | ? | ? |", "*Host stall*",
		"### PostgreSQL alone at the same rate", "on 6 connections",
		"| create | 200 | 1.00 ms | 12.00 ms | 12.00 ms | 4 | 2.00 ms | 15.00 ms | 15.00 ms | 1 |",
		"- get: p99 4.00 ms at 200 req/s: met.", "- create: p99 12.00 ms at 200 req/s (PostgreSQL alone at that rate: 15.00 ms): missed.",
		"1 of 2 scenarios met the goal.", "<!-- /bench:openloop -->",
	)
	if strings.Contains(page, "| get | 200 |") {
		t.Error("a row of PostgreSQL alone for get, which pgbench did not run")
	}
	if got, want := rep.missed(), "p99 > 10.00 ms at 50 % of capacity: create"; got != want {
		t.Fatalf("missed: %q, want %q", got, want)
	}
}

// pgbench's per-transaction log: each line's time (µs) is a latency; a
// transaction pgbench calls failed or skipped is an error.
func TestParseTransactionLog(t *testing.T) {
	var st stats
	log := "0 1 1250 0 1796211594 123456 40\n1 1 980 0 1796211594 223456 12\n0 2 failed 0 1796211595 1 0\n"
	if err := parseTransactionLog([]byte(log), &st); err != nil {
		t.Fatal(err)
	}
	if err := parseTransactionLog([]byte("3 7 15000 1 1796211596 5 2\n"), &st); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{1250 * time.Microsecond, 980 * time.Microsecond, 15 * time.Millisecond}
	if !slices.Equal(st.latencies, want) || st.errors() != 1 || !strings.Contains(st.firstError, "failed") {
		t.Fatalf("latencies %v, errors %d (%q); want %v and the failed one", st.latencies, st.errors(), st.firstError, want)
	}
	if err := parseTransactionLog([]byte("0 1 1250\n"), &st); err == nil {
		t.Fatal("a line of three fields parsed")
	}
}
