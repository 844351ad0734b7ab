package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The trash: tasks with a deleted_at, out of lists and the quota, until they
// are restored or deleted for good. Deleting for good leaves a tombstone
// behind for the change feed (store_changes.go).

// sqlListTrash reads a page of the trash, most recently deleted first.
const sqlListTrash = `
SELECT ` + taskColumns + ` FROM tasks
WHERE user_id = $1 AND deleted_at IS NOT NULL AND ($2::timestamptz IS NULL OR (deleted_at, id) < ($2, $3))
ORDER BY deleted_at DESC, id DESC LIMIT $4`

// ListTrash returns up to limit trashed tasks after the cursor (nil: from the
// start), and whether more follow.
func (q Queries) ListTrash(ctx context.Context, userID string, after *cursor, limit int) ([]Task, bool, error) {
	var afterTime *time.Time
	var afterID int64
	if after != nil {
		afterTime, afterID = &after.Time, after.ID
	}
	rows, err := q.db.Query(ctx, sqlListTrash, userID, afterTime, afterID, limit+1)
	if err != nil {
		return nil, false, dbFail("list trash", err)
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Task, error) {
		var t Task
		return t, scanTask(row, &t, userID)
	})
	if err != nil {
		return nil, false, dbFail("list trash", err)
	}
	if len(tasks) > limit {
		return tasks[:limit], true, nil
	}
	return tasks, false, nil
}

// A restore takes a quota slot: it locks the task's row, then the user's
// count row (the order every write takes them in), and checks the count,
// before the update whose trigger takes the slot and a feed position.
const (
	sqlLockTrashed = `
SELECT version FROM tasks WHERE id = $1 AND user_id = $2 AND deleted_at IS NOT NULL FOR UPDATE`
	sqlQuotaHasRoom = `
SELECT coalesce((SELECT tasks < $2 FROM task_counts WHERE user_id = $1 FOR UPDATE), true)`
	sqlRestoreTask = `
UPDATE tasks SET deleted_at = NULL WHERE id = $1 AND user_id = $2 RETURNING ` + taskColumns
)

var errNotInTrash = &Error{Code: CodeNotFound, Message: "No task with this id is in this user's trash."}

// RestoreTask brings a trashed task back to the live list. Run it in a
// transaction (Store.InTx).
func (q Queries) RestoreTask(ctx context.Context, userID string, id int64, match ifMatch) (Task, error) {
	var t Task
	var version int32
	err := q.db.QueryRow(ctx, sqlLockTrashed, id, userID).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errNotInTrash
	}
	if err != nil {
		return t, dbFail(fmt.Sprintf("restore task %d", id), err)
	}
	if match != nil && !match.has(version) {
		return t, errVersionMismatch
	}
	var room bool
	if err := q.db.QueryRow(ctx, sqlQuotaHasRoom, userID, q.maxTasks).Scan(&room); err != nil {
		return t, dbFail(fmt.Sprintf("restore task %d", id), err)
	}
	if !room {
		return t, errQuotaExceeded
	}
	if err := scanTask(q.db.QueryRow(ctx, sqlRestoreTask, id, userID), &t, userID); err != nil {
		return t, dbFail(fmt.Sprintf("restore task %d", id), err)
	}
	q.changed(userID)
	return t, nil
}

// sqlPurge deletes trashed tasks for good and leaves their tombstones, with
// the feed position each took when it went to the trash. $1 names the user,
// $2 the task (NULL: every trashed task of the user).
const sqlPurge = `
WITH gone AS (
    DELETE FROM tasks
    WHERE user_id = $1 AND deleted_at IS NOT NULL AND ($2::bigint IS NULL OR id = $2)
    RETURNING user_id, id, change_seq, deleted_at
)
INSERT INTO task_tombstones (user_id, task_id, seq, deleted_at)
SELECT user_id, id, change_seq, deleted_at FROM gone
ON CONFLICT DO NOTHING`

// DeleteForGood deletes one trashed task for good.
func (q Queries) DeleteForGood(ctx context.Context, userID string, id int64) error {
	tag, err := q.db.Exec(ctx, sqlPurge, userID, id)
	if err != nil {
		return dbFail(fmt.Sprintf("delete task %d for good", id), err)
	}
	if tag.RowsAffected() == 0 {
		return errNotInTrash
	}
	return nil
}

// EmptyTrash deletes every trashed task of the user for good.
func (q Queries) EmptyTrash(ctx context.Context, userID string) error {
	if _, err := q.db.Exec(ctx, sqlPurge, userID, nil); err != nil {
		return dbFail("empty the trash", err)
	}
	return nil
}

// sqlPurgeOldTrash deletes for good, in one batch, trashed tasks older than
// the retention ($1 seconds) and those past each user's cap ($2, the oldest
// first), leaving tombstones. SKIP LOCKED: it never waits for a request, and
// instances that purge at once take different rows.
const sqlPurgeOldTrash = `
WITH doomed AS (
    SELECT id FROM tasks WHERE id IN (
        SELECT id FROM tasks
        WHERE deleted_at IS NOT NULL AND deleted_at < now() - make_interval(secs => $1)
        UNION ALL
        SELECT id FROM (
            SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY deleted_at DESC, id DESC) AS n
            FROM tasks WHERE deleted_at IS NOT NULL
        ) ranked WHERE n > $2
    )
    LIMIT $3 FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tasks WHERE id IN (SELECT id FROM doomed)
    RETURNING user_id, id, change_seq, deleted_at
)
INSERT INTO task_tombstones (user_id, task_id, seq, deleted_at)
SELECT user_id, id, change_seq, deleted_at FROM gone
ON CONFLICT DO NOTHING`

// sqlPurgeTombstones forgets tombstones no token can still need: older than
// the sync retention ($1 seconds) and an hour's margin for a transaction that
// went to the trash before a token was issued and committed after it.
const sqlPurgeTombstones = `
DELETE FROM task_tombstones WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM task_tombstones WHERE deleted_at < now() - make_interval(secs => $1) - interval '1 hour'
    LIMIT $2))`

const purgeBatch = 1000

// PurgeTrash deletes for good what the trash may no longer keep, and the
// tombstones no token needs, in batches; it says how many tasks went.
func (q Queries) PurgeTrash(ctx context.Context, trashRetention, syncRetention time.Duration) (int64, error) {
	cap := int64(q.maxTasks)
	var total int64
	for {
		tag, err := q.db.Exec(ctx, sqlPurgeOldTrash, trashRetention.Seconds(), cap, purgeBatch)
		if err != nil {
			return total, dbFail("purge the trash", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			break
		}
	}
	for {
		tag, err := q.db.Exec(ctx, sqlPurgeTombstones, syncRetention.Seconds(), purgeBatch)
		if err != nil {
			return total, dbFail("purge tombstones", err)
		}
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// has reports whether the If-Match list names version.
func (m ifMatch) has(version int32) bool {
	for _, v := range m {
		if v == version {
			return true
		}
	}
	return false
}
