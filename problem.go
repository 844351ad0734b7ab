package main

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
)

// The one place where errors get their HTTP meaning: a code's status and
// problem type, and the problem+json body (RFC 9457) every error response has.

// problemKind is how a code is answered.
type problemKind struct {
	status int
	typ    string // "about:blank" unless the condition has a type of its own
}

var problemKinds = map[Code]problemKind{
	CodeInternal:           {http.StatusInternalServerError, "about:blank"},
	CodeBadRequest:         {http.StatusBadRequest, "about:blank"},
	CodeInvalid:            {http.StatusUnprocessableEntity, "/problems/validation-error"},
	CodeKeyReused:          {http.StatusUnprocessableEntity, "/problems/idempotency-key-reused"},
	CodeUnauthenticated:    {http.StatusUnauthorized, "about:blank"},
	CodeInvalidToken:       {http.StatusUnauthorized, "about:blank"},
	CodeForbidden:          {http.StatusForbidden, "about:blank"},
	CodeNotFound:           {http.StatusNotFound, "about:blank"},
	CodeMethodNotAllowed:   {http.StatusMethodNotAllowed, "about:blank"},
	CodeQuotaExceeded:      {http.StatusConflict, "/problems/quota-exceeded"},
	CodeKeyInUse:           {http.StatusConflict, "/problems/idempotency-key-in-use"},
	CodeGone:               {http.StatusGone, "about:blank"},
	CodePreconditionFailed: {http.StatusPreconditionFailed, "/problems/version-mismatch"},
	CodeTooLarge:           {http.StatusRequestEntityTooLarge, "about:blank"},
	CodeURITooLong:         {http.StatusRequestURITooLong, "about:blank"},
	CodeUnsupportedMedia:   {http.StatusUnsupportedMediaType, "about:blank"},
	CodeRateLimited:        {http.StatusTooManyRequests, "/problems/rate-limited"},
	CodeHeadersTooLarge:    {http.StatusRequestHeaderFieldsTooLarge, "about:blank"},
	CodeUnavailable:        {http.StatusServiceUnavailable, "/problems/database-unavailable"},
	CodeKeysUnavailable:    {http.StatusServiceUnavailable, "/problems/signing-keys-unavailable"},
	CodeCanceled:           {http.StatusServiceUnavailable, "about:blank"},
}

// statusOf is the HTTP status a code is answered with.
func statusOf(c Code) int { return problemKinds[c].status }

// authRealm is the challenge of every 401 (RFC 6750).
const authRealm = `Bearer realm="tasks-api"`

// problem is the body of every error response.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Errors    []FieldError `json:"errors,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
}

// asError is err as the client will see it: an *Error as it is, a cancelled
// request as CodeCanceled, anything else as an internal error.
func asError(ctx context.Context, err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return &Error{Code: CodeCanceled, Message: "The request was cancelled.", Err: err}
	}
	return &Error{Code: CodeInternal, Message: "An unexpected error occurred.", Err: err}
}

// respondError writes err as problem+json and hands it to the access log,
// which logs it with the request's line (see logRequests): every error
// response, from a handler or a middleware, is written and logged alike.
func respondError(w http.ResponseWriter, r *http.Request, err error) {
	e := asError(r.Context(), err)
	if ri := infoFrom(r.Context()); ri != nil {
		ri.err, ri.cause = e, err
	}
	kind, ok := problemKinds[e.Code]
	if !ok {
		kind = problemKinds[CodeInternal]
	}
	fields := e.Fields
	if kind.status == http.StatusUnprocessableEntity && len(fields) == 0 {
		fields = []FieldError{{Field: "body", Message: e.Message}} // every 422 names a field
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Del("ETag")
	h.Del("Location")
	h.Del("Link")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	switch e.Code {
	case CodeUnauthenticated:
		h.Set("WWW-Authenticate", authRealm)
	case CodeInvalidToken:
		h.Set("WWW-Authenticate", authRealm+`, error="invalid_token", error_description="`+e.Message+`"`)
	}
	body, _ := json.Marshal(problem{
		Type: kind.typ, Title: http.StatusText(kind.status), Status: kind.status, Detail: e.Message,
		Errors: fields, RequestID: requestIDFrom(r.Context()),
	})
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(kind.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
