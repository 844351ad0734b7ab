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
	feed     *syncFeed
	events   *eventStreams
	draining func() bool // the server is shutting down: /readyz answers 503; nil: never
	metrics  *metrics    // nil: none
	mcp      mcpOptions  // /mcp's public URL and authorization server
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
	h = logRequests(d.log, d.metrics)(h)
	return h
}

// addRoutes is the whole API surface. Every route under /api/ passes the same
// chain, outermost first: the token, the user's rate, the path's user, the
// database gate, the deadline, and Idempotency-Key, which decides whether the
// handler's statements run on the pool or in a transaction that records the
// response.
func addRoutes(mux *http.ServeMux, d deps) {
	timeout := d.timeout
	if timeout == 0 {
		timeout = requestDeadline
	}
	chain := func(auth func(apiHandler) apiHandler, deadline time.Duration, h txHandler) apiHandler {
		return auth(
			limitRate(d.limiter)(
				requireOwnPath(
					failFastWhenDown(d.gate)(
						withDeadline(deadline)(
							idempotent(d.store)(h))))))
	}
	bearer := authenticate(d.verifier)
	api := func(h txHandler) apiHandler { return chain(bearer, timeout, h) }
	handle := func(pattern string, h apiHandler) { mux.Handle(pattern, serveRoute(pattern, h)) }

	handle("GET /api/{user_id}/tasks", api(handleTaskList))
	handle("POST /api/{user_id}/tasks", api(handleTaskCreate))
	handle("GET /api/{user_id}/tasks/stats", api(handleTaskStats))
	handle("GET /api/{user_id}/tasks/{id}", api(handleTaskGet))
	handle("PUT /api/{user_id}/tasks/{id}", api(handleTaskUpdate))
	handle("PATCH /api/{user_id}/tasks/{id}", api(handleTaskUpdate))
	handle("DELETE /api/{user_id}/tasks/{id}", api(handleTaskDelete))
	handle("PATCH /api/{user_id}/tasks/{id}/complete", api(handleTaskComplete))

	handle("GET /api/{user_id}/trash", api(handleTrashList))
	handle("POST /api/{user_id}/trash/{id}/restore", api(handleTrashRestore))
	handle("DELETE /api/{user_id}/trash/{id}", api(handleTrashDelete))
	handle("DELETE /api/{user_id}/trash", api(handleTrashEmpty))
	handle("GET /api/{user_id}/reminders", api(handleReminders))

	// A long poll waits up to maxChangesWait on top of its database work.
	handle("GET /api/{user_id}/changes", chain(bearer, timeout+maxChangesWait*time.Second, handleChanges(d.feed)))

	// A stream has no deadline (each of its reads has one), and an
	// EventSource authenticates with a ticket.
	handle("POST /api/{user_id}/events/tickets", api(handleEventTicket))
	handle("GET /api/{user_id}/events", chain(acceptTicket(d.store, bearer), 0, handleEvents(d.events)))

	handle("POST /mcp", handleMCP(d)) // its own chain (mcp.go): the token and the rate as above, per tool call the rest
	handle("GET /.well-known/oauth-protected-resource", handleResourceMetadata(d.mcp))

	handle("GET /healthz", handleHealthz)
	handle("GET /readyz", handleReadyz(d.ready, d.draining))
	handle("GET /openapi.json", handleOpenAPI)
	handle("GET /docs", handleDocs)
}

// apiHandler is a handler that returns its failure instead of writing it.
type apiHandler func(w http.ResponseWriter, r *http.Request) error

// txHandler is a handler whose statements run on q: the pool, or the
// transaction of the request's Idempotency-Key (see idempotent).
type txHandler func(w http.ResponseWriter, r *http.Request, q Queries) error

// serveRoute adapts h to net/http: it tells the access log which route serves the
// request, and turns h's error into the response, in one place.
func serveRoute(pattern string, h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ri := infoFrom(r.Context()); ri != nil {
			ri.pattern = pattern
		}
		if err := h(w, r); err != nil {
			respondError(w, r, err)
		}
	})
}

// requestDeadline bounds a request's database work, whatever the client does.
const requestDeadline = 10 * time.Second

// requireOwnPath: {user_id} must be the token's subject, or "me".
func requireOwnPath(next apiHandler) apiHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		if p := r.PathValue("user_id"); p != "me" && p != userIDFrom(r.Context()) {
			return newError(CodeForbidden, "The path names another user; use your own user id or \"me\".")
		}
		return next(w, r)
	}
}

// withDeadline bounds the request's work; 0: no bound (an event stream, whose
// every read has its own).
func withDeadline(d time.Duration) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		if d == 0 {
			return next
		}
		return func(w http.ResponseWriter, r *http.Request) error {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			return next(w, r.WithContext(ctx))
		}
	}
}

func handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, r, http.StatusOK, []byte(`{"status":"ok"}`))
	return nil
}

// handleReadyz answers 200 only while the database answers and its schema is
// current, so a load balancer sends no traffic to an instance that would fail.
func handleReadyz(ready func(context.Context) error, draining func() bool) apiHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		if draining != nil && draining() {
			return &Error{Code: CodeUnavailable, RetryAfter: time.Second,
				Message: "This instance is shutting down; its requests in flight are finishing."}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			e := errDatabaseUnavailable(err)
			e.RetryAfter = 5 * time.Second
			e.Message = "The database does not answer."
			if nr, ok := errors.AsType[notReady](err); ok {
				e.Message = string(nr)
			}
			return e
		}
		writeJSON(w, r, http.StatusOK, []byte(`{"status":"ready"}`))
		return nil
	}
}

// notReady is a readiness failure whose text may be shown to anyone.
type notReady string

func (n notReady) Error() string { return string(n) }
