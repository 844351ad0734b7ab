-- delete: DELETE /api/{user}/tasks/{id}, no If-Match: the task goes to the
-- trash (store.go sqlTrashTask). Each transaction trashes the next task of
-- the pool the bench made for the scenario (task :pool_first + k belongs to
-- user k % 50 + 1); the bench passes -D n=-1 -D clients=C -D pool_first=ID,
-- and each client's n goes on from one transaction to the next, so the
-- clients share the pool without meeting. benchsql_test.go checks the
-- statement.
\set n :n + 1
\set k :n * :clients + :client_id
\set id :pool_first + :k
\set uid :k % 50 + 1

UPDATE tasks SET deleted_at = now()
WHERE id = :id AND user_id = :uid AND deleted_at IS NULL AND (NULL::integer[] IS NULL OR version = ANY (NULL));
