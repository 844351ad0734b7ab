package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCreateTask(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", map[string]any{
		"title":       "  Write the report  ",
		"description": "quarterly",
		"priority":    "high",
		"tags":        []string{" work ", "q4", "work", "urgent"},
		"due_date":    "2026-12-01T10:30:00.5+02:00",
	}, bearer(tok)), http.StatusCreated)
	got := r.task(t)

	if got.ID <= 0 || got.UserID != user || got.Title != "Write the report" || got.Description != "quarterly" ||
		got.Priority != "high" || got.Completed || got.CompletedAt != nil || got.Version != 1 {
		t.Fatalf("created %+v", got)
	}
	if !slices.Equal(got.Tags, []string{"work", "q4", "urgent"}) {
		t.Fatalf("tags %q: want trimmed, duplicates dropped, order kept", got.Tags)
	}
	if got.DueDate == nil || *got.DueDate != "2026-12-01T08:30:00.500000Z" {
		t.Fatalf("due_date %v: want UTC with microseconds", got.DueDate)
	}
	if got.CreatedAt != got.UpdatedAt || !strings.HasSuffix(got.CreatedAt, "Z") || len(got.CreatedAt) != len("2026-11-26T01:11:38.123456Z") {
		t.Fatalf("timestamps %q %q", got.CreatedAt, got.UpdatedAt)
	}
	if loc := r.Header.Get("Location"); loc != fmt.Sprintf("/api/%s/tasks/%d", user, got.ID) {
		t.Fatalf("Location %q", loc)
	}
	if r.Header.Get("ETag") != `"1"` {
		t.Fatalf("ETag %q", r.Header.Get("ETag"))
	}

	// A later read shows exactly the same JSON, timestamps included.
	again := mustStatus(t, a.do(t, "GET", fmt.Sprintf("/api/%s/tasks/%d", user, got.ID), nil, bearer(tok)), http.StatusOK)
	if string(again.Body) != string(r.Body) {
		t.Fatalf("read differs from create:\n%s\n%s", r.Body, again.Body)
	}
}

func TestCreateTaskDefaults(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	got := a.createTask(t, tok, map[string]any{"title": "x"})
	if got.Description != "" || got.Completed || got.Priority != "none" || got.Tags == nil || len(got.Tags) != 0 ||
		got.DueDate != nil || got.CompletedAt != nil {
		t.Fatalf("defaults %+v", got)
	}
	done := a.createTask(t, tok, map[string]any{"title": "done already", "completed": true})
	if !done.Completed || done.CompletedAt == nil || *done.CompletedAt != done.CreatedAt {
		t.Fatalf("created completed: %+v", done)
	}
}

// The boundaries themselves are accepted.
func TestCreateTaskLimits(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	tags := []string{}
	for i := range 25 {
		tags = append(tags, fmt.Sprintf("t%d", i%19)) // 19 distinct after dropping duplicates
	}
	got := a.createTask(t, tok, map[string]any{
		"title":       strings.Repeat("é", 200), // code points, not bytes
		"description": strings.Repeat("d", 1000),
		"tags":        append(tags, strings.Repeat("z", 50)[:50]),
	})
	if len([]rune(got.Title)) != 200 || len(got.Description) != 1000 {
		t.Fatalf("lengths %d %d", len([]rune(got.Title)), len(got.Description))
	}
	if len(got.Tags) != 20 {
		t.Fatalf("tags %d", len(got.Tags))
	}
}

