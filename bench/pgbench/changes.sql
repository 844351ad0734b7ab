-- changes: GET /api/{user}/changes?since=TOKEN&limit=100, an incremental sync
-- of 100 changes: the token is the one the user's feed gave before its 100
-- seeded tasks were created, position 0 (store_changes.go ChangesAfterJSON,
-- fetched as 101 rows to know whether more follow): one statement, the tasks
-- changed and the first tombstone after the position.
-- benchsql_test.go checks the statement.
\set uid random(1, 50)
\set since 0
\set limit 101

(SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, change_seq, NULL::bigint FROM tasks
WHERE user_id = :uid AND change_seq > :since
ORDER BY change_seq LIMIT :limit)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, (SELECT min(seq) FROM task_tombstones WHERE user_id = :uid AND seq > :since);
