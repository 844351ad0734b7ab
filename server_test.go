package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestHealthAndReadiness(t *testing.T) {
	a := startAPI(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		r := mustStatus(t, a.do(t, "GET", path, nil), http.StatusOK)
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Type %q", path, r.Header.Get("Content-Type"))
		}
	}
}

// /readyz is 503 while migrations are pending, and while the database does not answer.
func TestReadinessFailures(t *testing.T) {
	t.Run("migrations pending", func(t *testing.T) {
		a := startAPI(t, func(o *apiOptions) { o.dbURL = newDatabase(t, false) })
		r := mustStatus(t, a.do(t, "GET", "/readyz", nil), http.StatusServiceUnavailable)
		if p := r.problem(t); !strings.Contains(p.Detail, "migrations are pending") {
			t.Fatalf("detail %q", p.Detail)
		}
		mustStatus(t, a.do(t, "GET", "/healthz", nil), http.StatusOK)
	})
	t.Run("database gone", func(t *testing.T) {
		url := newDatabase(t, true)
		a := startAPI(t, func(o *apiOptions) { o.dbURL = url })
		mustStatus(t, a.do(t, "GET", "/readyz", nil), http.StatusOK)
		if err := adminExec(t.Context(), testPG(t).adminURL, "DROP DATABASE "+databaseName(url)+" WITH (FORCE)"); err != nil {
			t.Fatal(err)
		}
		r := mustStatus(t, a.do(t, "GET", "/readyz", nil), http.StatusServiceUnavailable)
		if p := r.problem(t); !strings.Contains(p.Detail, "database does not answer") || strings.Contains(p.Detail, "tasks_test") || r.Header.Get("Retry-After") == "" {
			t.Fatalf("problem %+v, Retry-After %q", p, r.Header.Get("Retry-After"))
		}
		mustStatus(t, a.do(t, "GET", "/healthz", nil), http.StatusOK)
		// A task route answers 503 too, quickly, not a hang or a 500.
		_, tok := a.newUser(t)
		r = a.do(t, "GET", "/api/me/tasks", nil, bearer(tok))
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s\n%s", r, a.logs)
		}
		if r.problem(t).Type != problemKinds[CodeUnavailable].typ {
			t.Fatalf("problem type %q", r.problem(t).Type)
		}
	})
}

func TestUnknownRouteAndWrongMethodAreProblems(t *testing.T) {
	a := startAPI(t)
	r := mustStatus(t, a.do(t, "GET", "/no/such/route", nil), http.StatusNotFound)
	r.problem(t)
	r = mustStatus(t, a.do(t, "DELETE", "/healthz", nil), http.StatusMethodNotAllowed)
	r.problem(t)
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Fatalf("Allow %q", allow)
	}
	_, tok := a.newUser(t)
	r = mustStatus(t, a.do(t, "POST", "/api/me/tasks/1", `{}`, bearer(tok)), http.StatusMethodNotAllowed)
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "PUT") || !strings.Contains(allow, "PATCH") || !strings.Contains(allow, "DELETE") {
		t.Fatalf("Allow %q", allow)
	}
	r = mustStatus(t, a.do(t, "GET", "/api/me/tasks/1/complete", nil, bearer(tok)), http.StatusMethodNotAllowed)
	if allow := r.Header.Get("Allow"); allow != "PATCH" {
		t.Fatalf("Allow %q", allow)
	}
}

func TestRequestID(t *testing.T) {
	a := startAPI(t)
	r := a.do(t, "GET", "/healthz", nil, header("X-Request-Id", "abc-123.x_y:z"))
	if got := r.Header.Get("X-Request-Id"); got != "abc-123.x_y:z" {
		t.Fatalf("echoed id %q", got)
	}
	if !strings.Contains(a.logs.String(), `"request_id":"abc-123.x_y:z"`) {
		t.Fatal("the request id is not in the log line")
	}
	for _, bad := range []string{"has space", strings.Repeat("x", 129), "semi;colon", "ünï"} {
		r := a.do(t, "GET", "/healthz", nil, header("X-Request-Id", bad))
		if got := r.Header.Get("X-Request-Id"); got == bad || !validRequestID(got) {
			t.Errorf("invalid id %q answered with %q", bad, got)
		}
	}
	r1, r2 := a.do(t, "GET", "/nope", nil), a.do(t, "GET", "/nope", nil)
	id1, id2 := r1.Header.Get("X-Request-Id"), r2.Header.Get("X-Request-Id")
	if id1 == "" || id1 == id2 || r1.problem(t).RequestID != id1 {
		t.Fatalf("generated ids %q %q", id1, id2)
	}
}

