-- update: PUT /api/{user}/tasks/{id} with {"title": "..."}, no If-Match
-- (store.go sqlUpdateTask: every other field null, so kept).
-- benchsql_test.go checks the statement.
\set uid random(1, 50)
\set id (:uid - 1) * 100 + random(1, 100)
\set title random(1, 1000000000)
\set due_set false

UPDATE tasks SET
    title       = coalesce(:title, title),
    description = coalesce(NULL, description),
    completed   = coalesce(NULL, completed),
    priority    = coalesce(NULL, priority),
    tags        = coalesce(NULL, tags),
    due_date    = CASE WHEN :due_set THEN NULL ELSE due_date END
WHERE id = :id AND user_id = :uid AND deleted_at IS NULL AND (NULL::integer[] IS NULL OR version = ANY (NULL))
RETURNING id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at;
