-- purge: DELETE /api/{user}/trash/{id}: a trashed task deleted for good, its
-- tombstone left for the change feed (store_trash.go sqlPurge). Each
-- transaction deletes the next task of the pool the bench made for the
-- scenario and moved to the trash (task :pool_first + k belongs to user
-- k % 50 + 1); the bench passes -D n=-1 -D clients=C -D pool_first=ID, and
-- each client's n goes on from one transaction to the next, so the clients
-- share the pool without meeting. benchsql_test.go checks the statement.
\set n :n + 1
\set k :n * :clients + :client_id
\set id :pool_first + :k
\set uid :k % 50 + 1

WITH gone AS (
    DELETE FROM tasks
    WHERE user_id = :uid AND deleted_at IS NOT NULL AND (:id::bigint IS NULL OR id = :id)
    RETURNING user_id, id, change_seq, deleted_at
)
INSERT INTO task_tombstones (user_id, task_id, seq, deleted_at)
SELECT user_id, id, change_seq, deleted_at FROM gone
ON CONFLICT DO NOTHING;
