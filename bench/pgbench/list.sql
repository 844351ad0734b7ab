-- list: GET /api/{user}/tasks, the default page (store.go listSQL with the
-- default query: sort created_at, order desc, limit 100, fetched as 101 rows
-- to know whether a next page exists). benchsql_test.go checks the statement.
\set uid random(1, 50)
\set limit 101
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = :uid) FROM tasks WHERE user_id = :uid AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT :limit;
