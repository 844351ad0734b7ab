package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

type ctxKey int

const requestInfoKey ctxKey = 0

// requestInfo is filled in as the request goes down the chain and read by the
// access log once it comes back up. It is the request's one context value:
// the middleware that learn something (the route, the user) write it here
// rather than each wrapping the context and copying the *http.Request again.
type requestInfo struct {
	id      string
	pattern string
	user    identity // set by withIdentity; zero on public routes
	err     *Error   // the error the response reported (respondError)
	cause   error    // err as it was returned, with its context, for the log
}

func infoFrom(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(requestInfoKey).(*requestInfo)
	return ri
}

func requestIDFrom(ctx context.Context) string {
	if ri := infoFrom(ctx); ri != nil {
		return ri.id
	}
	return ""
}

// userIDFrom is the authenticated user; set only under authenticate (or
// acceptTicket).
func userIDFrom(ctx context.Context) string { return identityFrom(ctx).Sub }

// validRequestID: 1..128 characters from A-Z a-z 0-9 . _ - :
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	return string(strconv.AppendUint(b[:0], rand.Uint64(), 36))
}

// statusRecorder remembers what was written, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests gives every request its id (the client's own when valid) and,
// once it is answered, writes one line for it and records it in the metrics
// (nil: none). The line has, for an error response, its code, and for a 5xx
// its cause, at warning level (error for a 500). Tokens never reach the log.
func logRequests(log *slog.Logger, m *metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			// One allocation for what the request tells the log, and for
			// the response header's value (set in the map directly: the
			// key is canonical, and net/http copies the values it sends).
			seen := &struct {
				info   requestInfo
				rec    statusRecorder
				header [1]string
			}{info: requestInfo{id: r.Header.Get("X-Request-Id")}, rec: statusRecorder{ResponseWriter: w}}
			ri, rec := &seen.info, &seen.rec
			if !validRequestID(ri.id) {
				ri.id = newRequestID()
			}
			seen.header[0] = ri.id
			w.Header()["X-Request-Id"] = seen.header[:]
			if m != nil {
				m.inFlight.Inc()
			}
			next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey, ri)))

			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			if m != nil {
				m.inFlight.Dec()
				m.observe(r, ri, rec.status, time.Since(start), w.Header().Get("Idempotent-Replayed") != "")
			}
			level := slog.LevelInfo
			switch {
			case rec.status == http.StatusInternalServerError:
				level = slog.LevelError
			case rec.status >= 500:
				level = slog.LevelWarn
			}
			if !log.Enabled(r.Context(), level) {
				return
			}
			now := time.Now()
			var attrs [10]slog.Attr
			// Nowhere to report a failing log.
			_ = handleAttrs(r.Context(), log.Handler(), now, level, "request", accessAttrs(attrs[:0], r, ri, rec, now.Sub(start))...)
		})
	}
}

// accessAttrs appends the access log line's attributes for a request.
func accessAttrs(attrs []slog.Attr, r *http.Request, ri *requestInfo, rec *statusRecorder, took time.Duration) []slog.Attr {
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("route", ri.pattern),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.status),
		slog.Duration("duration", took),
		slog.Int("bytes", rec.bytes),
		slog.String("request_id", ri.id),
	)
	if ri.user.Sub != "" {
		attrs = append(attrs, slog.String("user_id", ri.user.Sub))
	}
	if ri.err != nil {
		attrs = append(attrs, slog.String("code", ri.err.Code.String()))
		if rec.status >= 500 && ri.cause != nil {
			attrs = append(attrs, slog.String("error", ri.cause.Error()))
		}
	}
	return attrs
}

// handleAttrs has h handle the record (t, level, msg, attrs): a lineHandler
// without making the record. It is how the access log writes its line, rather
// than Logger.LogAttrs, which looks up its caller's program counter for every
// line (runtime.Callers was a fifth of the log's CPU) to serve
// HandlerOptions.AddSource, which the service never sets.
func handleAttrs(ctx context.Context, h slog.Handler, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) error {
	if lh, ok := h.(*lineHandler); ok {
		return lh.handleAttrs(ctx, t, level, msg, attrs...)
	}
	return h.Handle(ctx, newRecord(t, level, msg, attrs))
}

// recoverPanics turns a panicking handler into a 500 and a logged stack; the
// server goes on serving.
func recoverPanics(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
					panic(v)
				}
				log.LogAttrs(r.Context(), slog.LevelError, "handler panicked",
					slog.String("request_id", requestIDFrom(r.Context())),
					slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				if rec, ok := w.(*statusRecorder); ok && rec.status != 0 {
					return // the response had begun: nothing sensible can be added
				}
				respondError(w, r, fmt.Errorf("panic: %v", v))
			}()
			next.ServeHTTP(w, r)
		})
	}
}

const (
	maxHeaderBytes = 32 << 10 // what the service accepts; net/http's own limit is higher
	maxURLBytes    = 8 << 10
	maxBodyBytes   = 64 << 10
)

// limitRequestSize answers oversized request lines and headers with
// problem+json, which net/http's own limit (1 MiB) would answer in plain text.
func limitRequestSize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.RequestURI) > maxURLBytes {
			respondError(w, r, newError(CodeURITooLong, "The request target is longer than %d bytes.", maxURLBytes))
			return
		}
		size := 0
		for k, vs := range r.Header {
			for _, v := range vs {
				size += len(k) + len(v) + 4
			}
		}
		if size > maxHeaderBytes {
			respondError(w, r, newError(CodeHeadersTooLarge, "The request headers are larger than %d bytes.", maxHeaderBytes))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// muxProblems makes the ServeMux's own 404 and 405 answers problem+json (405
// keeps the Allow header the mux set). Handlers never write text/plain errors,
// so a text/plain 404 or 405 can only come from the mux.
func muxProblems(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	r           *http.Request
	intercepted bool
}

func (w *muxErrorWriter) WriteHeader(code int) {
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.intercepted = true
		w.Header().Del("X-Content-Type-Options")
		err := newError(CodeNotFound, "No route matches %s.", w.r.URL.Path)
		if code == http.StatusMethodNotAllowed {
			err = newError(CodeMethodNotAllowed, "%s is not allowed on %s; allowed: %s.", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))
		}
		respondError(w.ResponseWriter, w.r, err)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *muxErrorWriter) Write(b []byte) (int, error) {
	if w.intercepted {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *muxErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
