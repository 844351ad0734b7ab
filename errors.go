package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Code says what kind of failure an error is, in the service's own terms. The
// store, the domain and the middleware return coded errors; problem.go is the
// one place that turns a code into an HTTP status and a problem+json body.
type Code int

const (
	CodeInternal           Code = iota // a bug or an unexpected failure: details logged, never shown
	CodeBadRequest                     // the request is malformed (not JSON, bad header syntax)
	CodeInvalid                        // well-formed but invalid: Fields says which fields and why
	CodeUnauthenticated                // no credentials were sent
	CodeInvalidToken                   // a token was sent and refused
	CodeForbidden                      // authenticated, but not allowed
	CodeNotFound                       // no such resource for this user
	CodeMethodNotAllowed               // the route exists, the method does not
	CodeQuotaExceeded                  // the user holds the maximum number of tasks
	CodeKeyInUse                       // an Idempotency-Key whose first request is still running
	CodeKeyReused                      // an Idempotency-Key sent again with another request
	CodeGone                           // a resource (a sync token) that is too old to serve
	CodePreconditionFailed             // If-Match named another version
	CodeTooLarge                       // a body over the size limit
	CodeURITooLong                     // a request target over the size limit
	CodeUnsupportedMedia               // a body that is not JSON
	CodeRateLimited                    // the user's request rate is over the limit
	CodeHeadersTooLarge                // request headers over the size limit
	CodeUnavailable                    // the database cannot serve now; retry shortly
	CodeKeysUnavailable                // the JWKS cannot be fetched; retry shortly
	CodeCanceled                       // the client went away or the request ran out of time
)

// Error is a failure with a meaning for the client.
type Error struct {
	Code       Code
	Message    string       // shown to the client: what happened and what to do
	Fields     []FieldError // CodeInvalid: one entry per bad field
	RetryAfter time.Duration
	Err        error // the cause, for the log
}

// FieldError is one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// newError is an Error of code with a message for the client.
func newError(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// invalid is a validation error naming every bad field.
func invalid(fields ...FieldError) *Error {
	msg := "The request has invalid fields; see errors."
	if len(fields) == 1 {
		msg = fmt.Sprintf("%s: %s.", fields[0].Field, fields[0].Message)
	}
	return &Error{Code: CodeInvalid, Message: msg, Fields: fields}
}

// codeOf is err's code: CodeInternal unless err is, or wraps, an *Error.
func codeOf(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// Errors of the task domain, returned (wrapped or not) by the store.
var (
	errTaskNotFound    = &Error{Code: CodeNotFound, Message: "No task with this id exists for this user."}
	errVersionMismatch = &Error{Code: CodePreconditionFailed,
		Message: "The task has changed since the version named in If-Match; fetch it and try again."}
	errQuotaExceeded = &Error{Code: CodeQuotaExceeded,
		Message: "This user has reached the maximum number of tasks; delete some first."}
)

// errDatabaseUnavailable is a database that cannot be reached or is
// overloaded: the client may retry shortly.
func errDatabaseUnavailable(cause error) *Error {
	return &Error{Code: CodeUnavailable, RetryAfter: time.Second, Err: cause,
		Message: "The database is not available right now; retry shortly."}
}

// fieldErrors collects validation problems; at most maxFieldErrors are kept.
type fieldErrors []FieldError

const maxFieldErrors = 50

func (e *fieldErrors) add(field, msg string) {
	if len(*e) >= maxFieldErrors {
		return
	}
	if len(field) > 100 {
		field = field[:100] + "..."
	}
	*e = append(*e, FieldError{Field: strings.ToValidUTF8(field, "\uFFFD"), Message: msg})
}

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return invalid(e...)
}

var codeNames = [...]string{
	CodeInternal: "internal", CodeBadRequest: "bad_request", CodeInvalid: "invalid",
	CodeUnauthenticated: "unauthenticated", CodeInvalidToken: "invalid_token", CodeForbidden: "forbidden",
	CodeNotFound: "not_found", CodeMethodNotAllowed: "method_not_allowed", CodeQuotaExceeded: "quota_exceeded",
	CodeKeyInUse: "idempotency_key_in_use", CodeKeyReused: "idempotency_key_reused", CodeGone: "gone",
	CodePreconditionFailed: "precondition_failed", CodeTooLarge: "too_large", CodeURITooLong: "uri_too_long",
	CodeUnsupportedMedia: "unsupported_media_type", CodeRateLimited: "rate_limited",
	CodeHeadersTooLarge: "headers_too_large", CodeUnavailable: "unavailable",
	CodeKeysUnavailable: "keys_unavailable", CodeCanceled: "canceled",
}

// String is the code's name, as the access log shows it.
func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return "code_" + strconv.Itoa(int(c))
}
