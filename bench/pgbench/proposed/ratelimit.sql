-- Not the service's SQL: a per-user rate limit kept in PostgreSQL, so that
-- it holds across instances (the service's RATE_LIMIT is per instance). A
-- token bucket per user, one row each, RATE_LIMIT tokens per second and a
-- burst of twice that: a request takes a token if one has been earned, else
-- it is refused (no row comes back) and nothing is written. bench -ratelimit
-- measures its cost; it runs it with a rate no load reaches, so that every
-- request takes a token and writes, as for users who keep under the limit.
\set uid random(1, 50)
\set rate 50
\set burst 100

INSERT INTO rate_buckets AS b (user_id, tokens, at) VALUES (:uid, :burst - 1, now())
ON CONFLICT (user_id) DO UPDATE
SET tokens = least(:burst, b.tokens + :rate * extract(epoch FROM now() - b.at)) - 1, at = now()
WHERE least(:burst, b.tokens + :rate * extract(epoch FROM now() - b.at)) >= 1
RETURNING tokens;
