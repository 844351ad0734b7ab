package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Microbenchmarks of the request path, piece by piece, and of whole
// handlers on the test database:
//
//	go test -run '^$' -bench . -benchmem
//
// Each measures its loop with b.Loop, which starts the timer only when the
// loop starts (setup is not counted) and keeps the results of the calls in
// the loop alive, so the compiler cannot optimise the work away.

func BenchmarkVerifyHS256(b *testing.B) {
	v := newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute})
	tok, err := mintToken([]byte(testSecret), "bench-user", "", "", time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	benchVerify(b, v, tok)
}

// benchVerify measures Verify on a token seen before (the verified-token
// cache answers) and on a token verified every time (the cache's lifetime
// set to zero), as for the first request of each new token.
func benchVerify(b *testing.B, v *Verifier, tok string) {
	ctx := context.Background()
	loop := func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("cached", loop)
	cache := v.cache
	v.cache = newTokenCache(tokenCacheSize, 0) // nothing it holds is ever valid
	b.Run("uncached", loop)
	v.cache = cache
}

// BenchmarkVerifyEdDSA verifies a token as Better Auth's JWT plugin signs
// it, with the key from a JWKS cached after the first request.
func BenchmarkVerifyEdDSA(b *testing.B) {
	key := newSigningKey(b, "EdDSA", "bench-key")
	jwks := newJWKSServer(b, key.public(b))
	keys, err := newJWKSKeys(b.Context(), jwks.URL, time.Hour, 10*time.Second, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	v := newVerifier(verifierOptions{JWKS: keys, Issuer: authBaseURL, Audience: authBaseURL, Leeway: time.Minute})
	tok := key.sign(b, betterAuthClaims("bench-user", time.Now()))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil { // fetches the JWKS
		b.Fatal(err)
	}
	fetches := jwks.fetches.Load()
	benchVerify(b, v, tok)
	if n := jwks.fetches.Load() - fetches; n > 0 {
		b.Fatalf("the JWKS was fetched %d times during the loop: the key is not cached", n)
	}
}

// benchTasks are n tasks like the ones a list returns: some with a
// description, tags, a due date, a completion.
func benchTasks(n int) []Task {
	created := time.Date(2026, 11, 20, 9, 30, 15, 123456000, time.UTC)
	tasks := make([]Task, n)
	for i := range tasks {
		t := &tasks[i]
		*t = Task{
			ID: int64(1000 + i), UserID: "hB3k9sQ2xLmN4pR7tV1wY6zA8cE5fG0j",
			Title:    fmt.Sprintf("Review the quarterly budget draft, part %d", i),
			Priority: []string{"none", "low", "medium", "high"}[i%4],
			Tags:     []string{},
			Version:  int32(1 + i%3), CreatedAt: created.Add(time.Duration(i) * time.Minute),
		}
		t.UpdatedAt = t.CreatedAt.Add(time.Hour)
		if i%3 == 0 {
			t.Description = "Compare with last year's numbers and \"flag\" anything over 10% — then send it to Ana."
		}
		if i%2 == 0 {
			t.Tags = []string{"work", "finance"}
		}
		if i%4 == 0 {
			due := t.CreatedAt.Add(72 * time.Hour)
			t.DueDate = &due
		}
		if i%5 == 0 {
			t.Completed, t.CompletedAt = true, &t.UpdatedAt
		}
	}
	return tasks
}

// jsonTask is Task as encoding/json would need it: the same fields, tagged.
type jsonTask struct {
	ID               int64       `json:"id"`
	UserID           string      `json:"user_id"`
	Title            string      `json:"title"`
	Description      string      `json:"description"`
	Completed        bool        `json:"completed"`
	CompletedAt      *time.Time  `json:"completed_at"`
	Priority         string      `json:"priority"`
	Tags             []string    `json:"tags"`
	DueDate          *time.Time  `json:"due_date"`
	Version          int32       `json:"version"`
	CreatedAt        time.Time   `json:"created_at"`
	UpdatedAt        time.Time   `json:"updated_at"`
	DeletedAt        *time.Time  `json:"deleted_at,omitempty"`
	Recurrence       *Recurrence `json:"recurrence"`
	Reminders        []string    `json:"reminders"`
	SeriesID         *int64      `json:"series_id"`
	NextOccurrenceID *int64      `json:"-"`
}

// BenchmarkEncodeTaskList encodes the hottest response, a page of 100
// tasks, by hand as the service does, and with encoding/json for comparison.
func BenchmarkEncodeTaskList(b *testing.B) {
	tasks := benchTasks(100)
	b.Run("appendTasks", func(b *testing.B) {
		b.SetBytes(int64(len(appendTasks(nil, tasks))))
		b.ReportAllocs()
		for b.Loop() {
			appendTasks(make([]byte, 0, 256+len(tasks)*320), tasks) // the buffer handleTaskList makes
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		items := make([]jsonTask, len(tasks))
		for i, t := range tasks {
			items[i] = jsonTask(t)
		}
		body, err := json.Marshal(items)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(items); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeCreateBody parses and validates a create request's body
// with every field given.
func BenchmarkDecodeCreateBody(b *testing.B) {
	body := []byte(`{"title":"Buy milk and bread","description":"Semi-skimmed, two litres.",` +
		`"priority":"high","tags":["home","errands"],"due_date":"2026-12-01T09:00:00+01:00"}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		members, err := decodeObject(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := parseNewTask(members); err != nil {
			b.Fatal(err)
		}
	}
}

// benchAPI is the service's whole handler on a database of its own. The
// access log is formatted as in production, then discarded.
type benchAPI struct {
	handler http.Handler
	store   *Store
	auth    string // the Authorization header of user "bench-user"
}

func newBenchAPI(b *testing.B) *benchAPI {
	b.Helper()
	pool, err := openPool(context.Background(), newDatabase(b, true), poolOptions{}, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	store := newStore(pool, storeOptions{}) // no quota: the create loop makes as many tasks as it runs
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := newHandler(deps{
		log:      log,
		store:    store,
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}),
		ready:    func(context.Context) error { return nil },
		origins:  []string{"http://localhost:3000"},
		feed:     &syncFeed{retention: time.Hour},
	})
	tok, err := mintToken([]byte(testSecret), "bench-user", "", "", time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return &benchAPI{handler: h, store: store, auth: "Bearer " + tok}
}

// serve runs one request through the handler, with no network in between.
func (a *benchAPI) serve(method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", a.auth)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	a.handler.ServeHTTP(rec, req)
	return rec
}

func BenchmarkHandlerList(b *testing.B) {
	a := newBenchAPI(b)
	for _, t := range benchTasks(100) {
		in := newTask{Title: t.Title, Description: t.Description, Priority: t.Priority, Tags: t.Tags, DueDate: t.DueDate}
		if _, err := a.store.CreateTask(context.Background(), "bench-user", in); err != nil {
			b.Fatal(err)
		}
	}
	var page []json.RawMessage
	if rec := a.serve("GET", "/api/me/tasks", ""); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &page) != nil || len(page) != 100 {
		b.Fatalf("the list is not 100 tasks: %d %.200s", rec.Code, rec.Body)
	}
	measureCPU(b, func() {
		if rec := a.serve("GET", "/api/me/tasks", ""); rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// An incremental sync of 100 changes (the 100 tasks created after the
// token), through the whole handler: compare with BenchmarkHandlerList
// (issue 10: a sync costs no more than a list).
func BenchmarkHandlerChanges(b *testing.B) {
	a := newBenchAPI(b)
	ctx := context.Background()
	key, err := a.store.SyncTokenKey(ctx)
	if err != nil {
		b.Fatal(err)
	}
	token := syncTokens{key: key, retention: time.Hour, now: time.Now}.encode("bench-user", syncToken{Seq: 0, Issued: time.Now()})
	for _, t := range benchTasks(100) {
		in := newTask{Title: t.Title, Description: t.Description, Priority: t.Priority, Tags: t.Tags, DueDate: t.DueDate}
		if _, err := a.store.CreateTask(ctx, "bench-user", in); err != nil {
			b.Fatal(err)
		}
	}
	path := "/api/me/changes?limit=100&since=" + token
	var page feedJSON
	if rec := a.serve("GET", path, ""); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &page) != nil || len(page.Changes) != 100 {
		b.Fatalf("the sync is not 100 changes: %d %.200s", rec.Code, rec.Body)
	}
	measureCPU(b, func() {
		if rec := a.serve("GET", path, ""); rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

func BenchmarkHandlerCreate(b *testing.B) {
	a := newBenchAPI(b)
	b.ReportAllocs()
	for b.Loop() {
		if rec := a.serve("POST", "/api/me/tasks", `{"title":"Buy milk","priority":"high","tags":["home"]}`); rec.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkHandlerGet is one task by id, the request issue 14 bounds by
// PostgreSQL's CPU: ns/op includes the wait for the database, cpu-ns/op is
// the service's own CPU (see measureCPU).
func BenchmarkHandlerGet(b *testing.B) {
	a := newBenchAPI(b)
	t, err := a.store.CreateTask(context.Background(), "bench-user", newTask{Title: "Buy milk", Priority: "high", Tags: []string{"home"}})
	if err != nil {
		b.Fatal(err)
	}
	path := "/api/me/tasks/" + strconv.FormatInt(t.ID, 10)
	if rec := a.serve("GET", path, ""); rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	measureCPU(b, func() {
		if rec := a.serve("GET", path, ""); rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}

// What recording a request in the metrics adds to the access-log middleware,
// per request: compare the two sub-benchmarks' ns/op with the CPU a list
// costs the service (docs/performance.md).
func BenchmarkRequestMetrics(b *testing.B) {
	log := slog.New(newLineHandler(io.Discard, false, &slog.HandlerOptions{Level: slog.LevelInfo}))
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoFrom(r.Context()).pattern = "GET /api/{user_id}/tasks"
		w.WriteHeader(http.StatusOK)
	})
	for _, c := range []struct {
		name string
		m    *metrics
	}{{"without", nil}, {"with", newMetrics(nil, nil)}} {
		b.Run(c.name, func(b *testing.B) {
			h := logRequests(log, c.m)(inner)
			req := httptest.NewRequest("GET", "/api/me/tasks", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
		})
	}
}

// The access log's line through slog's text handler and through lineHandler
// (the service's): ns/op and allocs per line.
func BenchmarkAccessLine(b *testing.B) {
	r := httptest.NewRequest("GET", "/api/me/tasks/42", nil)
	ri := &requestInfo{id: newRequestID(), pattern: "GET /api/{user_id}/tasks/{id}", user: identity{Sub: "user-1"}}
	rec := &statusRecorder{status: http.StatusOK, bytes: 312}
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewTextHandler(io.Discard, nil)},
		{"lineHandler", newLineHandler(io.Discard, false, nil)},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				var attrs [10]slog.Attr
				_ = handleAttrs(ctx, c.h, time.Now(), slog.LevelInfo, "request", accessAttrs(attrs[:0], r, ri, rec, 1500*time.Microsecond)...)
			}
		})
	}
}
