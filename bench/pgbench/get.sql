-- get: GET /api/{user}/tasks/{id} of one of the user's seeded tasks
-- (store.go sqlGetTaskRow). benchsql_test.go checks the statement.
\set uid random(1, 50)
\set id (:uid - 1) * 100 + random(1, 100)
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END FROM tasks WHERE id = :id AND user_id = :uid AND deleted_at IS NULL;
