package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ---- errors ---------------------------------------------------------------

// apiError is an error with a meaning for the client. respondError turns it
// into problem+json (RFC 9457); any other error becomes a 500 whose cause is
// logged, never shown.
type apiError struct {
	Status     int
	Type       string // "about:blank" unless the condition has its own type
	Detail     string
	Fields     []fieldError
	RetryAfter int    // seconds; 0: no Retry-After
	Authn      string // WWW-Authenticate challenge, for 401
	cause      error
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Detail, e.cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Detail)
}

func (e *apiError) Unwrap() error { return e.cause }

// Problem types that a client may want to tell apart from others of the same status.
const (
	problemValidation     = "/problems/validation-error"
	problemQuota          = "/problems/quota-exceeded"
	problemRateLimited    = "/problems/rate-limited"
	problemVersion        = "/problems/version-mismatch"
	problemKeyInUse       = "/problems/idempotency-key-in-use"
	problemKeyReused      = "/problems/idempotency-key-reused"
	problemDBUnavailable  = "/problems/database-unavailable"
	problemKeysUnreadable = "/problems/signing-keys-unavailable"
)

func errStatus(status int, detail string) *apiError {
	return &apiError{Status: status, Type: "about:blank", Detail: detail}
}

func errBadRequest(detail string) *apiError { return errStatus(http.StatusBadRequest, detail) }
func errNotFound(detail string) *apiError   { return errStatus(http.StatusNotFound, detail) }

func errValidation(fields ...fieldError) *apiError {
	detail := "The request has invalid fields; see errors."
	if len(fields) == 1 {
		detail = fmt.Sprintf("%s: %s.", fields[0].Field, fields[0].Message)
	}
	return &apiError{Status: http.StatusUnprocessableEntity, Type: problemValidation, Detail: detail, Fields: fields}
}

// problem is the body of every error response.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Errors    []fieldError `json:"errors,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
}

// respondError writes err as problem+json. Errors without a client meaning are
// logged here, once, with the request id, and answered with a bare 500.
func respondError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	ae := classify(r.Context(), err)
	if ri := infoFrom(r.Context()); ri != nil && ae.Type == problemDBUnavailable {
		ri.dbUnavailable = true
	}
	if ae.Status >= 500 {
		level := slog.LevelError
		if ae.Status != http.StatusInternalServerError {
			level = slog.LevelWarn
		}
		log.LogAttrs(r.Context(), level, "request failed", slog.String("request_id", requestIDFrom(r.Context())),
			slog.String("error", err.Error()))
	}
	writeProblem(w, r, ae)
}

// classify is the one place where errors get their HTTP meaning.
func classify(ctx context.Context, err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errTaskNotFound):
		return errNotFound("No task with this id exists for this user.")
	case errors.Is(err, errVersionMismatch):
		return &apiError{Status: http.StatusPreconditionFailed, Type: problemVersion,
			Detail: "The task has changed since the version named in If-Match; fetch it and try again."}
	case errors.Is(err, errQuotaExceeded):
		return &apiError{Status: http.StatusConflict, Type: problemQuota,
			Detail: "This user has reached the maximum number of tasks; delete some first."}
	}
	return classifyInternal(ctx, err)
}