// Every bad field is reported at once, and nothing is stored.
func TestCreateTaskValidation(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	manyTags := make([]string, 21)
	for i := range manyTags {
		manyTags[i] = fmt.Sprintf("tag%d", i)
	}
	cases := []struct {
		name   string
		body   any
		fields []string
	}{
		{"title missing", map[string]any{"description": "x"}, []string{"title"}},
		{"title empty", map[string]any{"title": ""}, []string{"title"}},
		{"title only spaces", map[string]any{"title": " \t\n "}, []string{"title"}},
		{"title too long", map[string]any{"title": strings.Repeat("a", 201)}, []string{"title"}},
		{"title not a string", map[string]any{"title": 42}, []string{"title"}},
		{"title null", map[string]any{"title": nil}, []string{"title"}},
		{"title with NUL", map[string]any{"title": "a\u0000b"}, []string{"title"}},
		{"description too long", map[string]any{"title": "x", "description": strings.Repeat("d", 1001)}, []string{"description"}},
		{"description with NUL", map[string]any{"title": "x", "description": "\u0000"}, []string{"description"}},
		{"completed not a bool", map[string]any{"title": "x", "completed": "yes"}, []string{"completed"}},
		{"completed null", map[string]any{"title": "x", "completed": nil}, []string{"completed"}},
		{"priority unknown", map[string]any{"title": "x", "priority": "urgent"}, []string{"priority"}},
		{"priority wrong case", map[string]any{"title": "x", "priority": "High"}, []string{"priority"}},
		{"tags not an array", map[string]any{"title": "x", "tags": "a,b"}, []string{"tags"}},
		{"tag not a string", map[string]any{"title": "x", "tags": []any{"a", 1}}, []string{"tags[1]"}},
		{"tag empty after trim", map[string]any{"title": "x", "tags": []string{"ok", "  "}}, []string{"tags[1]"}},
		{"tag too long", map[string]any{"title": "x", "tags": []string{strings.Repeat("t", 51)}}, []string{"tags[0]"}},
		{"too many tags", map[string]any{"title": "x", "tags": manyTags}, []string{"tags"}},
		{"tag with NUL", map[string]any{"title": "x", "tags": []string{"a\u0000"}}, []string{"tags[0]"}},
		{"due date bare", map[string]any{"title": "x", "due_date": "2026-12-01"}, []string{"due_date"}},
		{"due date without offset", map[string]any{"title": "x", "due_date": "2026-12-01T10:00:00"}, []string{"due_date"}},
		{"due date not a string", map[string]any{"title": "x", "due_date": 1764547200}, []string{"due_date"}},
		{"due date year 0", map[string]any{"title": "x", "due_date": "0000-01-01T00:00:00Z"}, []string{"due_date"}},
		{"unknown field", map[string]any{"title": "x", "colour": "red"}, []string{"colour"}},
		{"several at once", map[string]any{"title": "", "priority": "p0", "tags": 3, "due_date": "soon", "extra": 1},
			[]string{"title", "priority", "tags", "due_date", "extra"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", c.body, bearer(tok)), http.StatusUnprocessableEntity)
			p := r.problem(t)
			var got []string
			for _, e := range p.Errors {
				got = append(got, e.Field)
				if e.Message == "" {
					t.Errorf("no message for %s", e.Field)
				}
			}
			slices.Sort(got)
			want := slices.Clone(c.fields)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("fields %v, want %v (%s)", got, want, r.Body)
			}
		})
	}
	if n := len(a.listAll(t, tok, "")); n != 0 {
		t.Fatalf("%d tasks stored by invalid requests of %s", n, user)
	}
}

// Read-only fields are ignored, so a client can send back a task it received.
func TestReadOnlyFieldsIgnored(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	got := a.createTask(t, tok, map[string]any{"title": "x", "id": 999999, "user_id": "someone-else", "version": 7,
		"created_at": "2000-01-01T00:00:00Z", "updated_at": "bogus", "completed_at": 5})
	if got.ID == 999999 || got.UserID != user || got.Version != 1 || strings.HasPrefix(got.CreatedAt, "2000") {
		t.Fatalf("read-only fields were used: %+v", got)
	}
	// The whole task sent back unchanged is a valid update that changes nothing.
	r := mustStatus(t, a.do(t, "PUT", fmt.Sprintf("/api/me/tasks/%d", got.ID), got, bearer(tok)), http.StatusOK)
	if again := r.task(t); again.Version != got.Version || again.UpdatedAt != got.UpdatedAt {
		t.Fatalf("round trip changed the task: %+v", again)
	}
}

