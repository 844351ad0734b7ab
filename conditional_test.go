package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// GET /tasks and GET /tasks/stats carry a weak ETag that changes whenever
// any of the user's tasks changes; If-None-Match with it is 304 with no body.
func TestConditionalLists(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	for _, path := range []string{"/api/me/tasks", "/api/me/tasks?status=pending&sort=title", "/api/me/tasks/stats"} {
		t.Run(path, func(t *testing.T) {
			empty := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).Header.Get("ETag")
			task := a.createTask(t, tok, `{"title":"x"}`)
			r := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK)
			tag := r.Header.Get("ETag")
			if !strings.HasPrefix(tag, `W/"`) || tag == empty {
				t.Fatalf("ETag %q (empty list: %q)", tag, empty)
			}
			nm := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", tag)), http.StatusNotModified)
			if len(nm.Body) != 0 || nm.Header.Get("ETag") != tag {
				t.Fatalf("304 with %q, ETag %q", nm.Body, nm.Header.Get("ETag"))
			}
			mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `"1", `+tag)), http.StatusNotModified)
			mustStatus(t, a.do(t, "GET", path, nil, bearer(otherTok), header("If-None-Match", tag)), http.StatusOK)
			for _, change := range []func(){
				func() { a.do(t, "PUT", taskURL(task.ID), `{"title":"y"}`, bearer(tok)) },
				func() { a.do(t, "PATCH", taskURL(task.ID)+"/complete", nil, bearer(tok)) },
				func() { a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)) },
				func() { a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", task.ID), nil, bearer(tok)) },
			} {
				change()
				r := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", tag)), http.StatusOK)
				if next := r.Header.Get("ETag"); next == tag {
					t.Fatalf("the ETag did not change with a change: %s", next)
				}
				tag = r.Header.Get("ETag")
			}
		})
	}
}

// The stats' overdue count grows as due dates pass, with no change of a
// task: their ETag stops matching then.
func TestStatsETagExpiresWhenADueDatePasses(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	due := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	a.createTask(t, tok, fmt.Sprintf(`{"title":"soon","due_date":%q}`, due))
	r := mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok)), http.StatusOK)
	tag := r.Header.Get("ETag")
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok), header("If-None-Match", tag)), http.StatusNotModified)
	time.Sleep(time.Until(time.Now().Add(1600 * time.Millisecond)))
	var st map[string]int
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok), header("If-None-Match", tag)), http.StatusOK).decode(t, &st)
	if st["overdue"] != 1 {
		t.Fatalf("stats %v", st)
	}
}
