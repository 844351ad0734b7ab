package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

func idemKey(k string) reqOption { return header("Idempotency-Key", k) }

func (a *testAPI) countTasks(t testing.TB, user string) int {
	t.Helper()
	var n int
	if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM tasks WHERE user_id = $1`, user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIdempotentReplay(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	body := `{"title":"pay rent","tags":["home"]}`
	first := mustStatus(t, a.do(t, "POST", "/api/me/tasks", body, bearer(tok), idemKey("create-1")), http.StatusCreated)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the first response claims to be a replay")
	}
	// The same request again, and once more spelled with the user id instead of "me".
	for _, path := range []string{"/api/me/tasks", "/api/" + user + "/tasks"} {
		again := mustStatus(t, a.do(t, "POST", path, body, bearer(tok), idemKey("create-1")), http.StatusCreated)
		if string(again.Body) != string(first.Body) || again.Header.Get("Idempotent-Replayed") != "true" ||
			again.Header.Get("Location") != first.Header.Get("Location") || again.Header.Get("ETag") != first.Header.Get("ETag") ||
			again.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("replay differs:\n%s %v\n%s %v", first.Body, first.Header, again.Body, again.Header)
		}
	}
	if n := a.countTasks(t, user); n != 1 {
		t.Fatalf("%d tasks created", n)
	}

	// Other write routes replay too, and nothing runs twice.
	task := first.task(t)
	path := fmt.Sprintf("/api/me/tasks/%d", task.ID)
	toggle := mustStatus(t, a.do(t, "PATCH", path+"/complete", nil, bearer(tok), idemKey("toggle-1")), http.StatusOK)
	replayed := mustStatus(t, a.do(t, "PATCH", path+"/complete", nil, bearer(tok), idemKey("toggle-1")), http.StatusOK)
	if string(replayed.Body) != string(toggle.Body) || !replayed.task(t).Completed {
		t.Fatal("the toggle ran twice")
	}
	mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok), idemKey("delete-1")), http.StatusNoContent)
	r := mustStatus(t, a.do(t, "DELETE", path, nil, bearer(tok), idemKey("delete-1")), http.StatusNoContent)
	if r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the delete was not replayed")
	}
	// A 4xx is recorded and replayed as well.
	bad := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":""}`, bearer(tok), idemKey("bad-1")), http.StatusUnprocessableEntity)
	badAgain := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":""}`, bearer(tok), idemKey("bad-1")), http.StatusUnprocessableEntity)
	if badAgain.Header.Get("Idempotent-Replayed") != "true" || badAgain.Header.Get("Content-Type") != "application/problem+json" ||
		strings.Split(string(badAgain.Body), `"request_id"`)[0] != strings.Split(string(bad.Body), `"request_id"`)[0] {
		t.Fatalf("4xx replay: %s %v", badAgain.Body, badAgain.Header)
	}
}