func TestBodyErrors(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	post := func(body string, opts ...reqOption) testResponse {
		return a.do(t, "POST", "/api/me/tasks", body, append([]reqOption{bearer(tok)}, opts...)...)
	}
	cases := []struct {
		name   string
		r      testResponse
		status int
	}{
		{"no content type", post(`{"title":"x"}`, header("Content-Type", "")), http.StatusUnsupportedMediaType},
		{"text/plain", post(`{"title":"x"}`, header("Content-Type", "text/plain")), http.StatusUnsupportedMediaType},
		{"malformed", post(`{"title":`), http.StatusBadRequest},
		{"trailing data", post(`{"title":"x"} {"title":"y"}`), http.StatusBadRequest},
		{"trailing garbage", post(`{"title":"x"}x`), http.StatusBadRequest},
		{"empty body", post(``), http.StatusBadRequest},
		{"invalid UTF-8", post("{\"title\":\"\xff\xfe\"}"), http.StatusBadRequest},
		{"array", post(`[{"title":"x"}]`), http.StatusUnprocessableEntity},
		{"string", post(`"title"`), http.StatusUnprocessableEntity},
		{"null", post(`null`), http.StatusUnprocessableEntity},
		{"duplicate member", post(`{"title":"x","title":"y"}`), http.StatusUnprocessableEntity},
		{"deeply nested", post(`{"title":"x","extra":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`), http.StatusUnprocessableEntity},
		{"huge number", post(`{"title":"x","id":1e999999}`), http.StatusCreated}, // read-only: ignored
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustStatus(t, c.r, c.status)
			if c.status >= 400 {
				c.r.problem(t)
			}
		})
	}
	// charset parameters are fine.
	mustStatus(t, post(`{"title":"x"}`, header("Content-Type", "application/json; charset=utf-8")), http.StatusCreated)
}

func TestUpdateTask(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	orig := a.createTask(t, tok, map[string]any{"title": "a", "description": "d", "tags": []string{"x"},
		"due_date": "2027-01-01T00:00:00Z", "priority": "low"})
	path := fmt.Sprintf("/api/me/tasks/%d", orig.ID)

	for i, method := range []string{"PUT", "PATCH"} {
		time.Sleep(2 * time.Millisecond)
		r := mustStatus(t, a.do(t, method, path, map[string]any{"title": fmt.Sprintf(" b%d ", i)}, bearer(tok)), http.StatusOK)
		got := r.task(t)
		if got.Title != fmt.Sprintf("b%d", i) || got.Description != "d" || got.Priority != "low" || got.Version != orig.Version+i+1 ||
			got.UpdatedAt <= orig.UpdatedAt || got.CreatedAt != orig.CreatedAt {
			t.Fatalf("%s: %+v", method, got)
		}
		if r.Header.Get("ETag") != fmt.Sprintf(`"%d"`, got.Version) {
			t.Fatalf("ETag %q", r.Header.Get("ETag"))
		}
	}
	cur := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).task(t)

	// An update that changes nothing is not a change.
	for _, body := range []any{map[string]any{}, map[string]any{"title": "b1", "priority": "low", "tags": []string{"x"}}} {
		got := mustStatus(t, a.do(t, "PATCH", path, body, bearer(tok)), http.StatusOK).task(t)
		if got.Version != cur.Version || got.UpdatedAt != cur.UpdatedAt {
			t.Fatalf("no-op update %v moved version/updated_at: %+v", body, got)
		}
	}

	// null clears description, tags and due_date.
	got := mustStatus(t, a.do(t, "PUT", path, map[string]any{"description": nil, "tags": nil, "due_date": nil}, bearer(tok)), http.StatusOK).task(t)
	if got.Description != "" || len(got.Tags) != 0 || got.DueDate != nil || got.Version != cur.Version+1 {
		t.Fatalf("after clearing: %+v", got)
	}

	// Invalid updates change nothing.
	before := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK)
	for _, body := range []any{
		map[string]any{"title": nil},
		map[string]any{"title": "ok", "priority": "meh"},
		map[string]any{"completed": 1},
		map[string]any{"nope": true},
	} {
		mustStatus(t, a.do(t, "PATCH", path, body, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
	}
	mustStatus(t, a.do(t, "PATCH", path, "", bearer(tok)), http.StatusBadRequest).problem(t)
	after := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK)
	if string(before.Body) != string(after.Body) {
		t.Fatalf("an invalid update changed the task:\n%s\n%s", before.Body, after.Body)
	}
}

