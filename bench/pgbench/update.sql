-- update: PUT /api/{user}/tasks/{id} with {"title": "..."}, no If-Match
-- (store.go sqlUpdateTask: every other field null, so kept).
-- benchsql_test.go checks the statement.
\set uid random(1, 50)
\set id (:uid - 1) * 100 + random(1, 100)
\set title random(1, 1000000000)
\set due_set false

UPDATE tasks SET
    title           = coalesce(:title, title),
    description     = coalesce(NULL, description),
    completed       = coalesce(NULL, completed),
    priority        = coalesce(NULL, priority),
    tags            = coalesce(NULL, tags),
    due_date        = CASE WHEN :due_set THEN NULL ELSE due_date END,
    recurrence_rule = CASE WHEN NULL::text IS NULL THEN recurrence_rule ELSE nullif(NULL, '') END,
    recurrence_tz   = CASE WHEN NULL::text IS NULL THEN recurrence_tz ELSE nullif(NULL, '') END,
    recurrence_from = CASE WHEN NULL::text IS NULL THEN recurrence_from ELSE nullif(NULL, '') END,
    reminders       = coalesce(NULL, reminders)
WHERE id = :id AND user_id = :uid AND deleted_at IS NULL AND (NULL::integer[] IS NULL OR version = ANY (NULL))
    AND ((CASE WHEN :due_set THEN NULL::timestamptz ELSE due_date END) IS NOT NULL
         OR (CASE WHEN NULL::text IS NULL THEN recurrence_rule ELSE nullif(NULL, '') END) IS NULL
            AND cardinality(coalesce(NULL::text[], reminders)) = 0)
    AND NOT (NOT completed AND coalesce(NULL::boolean, false) AND next_occurrence_id IS NULL
             AND (CASE WHEN NULL::text IS NULL THEN recurrence_rule ELSE nullif(NULL, '') END) IS NOT NULL)
RETURNING id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id;
