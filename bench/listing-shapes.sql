-- Every shape of listing query the service runs, exactly as store.go's
-- listSQL writes it for the request in the comment above it (benchsql_test.go
-- checks that). bench -scale runs EXPLAIN (ANALYZE, BUFFERS) of each for the
-- user with 20,000 tasks; "next page" is the page after the first one, and
-- q=WORD is explained once for each word the search is measured with. A
-- search runs its first statement, then maybe the walk, then maybe the
-- search index (store_search.go): each is a shape of its own.

-- GET /api/heavy/tasks
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $2;

-- GET /api/heavy/tasks, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $4;

-- GET /api/heavy/tasks?sort=created_at&order=asc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at ASC, id ASC LIMIT $2;

-- GET /api/heavy/tasks?sort=created_at&order=asc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (created_at, id) > ($2, $3) ORDER BY created_at ASC, id ASC LIMIT $4;

-- GET /api/heavy/tasks?sort=updated_at&order=desc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY updated_at DESC, id DESC LIMIT $2;

-- GET /api/heavy/tasks?sort=updated_at&order=desc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (updated_at, id) < ($2, $3) ORDER BY updated_at DESC, id DESC LIMIT $4;

-- GET /api/heavy/tasks?sort=updated_at&order=asc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY updated_at ASC, id ASC LIMIT $2;

-- GET /api/heavy/tasks?sort=updated_at&order=asc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (updated_at, id) > ($2, $3) ORDER BY updated_at ASC, id ASC LIMIT $4;

-- GET /api/heavy/tasks?sort=priority&order=desc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY priority_rank DESC, id DESC LIMIT $2;

-- GET /api/heavy/tasks?sort=priority&order=desc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (priority_rank, id) < ($2, $3) ORDER BY priority_rank DESC, id DESC LIMIT $4;

-- GET /api/heavy/tasks?sort=priority&order=asc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY priority_rank ASC, id ASC LIMIT $2;

-- GET /api/heavy/tasks?sort=priority&order=asc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (priority_rank, id) > ($2, $3) ORDER BY priority_rank ASC, id ASC LIMIT $4;

-- GET /api/heavy/tasks?sort=title&order=desc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY (lower(title) COLLATE "C") DESC, id DESC LIMIT $2;

-- GET /api/heavy/tasks?sort=title&order=desc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND ((lower(title) COLLATE "C"), id) < (lower($2::text) COLLATE "C", $3) ORDER BY (lower(title) COLLATE "C") DESC, id DESC LIMIT $4;

-- GET /api/heavy/tasks?sort=title&order=asc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY (lower(title) COLLATE "C") ASC, id ASC LIMIT $2;

-- GET /api/heavy/tasks?sort=title&order=asc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND ((lower(title) COLLATE "C"), id) > (lower($2::text) COLLATE "C", $3) ORDER BY (lower(title) COLLATE "C") ASC, id ASC LIMIT $4;

-- GET /api/heavy/tasks?sort=due_date&order=desc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY coalesce(due_date, '-infinity') DESC, id DESC LIMIT $2;

-- GET /api/heavy/tasks?sort=due_date&order=desc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (coalesce(due_date, '-infinity'), id) < ($2::timestamptz, $3) ORDER BY coalesce(due_date, '-infinity') DESC, id DESC LIMIT $4;

-- GET /api/heavy/tasks?sort=due_date&order=asc
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY coalesce(due_date, 'infinity') ASC, id ASC LIMIT $2;

-- GET /api/heavy/tasks?sort=due_date&order=asc, next page
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND (coalesce(due_date, 'infinity'), id) > ($2::timestamptz, $3) ORDER BY coalesce(due_date, 'infinity') ASC, id ASC LIMIT $4;

-- GET /api/heavy/tasks?q=WORD
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1)
FROM (SELECT *, created_at AS k FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 3 * $3) tasks
WHERE (strpos(lower(title), lower($2)) > 0 OR strpos(lower(description), lower($2)) > 0) ORDER BY k DESC, id DESC LIMIT $3;

-- GET /api/heavy/tasks?q=WORD, walk
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1)
FROM (SELECT *, created_at AS k FROM tasks WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT (SELECT 30 * $3)) tasks
WHERE (strpos(lower(title), lower($2)) > 0 OR strpos(lower(description), lower($2)) > 0) ORDER BY k DESC, id DESC LIMIT $3;

-- GET /api/heavy/tasks?q=WORD, search index
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, feed.seq
FROM (SELECT seq FROM task_counts WHERE user_id = $1) feed
LEFT JOIN (
    SELECT * FROM (
        SELECT *, created_at AS k FROM (
            SELECT tasks.* FROM task_search JOIN tasks ON tasks.id = task_search.task_id
            WHERE task_search.user_id = $1 AND task_search.keys @> task_trigrams($1, $2, '')
                AND tasks.user_id = $1 AND tasks.deleted_at IS NULL
            OFFSET 0) tasks
        WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC OFFSET 0) tasks
    WHERE (strpos(lower(title), lower($2)) > 0 OR strpos(lower(description), lower($2)) > 0) ORDER BY k DESC, id DESC LIMIT $3) tasks ON true
ORDER BY k DESC, id DESC;

-- GET /api/heavy/tasks?status=pending&priority=high
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND NOT completed AND priority = $2 ORDER BY created_at DESC, id DESC LIMIT $3;

-- GET /api/heavy/tasks?tag=work
SELECT id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, recurrence_rule, recurrence_tz, recurrence_from, reminders, CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id, (SELECT seq FROM task_counts WHERE user_id = $1) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL AND tags @> ARRAY[$2::text] ORDER BY created_at DESC, id DESC LIMIT $3;