func TestCompleteTask(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": "x"})
	path := fmt.Sprintf("/api/me/tasks/%d/complete", task.ID)

	// Empty body toggles.
	on := mustStatus(t, a.do(t, "PATCH", path, nil, bearer(tok)), http.StatusOK).task(t)
	if !on.Completed || on.CompletedAt == nil || on.Version != 2 {
		t.Fatalf("toggle on: %+v", on)
	}
	off := mustStatus(t, a.do(t, "PATCH", path, nil, bearer(tok)), http.StatusOK).task(t)
	if off.Completed || off.CompletedAt != nil || off.Version != 3 {
		t.Fatalf("toggle off: %+v", off)
	}
	// An explicit value sets it; setting it again changes nothing, completed_at included.
	set := mustStatus(t, a.do(t, "PATCH", path, `{"completed": true}`, bearer(tok)), http.StatusOK).task(t)
	time.Sleep(2 * time.Millisecond)
	again := mustStatus(t, a.do(t, "PATCH", path, `{"completed": true}`, bearer(tok)), http.StatusOK).task(t)
	if !set.Completed || again.Version != set.Version || *again.CompletedAt != *set.CompletedAt {
		t.Fatalf("set twice: %+v then %+v", set, again)
	}
	// completed through PUT keeps completed_at consistent too.
	put := mustStatus(t, a.do(t, "PUT", fmt.Sprintf("/api/me/tasks/%d", task.ID), `{"completed": false}`, bearer(tok)), http.StatusOK).task(t)
	if put.Completed || put.CompletedAt != nil {
		t.Fatalf("PUT completed=false: %+v", put)
	}

	for _, body := range []string{`{}`, `{"completed": "yes"}`, `{"completed": null}`, `{"completed": true, "title": "x"}`, `[true]`} {
		mustStatus(t, a.do(t, "PATCH", path, body, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
	}
	mustStatus(t, a.do(t, "PATCH", path, `{"completed": true, "id": 1, "version": 9}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PATCH", path, `{"completed":`, bearer(tok)), http.StatusBadRequest)
	mustStatus(t, a.do(t, "PATCH", path, `{"completed": true}`, bearer(tok), header("Content-Type", "text/plain")), http.StatusUnsupportedMediaType)
}

func TestDeleteTask(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": "x"})
	path := fmt.Sprintf("/api/me/tasks/%d", task.ID)
	r := mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok)), http.StatusNoContent)
	if len(r.Body) != 0 {
		t.Fatalf("204 with a body: %q", r.Body)
	}
	mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusNotFound).problem(t)
	mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok)), http.StatusNotFound).problem(t)
}

func TestTaskIDsThatAreNotPositiveIntegers(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	for _, id := range []string{"0", "-1", "abc", "01", "1.5", "9223372036854775808", "99999999999999999999", "1e3", "%20"} {
		for _, method := range []string{"GET", "PUT", "PATCH", "DELETE"} {
			var body any
			if method == "PUT" || method == "PATCH" {
				body = `{"title":"x"}`
			}
			mustStatus(t, a.do(t, method, "/api/me/tasks/"+id, body, bearer(tok)), http.StatusNotFound).problem(t)
		}
		mustStatus(t, a.do(t, "PATCH", "/api/me/tasks/"+id+"/complete", nil, bearer(tok)), http.StatusNotFound)
	}
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/9223372036854775807", nil, bearer(tok)), http.StatusNotFound)
}

func TestETagsAndConditionalRequests(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": "x"})
	path := fmt.Sprintf("/api/me/tasks/%d", task.ID)

	// If-None-Match with the current version: 304, with the ETag and no body.
	r := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `"1"`)), http.StatusNotModified)
	if r.Header.Get("ETag") != `"1"` || len(r.Body) != 0 {
		t.Fatalf("304: ETag %q body %q", r.Header.Get("ETag"), r.Body)
	}
	mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `W/"1"`)), http.StatusNotModified)
	mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `"7", "1"`)), http.StatusNotModified)
	mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `*`)), http.StatusNotModified)
	mustStatus(t, a.do(t, "GET", path, nil, bearer(tok), header("If-None-Match", `"2"`)), http.StatusOK)

	// If-Match with the current version writes; a stale one is 412 and changes nothing.
	mustStatus(t, a.do(t, "PUT", path, `{"title":"y"}`, bearer(tok), header("If-Match", `"1"`)), http.StatusOK)
	for _, stale := range []string{`"1"`, `W/"2"`, `2`, `"x"`, ``} {
		r := mustStatus(t, a.do(t, "PATCH", path, `{"title":"z"}`, bearer(tok), header("If-Match", stale)), http.StatusPreconditionFailed)
		if r.problem(t).Type != problemKinds[CodePreconditionFailed].typ {
			t.Fatalf("problem type %q", r.problem(t).Type)
		}
		mustStatus(t, a.do(t, "PATCH", path+"/complete", nil, bearer(tok), header("If-Match", stale)), http.StatusPreconditionFailed)
		mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok), header("If-Match", stale)), http.StatusPreconditionFailed)
	}
	cur := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).task(t)
	if cur.Title != "y" || cur.Version != 2 || cur.Completed {
		t.Fatalf("a refused write changed the task: %+v", cur)
	}
	mustStatus(t, a.do(t, "PATCH", path+"/complete", nil, bearer(tok), header("If-Match", `"1", "2"`)), http.StatusOK)
	mustStatus(t, a.do(t, "PUT", path, `{"title":"w"}`, bearer(tok), header("If-Match", `*`)), http.StatusOK)
	mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok), header("If-Match", `"4"`)), http.StatusNoContent)
	// A missing task is 404, whatever the precondition.
	mustStatus(t, a.do(t, "PUT", path, `{"title":"w"}`, bearer(tok), header("If-Match", `"4"`)), http.StatusNotFound)
}

// Another user's task is 404, never 403; the path must name the caller.
func TestIsolationBetweenUsers(t *testing.T) {
	a := startAPI(t)
	alice, aliceTok := a.newUser(t)
	bob, bobTok := a.newUser(t)
	task := a.createTask(t, aliceTok, map[string]any{"title": "alice's"})

	for _, path := range []string{fmt.Sprintf("/api/me/tasks/%d", task.ID), fmt.Sprintf("/api/%s/tasks/%d", bob, task.ID)} {
		mustStatus(t, a.do(t, "GET", path, nil, bearer(bobTok)), http.StatusNotFound)
		mustStatus(t, a.do(t, "PUT", path, `{"title":"mine"}`, bearer(bobTok)), http.StatusNotFound)
		mustStatus(t, a.do(t, "PATCH", path+"/complete", nil, bearer(bobTok)), http.StatusNotFound)
		mustStatus(t, a.do(t, "DELETE", path, nil, bearer(bobTok)), http.StatusNotFound)
	}
	// Naming alice in the path with bob's token is 403, on every route.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/" + alice + "/tasks"}, {"POST", "/api/" + alice + "/tasks"}, {"GET", "/api/" + alice + "/tasks/stats"},
		{"GET", fmt.Sprintf("/api/%s/tasks/%d", alice, task.ID)}, {"DELETE", fmt.Sprintf("/api/%s/tasks/%d", alice, task.ID)},
	} {
		var body any
		if c.method == "POST" {
			body = `{"title":"x"}`
		}
		mustStatus(t, a.do(t, c.method, c.path, body, bearer(bobTok)), http.StatusForbidden).problem(t)
	}
	if n := len(a.listAll(t, bobTok, "")); n != 0 {
		t.Fatalf("bob sees %d tasks", n)
	}
	got := mustStatus(t, a.do(t, "GET", fmt.Sprintf("/api/%s/tasks/%d", alice, task.ID), nil, bearer(aliceTok)), http.StatusOK).task(t)
	if got.Title != "alice's" || got.Version != 1 {
		t.Fatalf("alice's task changed: %+v", got)
	}
}

func TestUnknownQueryParameters(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": "x"})
	for _, path := range []string{"/api/me/tasks?colour=red", "/api/me/tasks/stats?x=1", fmt.Sprintf("/api/me/tasks/%d?x=1", task.ID),
		"/api/me/tasks?status=all&status=pending", "/api/me/tasks?" + strings.Repeat("p=1&", 2000)} {
		mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
	}
	mustStatus(t, a.do(t, "GET", "/api/me/tasks?q=%zz", nil, bearer(tok)), http.StatusBadRequest).problem(t)
}

func TestStats(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	past, future := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	a.createTask(t, tok, map[string]any{"title": "overdue", "due_date": past})
	a.createTask(t, tok, map[string]any{"title": "due later", "due_date": future})
	a.createTask(t, tok, map[string]any{"title": "done, was due", "due_date": past, "completed": true})
	a.createTask(t, tok, map[string]any{"title": "no due date"})
	_, other := a.newUser(t)
	a.createTask(t, other, map[string]any{"title": "someone else's", "due_date": past})

	var st map[string]int
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok)), http.StatusOK).decode(t, &st)
	want := map[string]int{"total": 4, "completed": 1, "pending": 3, "overdue": 1}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("stats %v, want %v", st, want)
	}
}
