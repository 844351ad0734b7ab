package main

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// A user over the rate gets 429 with Retry-After and nothing is done; other
// users are served meanwhile.
func TestRateLimit(t *testing.T) {
	// The limiter's clock moves only when the test says, so a slow request
	// (race detector, a busy machine) cannot refill the bucket behind its back.
	clock := &manualClock{now: time.Unix(1_800_000_000, 0)}
	a := startAPI(t, func(o *apiOptions) { o.rateLimit = 5; o.clock = clock.Now }) // burst 10
	user, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	for i := range 10 {
		mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK)
		_ = i
	}
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"over the limit"}`, bearer(tok)), http.StatusTooManyRequests)
	if p := r.problem(t); p.Type != problemKinds[CodeRateLimited].typ {
		t.Fatalf("type %q", p.Type)
	}
	if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	if n := a.countTasks(t, user); n != 0 {
		t.Fatal("a refused request was executed")
	}
	mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(otherTok)), http.StatusOK)
	// Every /api route counts, errors included; the bucket refills at the rate.
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/1", nil, bearer(tok)), http.StatusTooManyRequests)
	clock.advance(250 * time.Millisecond) // 5/s: one token, and a quarter
	mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusTooManyRequests)
	// Health checks are not limited.
	for range 20 {
		mustStatus(t, a.do(t, "GET", "/healthz", nil), http.StatusOK)
	}
}

func TestRateLimitOff(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.rateLimit = 0 })
	_, tok := a.newUser(t)
	for range 150 {
		mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok)), http.StatusOK)
	}
}

// manualClock is a clock that moves only when told to.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Buckets of idle users are dropped once they would be full again.
func TestRateLimiterReclaimsIdleUsers(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := newRateLimiter(50, func() time.Time { return now })
	for i := range 1000 {
		if ok, _ := l.allow(fmt.Sprintf("u%d", i)); !ok {
			t.Fatal("first request refused")
		}
	}
	for range 100 {
		l.allow("busy")
	}
	if ok, wait := l.allow("busy"); ok || wait <= 0 {
		t.Fatalf("101st request in the same instant: ok=%v wait=%v", ok, wait)
	}
	if n := l.sweep(); n != 1001 {
		t.Fatalf("%d buckets kept right away, want all", n)
	}
	now = now.Add(3 * time.Second) // burst 100 at 50/s refills in 2s
	if n := l.sweep(); n != 0 {
		t.Fatalf("%d buckets kept after they refilled", n)
	}
	if ok, _ := l.allow("busy"); !ok {
		t.Fatal("a reclaimed user starts with a full bucket")
	}
}

func TestQuota(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = 3 })
	user, tok := a.newUser(t)
	var ids []int64
	for i := range 3 {
		ids = append(ids, a.createTask(t, tok, map[string]any{"title": fmt.Sprint(i)}).ID)
	}
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"one too many"}`, bearer(tok)), http.StatusConflict)
	if p := r.problem(t); p.Type != problemKinds[CodeQuotaExceeded].typ {
		t.Fatalf("type %q", p.Type)
	}
	if n := a.countTasks(t, user); n != 3 {
		t.Fatalf("%d tasks", n)
	}
	// Deleting frees a slot; a refused delete does not.
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/tasks/%d", ids[0]), nil, bearer(tok), header("If-Match", `"9"`)), http.StatusPreconditionFailed)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"still full"}`, bearer(tok)), http.StatusConflict)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/tasks/%d", ids[0]), nil, bearer(tok)), http.StatusNoContent)
	a.createTask(t, tok, map[string]any{"title": "fits again"})
	// Other users have their own quota.
	_, otherTok := a.newUser(t)
	a.createTask(t, otherTok, map[string]any{"title": "mine"})
}

// Twenty parallel creates at quota − 1 leave exactly quota tasks.
func TestQuotaRace(t *testing.T) {
	const quota = 25
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = quota })
	b := startAPI(t, func(o *apiOptions) { o.maxTasks = quota; o.dbURL = testPG(t).sharedURL })
	user, tok := a.newUser(t)
	for i := range quota - 1 {
		a.createTask(t, tok, map[string]any{"title": fmt.Sprint(i)})
	}
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst := a
			if i%2 == 1 {
				inst = b
			}
			statuses[i] = inst.do(t, "POST", "/api/me/tasks", fmt.Sprintf(`{"title":"race %d"}`, i), bearer(tok)).Status
		}()
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Fatalf("status %d", s)
		}
	}
	if n := a.countTasks(t, user); created != 1 || n != quota {
		t.Fatalf("%d creates succeeded, %d tasks stored; want 1 and %d", created, n, quota)
	}
}
