-- create: POST /api/{user}/tasks with {"title": "..."} (store.go
-- sqlCreateTask; the handler's defaults: description "", completed false,
-- priority none, no tags, no due date; MAX_TASKS_PER_USER's default quota).
-- benchsql_test.go checks the statement.
\set uid random(1, 50)
\set title random(1, 1000000000)
\set completed false
\set quota 10000

WITH slot AS (
    INSERT INTO task_counts AS c (user_id, tasks, seq) VALUES (:uid, 1, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1, seq = c.seq + 1
    WHERE c.tasks < :quota
    RETURNING seq
)
INSERT INTO tasks (user_id, title, description, completed, completed_at, priority, tags, due_date, change_seq,
                   recurrence_rule, recurrence_tz, recurrence_from, reminders, series_id, occurrence, occurrence_wall)
SELECT :uid, :title, '', :completed, CASE WHEN :completed THEN now() END, 'none', '{}', NULL, seq, NULL, NULL, NULL, '{}', NULL, NULL, NULL FROM slot
RETURNING id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id;
