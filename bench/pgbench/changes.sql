-- changes: GET /api/{user}/changes?since=TOKEN&limit=100, an incremental sync
-- of 100 changes: the token is the one the user's feed gave before its 100
-- seeded tasks were created, position 0 (store_changes.go ChangesAfter,
-- fetched as 101 rows to know whether more follow). The service sends the
-- two statements as one pgx batch, in one round trip: here a pipeline.
-- benchsql_test.go checks the statements.
\set uid random(1, 50)
\set since 0
\set limit 101
\startpipeline
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, change_seq FROM tasks
WHERE user_id = :uid AND change_seq > :since
ORDER BY change_seq LIMIT :limit;
SELECT task_id, seq FROM task_tombstones
WHERE user_id = :uid AND seq > :since
ORDER BY seq LIMIT :limit;
\endpipeline