func TestIdempotencyKeyReuseWithAnotherRequest(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"x"}`)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"a"}`, bearer(tok), idemKey("k")), http.StatusCreated)
	for name, r := range map[string]testResponse{
		"other body":             a.do(t, "POST", "/api/me/tasks", `{"title":"b"}`, bearer(tok), idemKey("k")),
		"same JSON, other bytes": a.do(t, "POST", "/api/me/tasks", `{ "title":"a"}`, bearer(tok), idemKey("k")),
		"other method":           a.do(t, "PUT", fmt.Sprintf("/api/me/tasks/%d", task.ID), `{"title":"a"}`, bearer(tok), idemKey("k")),
		"other path":             a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d/complete", task.ID), nil, bearer(tok), idemKey("k")),
	} {
		t.Run(name, func(t *testing.T) {
			if p := mustStatus(t, r, http.StatusUnprocessableEntity).problem(t); p.Type != problemKinds[CodeKeyReused].typ {
				t.Fatalf("type %q", p.Type)
			}
		})
	}
	if n := a.countTasks(t, user); n != 2 {
		t.Fatalf("%d tasks", n)
	}
	// Keys belong to a user: another user's identical key is a new request.
	other, otherTok := a.newUser(t)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"a"}`, bearer(otherTok), idemKey("k")), http.StatusCreated)
	if n := a.countTasks(t, other); n != 1 {
		t.Fatalf("other user has %d tasks", n)
	}
}

func TestIdempotencyKeyFormat(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	for name, key := range map[string]string{
		"too long":  strings.Repeat("k", 256),
		"non-ASCII": "clé",
	} {
		t.Run(name, func(t *testing.T) {
			mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok), idemKey(key)), http.StatusBadRequest).problem(t)
		})
	}
	// An empty value, and two values, are refused too.
	req, _ := http.NewRequest("POST", a.URL+"/api/me/tasks", strings.NewReader(`{"title":"x"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header["Idempotency-Key"] = []string{""}
	if res, err := a.client.Do(req); err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty key: %v %v", res, err)
	}
	req, _ = http.NewRequest("POST", a.URL+"/api/me/tasks", strings.NewReader(`{"title":"x"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header["Idempotency-Key"] = []string{"a", "b"}
	if res, err := a.client.Do(req); err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("two keys: %v %v", res, err)
	}
	// Control characters (which net/http's client will not even send).
	for _, bad := range []string{"a\x01b", "tab\there", "del\x7f"} {
		req := httptest.NewRequest("POST", "/", nil)
		req.Header.Set("Idempotency-Key", bad)
		if _, err := idempotencyKeyOf(req); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok), idemKey(strings.Repeat("~", 255))), http.StatusCreated)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok), idemKey("with inner spaces !")), http.StatusCreated)
	if n := a.countTasks(t, user); n != 2 {
		t.Fatalf("%d tasks", n)
	}
}

// Twenty concurrent identical creates with one key, on two instances sharing
// the database, create exactly one task. The others are replays or 409s.
func TestIdempotentConcurrentDuplicates(t *testing.T) {
	a := startAPI(t)
	b := startAPI(t, func(o *apiOptions) { o.dbURL = testPG(t).sharedURL }) // its own pool: another instance
	user, tok := a.newUser(t)
	var wg sync.WaitGroup
	results := make([]testResponse, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst := a
			if i%2 == 1 {
				inst = b
			}
			results[i] = inst.do(t, "POST", "/api/me/tasks", `{"title":"once"}`, bearer(tok), idemKey("concurrent"))
		}()
	}
	wg.Wait()
	var created []byte
	for _, r := range results {
		switch r.Status {
		case http.StatusCreated:
			if created != nil && string(created) != string(r.Body) {
				t.Fatalf("two different 201 bodies:\n%s\n%s", created, r.Body)
			}
			created = r.Body
		case http.StatusConflict:
			if p := r.problem(t); p.Type != problemKinds[CodeKeyInUse].typ || r.Header.Get("Retry-After") == "" {
				t.Fatalf("409 %+v", p)
			}
		default:
			t.Fatalf("unexpected %s", r)
		}
	}
	if n := a.countTasks(t, user); n != 1 {
		t.Fatalf("%d tasks created", n)
	}
	// After the first finished, a retry is a replay.
	r := mustStatus(t, b.do(t, "POST", "/api/me/tasks", `{"title":"once"}`, bearer(tok), idemKey("concurrent")), http.StatusCreated)
	if r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("not replayed")
	}
}

// While the first request holds its key, a repeat is 409 and runs nothing.
func TestIdempotencyKeyInFlight(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	req := idempotentRequest{user: user, key: "slow"}
	// A session-level lock needs a session of its own: directly, never
	// through a transaction-mode pooler.
	conn, err := pgx.Connect(t.Context(), a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, req.lockID()); err != nil { // as the first request's transaction does
		t.Fatal(err)
	}
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok), idemKey("slow")), http.StatusConflict)
	if r.problem(t).Type != problemKinds[CodeKeyInUse].typ {
		t.Fatal(r)
	}
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_unlock($1)`, req.lockID()); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"x"}`, bearer(tok), idemKey("slow")), http.StatusCreated)
	if n := a.countTasks(t, user); n != 1 {
		t.Fatalf("%d tasks", n)
	}
}

// The change and the key's record commit together: if the request fails
// after its change, neither is kept, and a retry runs again.
func TestIdempotencyIsAtomicWithTheChange(t *testing.T) {
	a := startAPI(t)
	user, _ := a.newUser(t)
	run := func(h txHandler) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/api/me/tasks", strings.NewReader(`{"title":"x"}`))
		req = withIdentity(req, identity{Sub: user})
		req.Header.Set("Idempotency-Key", "atomic")
		w := httptest.NewRecorder()
		func() {
			defer func() { recover() }()
			if err := idempotent(a.store)(h)(w, req); err != nil {
				respondError(w, req, err)
			}
		}()
		return w
	}
	createThen := func(after func(w http.ResponseWriter) error) txHandler {
		return func(w http.ResponseWriter, r *http.Request, q Queries) error {
			if _, err := q.CreateTask(r.Context(), user, newTask{Title: "x", Priority: "none", Tags: []string{}}); err != nil {
				t.Error(err)
			}
			return after(w)
		}
	}
	run(createThen(func(http.ResponseWriter) error { panic("crash after the change") }))
	w := run(createThen(func(http.ResponseWriter) error { return errDatabaseUnavailable(nil) }))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	var keys int
	a.pool.QueryRow(t.Context(), `SELECT count(*) FROM idempotency_keys WHERE user_id = $1`, user).Scan(&keys)
	if n := a.countTasks(t, user); n != 0 || keys != 0 {
		t.Fatalf("after failures: %d tasks, %d keys; want neither", n, keys)
	}
	w = run(createThen(func(w http.ResponseWriter) error { w.WriteHeader(http.StatusCreated); return nil }))
	a.pool.QueryRow(t.Context(), `SELECT count(*) FROM idempotency_keys WHERE user_id = $1`, user).Scan(&keys)
	if n := a.countTasks(t, user); w.Code != http.StatusCreated || n != 1 || keys != 1 {
		t.Fatalf("after success: status %d, %d tasks, %d keys", w.Code, n, keys)
	}
}

// Keys expire after 24 hours: the key may then be used afresh, and the purge removes them.
func TestIdempotencyKeyExpiry(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.dbURL = newDatabase(t, true) })
	user, tok := a.newUser(t)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"old"}`, bearer(tok), idemKey("aged")), http.StatusCreated)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"fresh"}`, bearer(tok), idemKey("fresh")), http.StatusCreated)
	if _, err := a.pool.Exec(t.Context(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'aged'`); err != nil {
		t.Fatal(err)
	}
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"new use"}`, bearer(tok), idemKey("aged")), http.StatusCreated)
	if r.Header.Get("Idempotent-Replayed") != "" || r.task(t).Title != "new use" {
		t.Fatal("an expired key was replayed")
	}
	if _, err := a.pool.Exec(t.Context(), `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'aged'`); err != nil {
		t.Fatal(err)
	}
	n, err := a.store.PurgeIdempotencyKeys(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("purged %d (%v), want 1", n, err)
	}
	var left []string
	rows, _ := a.pool.Query(t.Context(), `SELECT key FROM idempotency_keys WHERE user_id = $1`, user)
	for rows.Next() {
		var k string
		rows.Scan(&k)
		left = append(left, k)
	}
	if strings.Join(left, ",") != "fresh" {
		t.Fatalf("keys left: %v", left)
	}
}
