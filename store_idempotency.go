package main

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The storage half of Idempotency-Key (idempotency.go is the HTTP half): a
// key is claimed under a transaction-scoped advisory lock, so a concurrent
// retry on any instance sees it taken; its response is recorded in the
// transaction of the change it guards, so the two commit together or not at
// all.

const idempotencyTTL = 24 * time.Hour

// idempotentRequest is what a key stands for: one request of one user.
type idempotentRequest struct {
	user, key, method, path string
	bodyHash                [32]byte
}

// lockID names the key's advisory lock: a 64-bit hash of user and key.
func (r idempotentRequest) lockID() int64 {
	h := fnv.New64a()
	h.Write([]byte(r.user))
	h.Write([]byte{0})
	h.Write([]byte(r.key))
	return int64(h.Sum64())
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
	sqlIdempotencyPurge = `
DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT 1000))`
)

var errKeyInUse = &Error{Code: CodeKeyInUse, RetryAfter: time.Second,
	Message: "A request with this Idempotency-Key is still being processed; retry shortly."}

// ClaimIdempotencyKey holds req's key until the transaction ends and returns
// the response recorded for it within the last 24 hours, or nil. A key that
// another transaction holds is errKeyInUse. Both statements go in one round
// trip. Run it in a transaction (Store.InTx).
func (q Queries) ClaimIdempotencyKey(ctx context.Context, req idempotentRequest) (*storedResponse, error) {
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
	if err := q.db.SendBatch(ctx, batch).Close(); err != nil {
		return nil, dbFail("idempotency: lookup", err)
	}
	if !locked {
		return nil, errKeyInUse
	}
	return prev, nil
}

// RecordResponse stores the response given to req, for replay.
func (q Queries) RecordResponse(ctx context.Context, req idempotentRequest, resp storedResponse) error {
	headers, err := json.Marshal(resp.headers)
	if err != nil {
		return err
	}
	body := resp.body
	if body == nil {
		body = []byte{} // a 204 has no body, but the record's body is not NULL
	}
	if _, err := q.db.Exec(ctx, sqlIdempotencyRecord, req.user, req.key, req.method, req.path,
		req.bodyHash[:], resp.status, headers, body); err != nil {
		return dbFail("idempotency: record", err)
	}
	return nil
}

// PurgeIdempotencyKeys deletes expired records in small batches, off the
// request path (lookups ignore expired records anyway), and says how many.
func (q Queries) PurgeIdempotencyKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := q.db.Exec(ctx, sqlIdempotencyPurge, idempotencyTTL.Seconds())
		if err != nil {
			return total, dbFail("purge idempotency keys", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 1000 {
			return total, nil
		}
	}
}
