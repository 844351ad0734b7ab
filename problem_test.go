package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Every error response, whichever middleware or handler refused the request,
// is problem+json and is logged in the request's one line with its status,
// code and request id, and the user once the token has named one.
func TestErrorsAreWrittenAndLoggedAlike(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.rateLimit = 1 })
	user, tok := a.newUser(t)
	cases := []struct {
		name     string
		method   string
		path     string
		body     any
		opts     []reqOption
		status   int
		code     string
		withUser bool
	}{
		{"no token", "GET", "/api/me/tasks", nil, nil, 401, "unauthenticated", false},
		{"bad token", "GET", "/api/me/tasks", nil, []reqOption{bearer("x.y.z")}, 401, "invalid_token", false},
		{"another user's path", "GET", "/api/someone-else/tasks", nil, []reqOption{bearer(tok)}, 403, "forbidden", true},
		{"invalid body", "POST", "/api/me/tasks", `{"title":""}`, []reqOption{bearer(tok)}, 422, "invalid", true},
		{"over the rate", "GET", "/api/me/tasks", nil, []reqOption{bearer(tok)}, 429, "rate_limited", true},
		{"unknown route", "GET", "/nope", nil, nil, 404, "not_found", false},
		{"wrong method", "DELETE", "/healthz", nil, nil, 405, "method_not_allowed", false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprintf("err-line-%d", i)
			opts := append([]reqOption{header("X-Request-Id", id)}, c.opts...)
			if c.code == "rate_limited" {
				for range 5 { // the bucket holds 2: empty it
					a.do(t, c.method, c.path, c.body, opts...)
				}
			}
			r := mustStatus(t, a.do(t, c.method, c.path, c.body, opts...), c.status)
			if p := r.problem(t); p.Status != c.status || p.Detail == "" || p.RequestID != id {
				t.Fatalf("problem %+v", p)
			}
			line := logLine(t, a, id)
			if line["status"] != float64(c.status) || line["code"] != c.code || line["request_id"] != id {
				t.Fatalf("log line %v", line)
			}
			if got, _ := line["user_id"].(string); (got == user) != c.withUser {
				t.Fatalf("log line user %q (want it: %v)", got, c.withUser)
			}
		})
	}
}

// logLine is the last log line of the request with this id.
func logLine(t *testing.T, a *testAPI, requestID string) map[string]any {
	t.Helper()
	var line map[string]any
	for _, l := range strings.Split(a.logs.String(), "\n") {
		if strings.Contains(l, `"request_id":"`+requestID+`"`) && strings.Contains(l, `"msg":"request"`) {
			line = nil
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("no log line for %s:\n%s", requestID, a.logs)
	}
	return line
}

// Every 422 names its fields, including the reuse of an Idempotency-Key.
func TestIdempotencyKeyReuseNamesTheHeader(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"a"}`, bearer(tok), idemKey("named")), http.StatusCreated)
	p := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"b"}`, bearer(tok), idemKey("named")),
		http.StatusUnprocessableEntity).problem(t)
	if len(p.Errors) != 1 || p.Errors[0].Field != "Idempotency-Key" || p.Errors[0].Message == "" {
		t.Fatalf("errors %+v", p.Errors)
	}
}

// A transaction bounds its lock waits with SET LOCAL lock_timeout, so the
// bound holds behind a transaction-mode pooler too (the pgbouncer pass runs
// this test there): a keyed update stuck behind another session's row lock
// is answered 503 at the lock timeout, long before the request's deadline,
// changes nothing, and its key can be used again.
func TestTransactionsBoundTheirLockWaits(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.lockTime = 300 * time.Millisecond; o.timeout = 8 * time.Second })
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"locked"}`)
	_, release := lockTaskRow(t, a.dbURL, task.ID)
	path := fmt.Sprintf("/api/me/tasks/%d", task.ID)

	start := time.Now()
	r := mustStatus(t, a.do(t, "PUT", path, `{"title":"changed"}`, bearer(tok), idemKey("bounded")), http.StatusServiceUnavailable)
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("answered after %s: the lock timeout did not hold", took)
	}
	if r.problem(t).Type != problemKinds[CodeUnavailable].typ || r.Header.Get("Retry-After") == "" {
		t.Fatal(r)
	}
	release()
	got := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).task(t)
	if got.Title != "locked" || got.Version != task.Version {
		t.Fatalf("the refused update changed the task: %+v", got)
	}
	if got := mustStatus(t, a.do(t, "PUT", path, `{"title":"changed"}`, bearer(tok), idemKey("bounded")), http.StatusOK).task(t); got.Title != "changed" {
		t.Fatalf("the retry: %+v", got)
	}
}
