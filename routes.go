package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// deps are everything the HTTP layer needs, passed in explicitly.
type deps struct {
	log      *slog.Logger
	store    *Store
	verifier *Verifier
	limiter  *rateLimiter
	ready    func(context.Context) error // nil error: ready to serve
	origins  []string
	timeout  time.Duration // bounds each /api request's work; 0: requestDeadline
	gate     *dbGate       // fails requests fast while the database is down; nil: off
}

// newHandler assembles the service: the routes, then the middleware that
// every request passes through, outermost last.
func newHandler(d deps) http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, d)
	var h http.Handler = muxProblems(mux)
	h = limitRequestSize(h)
	h = recoverPanics(d.log)(h)
	h = allowCORS(d.origins)(h)
	h = logRequests(d.log)(h)
	return h
}

// addRoutes is the whole API surface.
func addRoutes(mux *http.ServeMux, d deps) {
	handle := func(pattern string, h http.Handler) { mux.Handle(pattern, recordPattern(pattern, h)) }
	timeout := d.timeout
	if timeout == 0 {
		timeout = requestDeadline
	}
	api := func(h http.Handler) http.Handler {
		return requireUser(d.verifier, d.log)(
			limitRate(d.limiter)(
				requireOwnPath(
					failFastWhenDown(d.gate)(
						withDeadline(timeout)(
							idempotent(d.store, d.log)(h))))))
	}

	handle("GET /api/{user_id}/tasks", api(handleTaskList(d.store, d.log)))
	handle("POST /api/{user_id}/tasks", api(handleTaskCreate(d.store, d.log)))
	handle("GET /api/{user_id}/tasks/stats", api(handleTaskStats(d.store, d.log)))
	handle("GET /api/{user_id}/tasks/{id}", api(handleTaskGet(d.store, d.log)))
	handle("PUT /api/{user_id}/tasks/{id}", api(handleTaskUpdate(d.store, d.log)))
	handle("PATCH /api/{user_id}/tasks/{id}", api(handleTaskUpdate(d.store, d.log)))
	handle("DELETE /api/{user_id}/tasks/{id}", api(handleTaskDelete(d.store, d.log)))
	handle("PATCH /api/{user_id}/tasks/{id}/complete", api(handleTaskComplete(d.store, d.log)))

	handle("GET /healthz", handleHealthz())
	handle("GET /readyz", handleReadyz(d.ready, d.log))
	handle("GET /openapi.json", handleOpenAPI())
	handle("GET /docs", handleDocs())
}

// requestDeadline bounds a request's database work, whatever the client does.
const requestDeadline = 10 * time.Second

// recordPattern tells the access log which route served the request.
func recordPattern(pattern string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ri := infoFrom(r.Context()); ri != nil {
			ri.pattern = pattern
		}
		next.ServeHTTP(w, r)
	})
}

// requireOwnPath: {user_id} must be the token's subject, or "me".
func requireOwnPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.PathValue("user_id"); p != "me" && p != userIDFrom(r.Context()) {
			writeProblem(w, r, errStatus(http.StatusForbidden,
				"The path names another user; use your own user id or \"me\"."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func withDeadline(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

func handleHealthz() http.Handler {
	body := []byte(`{"status":"ok"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, body)
	})
}

// handleReadyz answers 200 only while the database answers and its schema is
// current, so a load balancer sends no traffic to an instance that would fail.
func handleReadyz(ready func(context.Context) error, log *slog.Logger) http.Handler {
	body := []byte(`{"status":"ready"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			log.Warn("not ready", "error", err)
			detail := "The database does not answer."
			var nr notReady
			if errors.As(err, &nr) {
				detail = string(nr)
			}
			writeProblem(w, r, &apiError{Status: http.StatusServiceUnavailable, Type: problemDBUnavailable, RetryAfter: 5, Detail: detail})
			return
		}
		writeJSON(w, r, http.StatusOK, body)
	})
}

// notReady is a readiness failure whose text may be shown to anyone.
type notReady string

func (n notReady) Error() string { return string(n) }
