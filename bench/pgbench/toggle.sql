-- toggle: PATCH /api/{user}/tasks/{id}/complete with an empty body, no
-- If-Match (store.go sqlSetCompleted with completed null: toggle).
-- benchsql_test.go checks the statement.
\set uid random(1, 50)
\set id (:uid - 1) * 100 + random(1, 100)

UPDATE tasks SET completed = coalesce(NULL, NOT completed)
WHERE id = :id AND user_id = :uid AND deleted_at IS NULL AND (NULL::integer[] IS NULL OR version = ANY (NULL))
    AND NOT (recurrence_rule IS NOT NULL AND next_occurrence_id IS NULL AND NOT completed AND coalesce(NULL, NOT completed))
RETURNING id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id;
