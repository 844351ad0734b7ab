-- Not the service's SQL: ratelimit.sql on an UNLOGGED table, which writes
-- no WAL, so a request does not wait for a flush to disk; the buckets are
-- lost (emptied) when PostgreSQL crashes, which for a rate limit means the
-- users start with a full bucket.
\set uid random(1, 50)
\set rate 50
\set burst 100

INSERT INTO rate_buckets_unlogged AS b (user_id, tokens, at) VALUES (:uid, :burst - 1, now())
ON CONFLICT (user_id) DO UPDATE
SET tokens = least(:burst, b.tokens + :rate * extract(epoch FROM now() - b.at)) - 1, at = now()
WHERE least(:burst, b.tokens + :rate * extract(epoch FROM now() - b.at)) >= 1
RETURNING tokens;