// One structured line per request, with route, status and user; never the token.
func TestAccessLog(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	a.do(t, "GET", "/api/me/tasks", nil, bearer(tok), header("X-Request-Id", "log-line-1"))
	var line map[string]any
	for _, l := range strings.Split(a.logs.String(), "\n") {
		if strings.Contains(l, "log-line-1") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line["msg"] != "request" || line["method"] != "GET" || line["route"] != "GET /api/{user_id}/tasks" ||
		line["status"] != float64(200) || line["user_id"] != user || line["duration"] == nil || line["bytes"] == nil {
		t.Fatalf("log line %v", line)
	}
	if strings.Contains(a.logs.String(), tok) || strings.Contains(a.logs.String(), testSecret) {
		t.Fatal("a token or the secret reached the log")
	}
}

// The access line's exact text form, key by key in order, for a success and
// for a 500 (its code and cause, at error level): whatever builds the line,
// log readers and their parsers see the same thing.
func TestAccessLogLine(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := logRequests(log, nil)(serveRoute("GET /t/{id}", func(w http.ResponseWriter, r *http.Request) error {
		r = withIdentity(r, identity{Sub: "u1"})
		if r.PathValue("id") == "fail" {
			return fmt.Errorf("read task: %w", errors.New("disk on fire"))
		}
		writeJSON(w, r, http.StatusOK, []byte(`{}`))
		return nil
	}))
	mux := http.NewServeMux()
	mux.Handle("GET /t/{id}", h)
	for _, c := range []struct{ path, want string }{
		{"/t/1", `^time=\S+ level=INFO msg=request method=GET route="GET /t/{id}" path=/t/1 status=200 ` +
			`duration=\d[\d.]*[nµm]?s bytes=2 request_id=line-1 user_id=u1\n$`},
		{"/t/fail", `^time=\S+ level=ERROR msg=request method=GET route="GET /t/{id}" path=/t/fail status=500 ` +
			`duration=\d[\d.]*[nµm]?s bytes=\d+ request_id=line-1 user_id=u1 code=internal ` +
			`error="read task: disk on fire"\n$`},
	} {
		logs.Reset()
		req := httptest.NewRequest("GET", c.path, nil)
		req.Header.Set("X-Request-Id", "line-1")
		mux.ServeHTTP(httptest.NewRecorder(), req)
		if !regexp.MustCompile(c.want).MatchString(logs.String()) {
			t.Errorf("%s: log line\n%s\ndoes not match\n%s", c.path, logs.String(), c.want)
		}
	}
}

// A panicking handler becomes a 500 problem and a logged stack; the server goes on.
func TestPanicRecovery(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	mux.HandleFunc("GET /fine", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, r, 200, []byte(`{}`)) })
	srv := httptest.NewServer(logRequests(log, nil)(recoverPanics(log)(mux)))
	defer srv.Close()
	a := &testAPI{URL: srv.URL, client: srv.Client()}

	r := mustStatus(t, a.do(t, "GET", "/boom", nil), http.StatusInternalServerError)
	if p := r.problem(t); strings.Contains(p.Detail, "kaboom") {
		t.Fatal("the panic value leaked to the client")
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "kaboom") ||
		!strings.Contains(logs.String(), "goroutine") {
		t.Fatalf("no stack in the log:\n%s", logs)
	}
	mustStatus(t, a.do(t, "GET", "/fine", nil), http.StatusOK)
}

