package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Idempotency-Key (API.md "Safe retries"): the first request with a key runs
// inside a transaction that also records its response; the two commit
// together or not at all, so a crash can never leave a change without its
// key or a key without its change. A retry with the same key gets that
// response back without running again. The key is held by a transaction-scoped
// advisory lock while the first request runs, so a concurrent retry, on any
// instance, is told 409 instead of running twice.

const idempotencyTTL = 24 * time.Hour

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Location", "ETag"}

// idempotencyKeyOf returns the request's key, "" when it has none, or a 400.
func idempotencyKeyOf(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", nil
	}
	key := values[0]
	if len(values) > 1 || len(key) == 0 || len(key) > 255 {
		return "", errBadRequest("Idempotency-Key must be one value of 1 to 255 printable ASCII characters.")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", errBadRequest("Idempotency-Key must be one value of 1 to 255 printable ASCII characters.")
		}
	}
	return key, nil
}

// idempotent runs writes that carry an Idempotency-Key as described above;
// other requests pass straight through.
func idempotent(store *Store, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				next.ServeHTTP(w, r)
				return
			}
			key, err := idempotencyKeyOf(r)
			if err != nil {
				respondError(w, r, log, err)
				return
			}
			if key == "" {
				next.ServeHTTP(w, r)
				return
			}
			body, err := readAllLimited(w, r)
			if err != nil {
				respondError(w, r, log, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			req := idempotentRequest{
				user: userIDFrom(r.Context()), key: key, method: r.Method,
				path: canonicalPath(r), bodyHash: sha256.Sum256(body),
			}
			if err := store.runIdempotent(w, r, req, next); err != nil {
				respondError(w, r, log, err)
			}
		})
	}
}

type idempotentRequest struct {
	user, key, method, path string
	bodyHash                [32]byte
}

// lockID names the key's advisory lock: a 64-bit hash of user and key.
func (q idempotentRequest) lockID() int64 {
	h := fnv.New64a()
	h.Write([]byte(q.user))
	h.Write([]byte{0})
	h.Write([]byte(q.key))
	return int64(h.Sum64())
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

// storedResponse is a response as recorded for replay.
type storedResponse struct {
	method, path string
	bodyHash     []byte
	status       int
	headers      map[string]string
	body         []byte
}

const (
	sqlIdempotencyLock = `SELECT pg_try_advisory_xact_lock($1)`
	// The lookup runs as its own statement after the lock is held, so its
	// snapshot sees a first request that committed while this one waited.
	sqlIdempotencyLookup = `
SELECT method, path, body_hash, status, headers, body FROM idempotency_keys
WHERE user_id = $1 AND key = $2 AND created_at > now() - make_interval(secs => $3)`
	// An expired record of the same key is replaced.
	sqlIdempotencyRecord = `
INSERT INTO idempotency_keys (user_id, key, method, path, body_hash, status, headers, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (user_id, key) DO UPDATE SET
    method = excluded.method, path = excluded.path, body_hash = excluded.body_hash, status = excluded.status,
    headers = excluded.headers, body = excluded.body, created_at = now()`
)

// runIdempotent replays the recorded response of req, or runs next in a
// transaction that records its response. Responses of 5xx are not recorded
// (the change is rolled back), so a retry runs again.
func (s *Store) runIdempotent(w http.ResponseWriter, r *http.Request, req idempotentRequest, next http.Handler) error {
	ctx := r.Context()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("idempotency: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // after Commit, a no-op

	batch := &pgx.Batch{}
	var locked bool
	var prev *storedResponse
	batch.Queue(sqlIdempotencyLock, req.lockID()).QueryRow(func(row pgx.Row) error { return row.Scan(&locked) })
	batch.Queue(sqlIdempotencyLookup, req.user, req.key, idempotencyTTL.Seconds()).QueryRow(func(row pgx.Row) error {
		var sr storedResponse
		var headers []byte
		err := row.Scan(&sr.method, &sr.path, &sr.bodyHash, &sr.status, &headers, &sr.body)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		prev = &sr
		return json.Unmarshal(headers, &sr.headers)
	})
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("idempotency: lookup: %w", err)
	}
	if !locked {
		return &apiError{Status: http.StatusConflict, Type: problemKeyInUse, RetryAfter: 1,
			Detail: "A request with this Idempotency-Key is still being processed; retry shortly."}
	}
	if prev != nil {
		if prev.method != req.method || prev.path != req.path || !bytes.Equal(prev.bodyHash, req.bodyHash[:]) {
			return &apiError{Status: http.StatusUnprocessableEntity, Type: problemKeyReused,
				Detail: "This Idempotency-Key was used for a different request (method, path or body); use a new key."}
		}
		replay(w, r, prev)
		return nil
	}

	rec := &bufferedWriter{header: w.Header()}
	next.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, txKey{}, tx)))
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status < 500 {
		headers := map[string]string{}
		for _, h := range replayedHeaders {
			if v := w.Header().Get(h); v != "" {
				headers[h] = v
			}
		}
		hj, _ := json.Marshal(headers)
		body := rec.body.Bytes()
		if body == nil {
			body = []byte{} // a 204 has no body, but the record's body is not NULL
		}
		if _, err := tx.Exec(ctx, sqlIdempotencyRecord, req.user, req.key, req.method, req.path,
			req.bodyHash[:], rec.status, hj, body); err != nil {
			return fmt.Errorf("idempotency: record: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("idempotency: commit: %w", err)
		}
	}
	w.WriteHeader(rec.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(rec.body.Bytes())
	}
	return nil
}

func replay(w http.ResponseWriter, r *http.Request, sr *storedResponse) {
	h := w.Header()
	for k, v := range sr.headers {
		h.Set(k, v)
	}
	h.Set("Idempotent-Replayed", "true")
	if len(sr.body) > 0 {
		h.Set("Content-Length", strconv.Itoa(len(sr.body)))
	}
	w.WriteHeader(sr.status)
	_, _ = w.Write(sr.body)
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

// purgeIdempotencyKeys deletes expired records in small batches, off the
// request path; lookups ignore expired records anyway.
func (s *Store) purgeIdempotencyKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `
DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT 1000))`,
			idempotencyTTL.Seconds())
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 1000 {
			return total, nil
		}
	}
}

// purgeExpiredKeys is the periodic purge, logging what it did.
func (s *Store) purgeExpiredKeys(ctx context.Context, log *slog.Logger) {
	if n, err := s.purgeIdempotencyKeys(ctx); err != nil {
		log.Warn("purging expired idempotency keys", "error", err)
	} else if n > 0 {
		log.Info("purged expired idempotency keys", "count", n)
	}
}
