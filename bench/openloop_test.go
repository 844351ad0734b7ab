package main

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
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
	ol := &openLoop{load: &load{client: newClient(maxInFlight), base: srv.URL, users: []user{{id: "1", auth: "Bearer t"}}},
		maxInFlight: maxInFlight}
	t.Cleanup(func() {
		ol.client.CloseIdleConnections()
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
	if r.late < 10 || r.capped < 1 {
		t.Fatalf("%d late, %d waited for a slot; want the requests scheduled during the stall in both", r.late, r.capped)
	}
}