func TestRequestSizeLimits(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	r := mustStatus(t, a.do(t, "GET", "/api/me/tasks?q="+strings.Repeat("a", 9000), nil, bearer(tok)), http.StatusRequestURITooLong)
	r.problem(t)
	r = mustStatus(t, a.do(t, "GET", "/healthz", nil, header("X-Big", strings.Repeat("b", 100<<10))), http.StatusRequestHeaderFieldsTooLarge)
	r.problem(t)
	body := `{"title":"` + strings.Repeat("x", 70<<10) + `"}`
	r = mustStatus(t, a.do(t, "POST", "/api/me/tasks", body, bearer(tok)), http.StatusRequestEntityTooLarge)
	r.problem(t)
}

func TestCORS(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.origins = []string{"https://app.example.com"} })
	_, tok := a.newUser(t)

	pre := mustStatus(t, a.do(t, "OPTIONS", "/api/me/tasks", nil,
		header("Origin", "https://app.example.com"), header("Access-Control-Request-Method", "POST"),
		header("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")), http.StatusNoContent)
	want := map[string]string{
		"Access-Control-Allow-Origin":  "https://app.example.com",
		"Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
		"Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, Last-Event-ID, " +
			"Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name",
	}
	for k, v := range want {
		if got := pre.Header.Get(k); got != v {
			t.Errorf("preflight %s = %q, want %q", k, got, v)
		}
	}
	if !strings.Contains(strings.Join(pre.Header.Values("Vary"), ","), "Origin") {
		t.Error("preflight lacks Vary: Origin")
	}

	// Errors carry the CORS headers too, so the frontend can read them; and
	// the preflight's extra Vary values stay its own (the first value is a
	// slice every response shares).
	for _, r := range []testResponse{
		a.do(t, "GET", "/api/me/tasks", nil, header("Origin", "https://app.example.com")),              // 401
		a.do(t, "GET", "/api/me/tasks", nil, bearer(tok), header("Origin", "https://app.example.com")), // 200
	} {
		if r.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
			r.Header.Get("Access-Control-Expose-Headers") != "Link, Location, ETag, X-Request-Id, Idempotent-Replayed, Retry-After, Mcp-Session-Id, WWW-Authenticate" ||
			!slices.Equal(r.Header.Values("Vary"), []string{"Origin"}) {
			t.Errorf("%d response headers %v", r.Status, r.Header)
		}
	}

	// Other origins get no CORS headers at all.
	for _, r := range []testResponse{
		a.do(t, "GET", "/api/me/tasks", nil, bearer(tok), header("Origin", "https://evil.example.com")),
		a.do(t, "OPTIONS", "/api/me/tasks", nil, header("Origin", "https://evil.example.com"), header("Access-Control-Request-Method", "GET")),
	} {
		for k := range r.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("other origin got %s", k)
			}
		}
		if !strings.Contains(strings.Join(r.Header.Values("Vary"), ","), "Origin") {
			t.Error("response lacks Vary: Origin")
		}
	}
}

func TestDebugEndpoints(t *testing.T) {
	s := startRun(t, map[string]string{"DATABASE_URL": newDatabase(t, false), "BETTER_AUTH_SECRET": testSecret, "DEBUG_ADDR": "127.0.0.1:0"})
	var m []string
	waitFor(t, "the debug address in the log", func() bool {
		m = regexp.MustCompile(`debug endpoints \(pprof, expvar\) listening" addr=(\S+)`).FindStringSubmatch(s.stderr.String())
		return m != nil
	})
	res, err := http.Get("http://" + m[1] + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var vars struct {
		TasksAPI struct {
			Goroutines int            `json:"goroutines"`
			DBPool     map[string]any `json:"db_pool"`
		} `json:"tasks_api"`
	}
	if err := json.NewDecoder(res.Body).Decode(&vars); err != nil || vars.TasksAPI.Goroutines == 0 || vars.TasksAPI.DBPool["max_conns"] == nil {
		t.Fatalf("vars %+v, %v", vars, err)
	}
	res, err = http.Get("http://" + m[1] + "/debug/pprof/goroutine?debug=1")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("pprof: %v %v", res, err)
	}
	res.Body.Close()
}
