package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The HTTP half of Idempotency-Key (API.md "Safe retries"; the storage half
// is store_idempotency.go): the first request with a key runs in a
// transaction that also records its response, buffered until the commit; a
// retry with the same key gets that response back without running again.

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Location", "ETag", "Link"}

// idempotencyKeyOf returns the request's key, "" when it has none, or a 400.
func idempotencyKeyOf(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", nil
	}
	bad := newError(CodeBadRequest, "Idempotency-Key must be one value of 1 to 255 printable ASCII characters.")
	if len(values) > 1 || !validIdempotencyKey(values[0]) {
		return "", bad
	}
	return values[0], nil
}

// validIdempotencyKey: 1 to 255 printable ASCII characters.
func validIdempotencyKey(key string) bool {
	if len(key) == 0 || len(key) > 255 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// idempotent runs next on the pool, or, for a write that carries an
// Idempotency-Key, in a transaction that claims the key and records the
// response. Responses of 5xx are not recorded (the change is rolled back), so
// a retry runs again.
func idempotent(store *Store) func(txHandler) apiHandler {
	return func(next txHandler) apiHandler {
		return func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				return next(w, r, store.Queries)
			}
			key, err := idempotencyKeyOf(r)
			if err != nil || key == "" {
				if err != nil {
					return err
				}
				return next(w, r, store.Queries)
			}
			body, err := readAllLimited(w, r)
			if err != nil {
				return err
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			req := idempotentRequest{
				user: userIDFrom(r.Context()), key: key, method: r.Method,
				path: canonicalPath(r), bodyHash: sha256.Sum256(body),
			}
			var resp *storedResponse
			replayed := false
			err = store.InTx(r.Context(), func(q Queries) error {
				prev, err := q.ClaimIdempotencyKey(r.Context(), req)
				if err != nil {
					return err
				}
				if prev != nil {
					if prev.method != req.method || prev.path != req.path || !bytes.Equal(prev.bodyHash, req.bodyHash[:]) {
						return errKeyReused
					}
					resp, replayed = prev, true
					return nil
				}
				if resp, err = runBuffered(w, r, q, next); err != nil {
					return err
				}
				return q.RecordResponse(r.Context(), req, *resp)
			})
			if err != nil {
				return err
			}
			writeStored(w, r, resp, replayed)
			return nil
		}
	}
}

var errKeyReused = &Error{Code: CodeKeyReused,
	Message: "This Idempotency-Key was used for a different request (method, path or body); use a new key.",
	Fields: []FieldError{{Field: "Idempotency-Key",
		Message: "was used for a different request (method, path or body); use a new key"}}}

// runBuffered runs next on q with its response held back. A client error is
// written into the response, to be recorded like a success; a server error
// is returned, so the transaction rolls back.
func runBuffered(w http.ResponseWriter, r *http.Request, q Queries, next txHandler) (*storedResponse, error) {
	buf := &bufferedWriter{header: w.Header()}
	if err := next(buf, r, q); err != nil {
		if statusOf(asError(r.Context(), err).Code) >= 500 {
			return nil, err
		}
		respondError(buf, r, err)
	}
	if buf.status == 0 {
		buf.status = http.StatusOK
	}
	if buf.status >= 500 {
		return nil, fmt.Errorf("the handler answered %d: not recorded", buf.status)
	}
	headers := map[string]string{}
	for _, h := range replayedHeaders {
		if v := w.Header().Get(h); v != "" {
			headers[h] = v
		}
	}
	return &storedResponse{status: buf.status, headers: headers, body: buf.body.Bytes()}, nil
}

// writeStored writes the response of this request, or the replay of an
// earlier one's.
func writeStored(w http.ResponseWriter, r *http.Request, sr *storedResponse, replayed bool) {
	h := w.Header()
	if replayed {
		for k, v := range sr.headers {
			h.Set(k, v)
		}
		h.Set("Idempotent-Replayed", "true")
	}
	if len(sr.body) > 0 {
		h.Set("Content-Length", strconv.Itoa(len(sr.body)))
	}
	w.WriteHeader(sr.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(sr.body)
	}
}

// canonicalPath is the request path with "me" replaced by the user's id, so
// both spellings of a path count as the same request.
func canonicalPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if r.PathValue("user_id") == "me" {
		p = "/api/" + url.PathEscape(userIDFrom(r.Context())) + strings.TrimPrefix(p, "/api/me")
	}
	if r.URL.RawQuery != "" {
		p += "?" + r.URL.RawQuery
	}
	return p
}

// bufferedWriter holds the status and body until the transaction commits;
// headers go straight to the real writer's map.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