func writeProblem(w http.ResponseWriter, r *http.Request, ae *apiError) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Del("ETag")
	h.Del("Location")
	if ae.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if ae.Authn != "" {
		h.Set("WWW-Authenticate", ae.Authn)
	}
	typ := ae.Type
	if typ == "" {
		typ = "about:blank"
	}
	body, _ := json.Marshal(problem{
		Type: typ, Title: http.StatusText(ae.Status), Status: ae.Status, Detail: ae.Detail,
		Errors: ae.Fields, RequestID: requestIDFrom(r.Context()),
	})
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(ae.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// ---- request context ------------------------------------------------------

type ctxKey int

const (
	requestInfoKey ctxKey = iota
	userIDKey
)

// requestInfo is filled in as the request goes down the chain and read by the
// access log once it comes back up.
type requestInfo struct {
	id            string
	pattern       string
	userID        string
	dbUnavailable bool // the request found the database unavailable (see dbGate)
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

// userIDFrom is the authenticated user; set only under requireUser.
func userIDFrom(ctx context.Context) string {
	s, _ := ctx.Value(userIDKey).(string)
	return s
}

// ---- middleware -----------------------------------------------------------

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

// logRequests gives every request its id (the client's own when valid) and
// writes one line per request once it is answered. Tokens never reach the log.
func logRequests(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ri := &requestInfo{id: r.Header.Get("X-Request-Id")}
			if !validRequestID(ri.id) {
				ri.id = newRequestID()
			}
			w.Header().Set("X-Request-Id", ri.id)
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestInfoKey, ri)))

			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			if !log.Enabled(r.Context(), slog.LevelInfo) {
				return
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("route", ri.pattern),
				slog.String("path", r.URL.Path),
				slog.Int("status", rec.status),
				slog.Duration("duration", time.Since(start)),
				slog.Int("bytes", rec.bytes),
				slog.String("request_id", ri.id),
			}
			if ri.userID != "" {
				attrs = append(attrs, slog.String("user_id", ri.userID))
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		})
	}
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
				writeProblem(w, r, errStatus(http.StatusInternalServerError, "An unexpected error occurred."))
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
			writeProblem(w, r, errStatus(http.StatusRequestURITooLong,
				fmt.Sprintf("The request target is longer than %d bytes.", maxURLBytes)))
			return
		}
		size := 0
		for k, vs := range r.Header {
			for _, v := range vs {
				size += len(k) + len(v) + 4
			}
		}
		if size > maxHeaderBytes {
			writeProblem(w, r, errStatus(http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("The request headers are larger than %d bytes.", maxHeaderBytes)))
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
		detail := "No route matches " + w.r.URL.Path + "."
		if code == http.StatusMethodNotAllowed {
			detail = fmt.Sprintf("%s is not allowed on %s; allowed: %s.", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))
		}
		writeProblem(w.ResponseWriter, w.r, errStatus(code, detail))
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

// ---- bodies ---------------------------------------------------------------

// jsonMember is one name/value pair of a request's JSON object, in order.
type jsonMember struct {
	Name  string
	Value json.RawMessage
}

// readAllLimited reads the whole body, at most maxBodyBytes of it: larger is
// 413, a body that does not arrive (within the server's read timeout, say) 400.
func readAllLimited(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooBig := errStatus(http.StatusRequestEntityTooLarge, fmt.Sprintf("The body is larger than %d bytes.", maxBodyBytes))
	if r.ContentLength > maxBodyBytes {
		return nil, tooBig
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooBig
		}
		return nil, errBadRequest("The body could not be read.")
	}
	return body, nil
}

// readBody reads the request body, at most maxBodyBytes, and checks it says
// it is JSON. An empty body is returned as nil, with no Content-Type needed.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := readAllLimited(w, r)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, errStatus(http.StatusUnsupportedMediaType, "The body must be JSON, sent with Content-Type: application/json.")
	}
	return body, nil
}

// decodeObject parses body, which must be exactly one JSON object, into its
// members. Malformed JSON, trailing data or invalid UTF-8 is 400; valid JSON
// that is not an object, or names a member twice, is 422.
func decodeObject(body []byte) ([]jsonMember, error) {
	if !utf8.Valid(body) {
		return nil, errBadRequest("The body is not valid UTF-8.")
	}
	if !json.Valid(body) {
		return nil, errBadRequest("The body is not valid JSON (or has data after the JSON value).")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &apiError{Status: http.StatusUnprocessableEntity, Type: problemValidation,
			Detail: "The body must be a JSON object.", Fields: []fieldError{{Field: "body", Message: "must be a JSON object"}}}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil { // {
		return nil, errBadRequest("The body is not valid JSON.")
	}
	var members []jsonMember
	seen := map[string]bool{} // a 64 KiB body has thousands of names: no quadratic search
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errBadRequest("The body is not valid JSON.")
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errBadRequest("The body is not valid JSON.")
		}
		if seen[name] {
			return nil, errValidation(fieldError{Field: name, Message: "is given more than once"})
		}
		seen[name] = true
		members = append(members, jsonMember{Name: name, Value: raw})
	}
	return members, nil
}

// writeJSON writes an already encoded JSON body.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
