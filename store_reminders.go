package main

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The statements of reminders (reminders.go). The tasks_arm_reminders
// trigger (schema.sql, migration 5) keeps each task's armed reminders in
// task_reminders; here they are fired, read back and purged.

// FiredReminder is a reminder that fired: an event of the user's streams
// and an item of GET /reminders.
type FiredReminder struct {
	Seq      int64 // its feed position
	TaskID   int64
	Title    string
	DueDate  time.Time // the due date it was armed for
	RemindAt time.Time
	FiredAt  time.Time
}

const (
	// One instance fires a round at a time; the others skip the second.
	sqlReminderRoundLock = `SELECT pg_try_advisory_xact_lock(hashtextextended('task_reminders:fire', 0))`
	// The users with reminders due ($1: now), locked in the order every
	// write takes them: the user's count row first, then the reminders. A
	// user whose row a write holds is skipped until the next round, so the
	// round never waits for a request, and never deadlocks with one (a write
	// holds the user's row when its trigger re-arms the task's reminders).
	sqlLockDueUsers = `
SELECT user_id FROM task_counts
WHERE user_id IN (SELECT user_id FROM task_reminders
                  WHERE fired_at IS NULL AND remind_at <= $1 AND remind_at > $1 - interval '24 hours'
                  ORDER BY remind_at LIMIT $2)
ORDER BY user_id
FOR UPDATE SKIP LOCKED`
	// The due reminders of the locked users ($2), each numbered in the order
	// of its moment within its user's.
	sqlDueOfUsers = `
SELECT task_id, remind_at, user_id,
       row_number() OVER (PARTITION BY user_id ORDER BY remind_at, task_id) AS n,
       count(*) OVER (PARTITION BY user_id) AS fired
FROM task_reminders
WHERE user_id = ANY ($2) AND fired_at IS NULL AND remind_at <= $1 AND remind_at > $1 - interval '24 hours'`
	// Each locked user's position moves past its due reminders...
	sqlTakePositions = `
UPDATE task_counts c SET seq = c.seq + d.fired
FROM (SELECT user_id, count(*) AS fired FROM task_reminders
      WHERE user_id = ANY ($2) AND fired_at IS NULL AND remind_at <= $1 AND remind_at > $1 - interval '24 hours'
      GROUP BY user_id) d
WHERE c.user_id = d.user_id`
	// ...and each reminder takes one of the positions it moved past, in the
	// order of their moments. (Two statements, not one: joining the two
	// results inside one statement made the planner loop over both.) With
	// the users' rows held, no write can arm or cancel their reminders in
	// between, so both read the same reminders.
	sqlMarkFired = `
UPDATE task_reminders r SET fired_at = $1, seq = c.seq - d.fired + d.n
FROM (` + sqlDueOfUsers + `) d, task_counts c
WHERE r.task_id = d.task_id AND r.remind_at = d.remind_at AND c.user_id = d.user_id
RETURNING r.user_id`

	// The moment of the next armed reminder that may still fire at or after
	// $1 (now): less than 24 hours late. NULL when none is armed.
	sqlNextReminder = `
SELECT min(remind_at) FROM task_reminders WHERE fired_at IS NULL AND remind_at > $1::timestamptz - interval '24 hours'`

	// A user's reminders fired after a feed position, in feed order.
	sqlRemindersAfter = `
SELECT r.seq, r.task_id, t.title, r.due_date, r.remind_at, r.fired_at
FROM task_reminders r JOIN tasks t ON t.id = r.task_id
WHERE r.user_id = $1 AND r.seq > $2
ORDER BY r.seq LIMIT $3`
	// A user's reminders fired in the last 7 days, after $2 when given.
	sqlListReminders = `
SELECT r.seq, r.task_id, t.title, r.due_date, r.remind_at, r.fired_at
FROM task_reminders r JOIN tasks t ON t.id = r.task_id
WHERE r.user_id = $1 AND r.seq IS NOT NULL AND r.fired_at > now() - interval '7 days'
    AND ($2::timestamptz IS NULL OR r.fired_at > $2)
ORDER BY r.fired_at, r.seq`
	// Fired more than 7 days ago, or armed and more than 24 hours late
	// (they will never fire), in batches.
	sqlPurgeReminders = `
DELETE FROM task_reminders WHERE ctid = ANY (ARRAY(
    (SELECT ctid FROM task_reminders WHERE fired_at < now() - interval '7 days' LIMIT $1)
    UNION ALL
    (SELECT ctid FROM task_reminders WHERE fired_at IS NULL AND remind_at < now() - interval '24 hours' LIMIT $1)))`
)

// reminderLateness is how late a reminder may still fire: one that came due
// while no instance ran fires at the next start if it is less late.
const reminderLateness = 24 * time.Hour

// FireReminders fires, in one transaction, the reminders due at now of the
// users of the first limit due ones, and returns how many fired. It fires
// nothing while another instance runs a round.
func (q Queries) FireReminders(ctx context.Context, now time.Time, limit int) (int, error) {
	fired := 0
	err := q.InTx(ctx, func(q Queries) error {
		var mine bool
		if err := q.db.QueryRow(ctx, sqlReminderRoundLock).Scan(&mine); err != nil {
			return dbFail("fire reminders", err)
		}
		if !mine {
			return nil
		}
		rows, err := q.db.Query(ctx, sqlLockDueUsers, now, limit)
		if err != nil {
			return dbFail("fire reminders", err)
		}
		users, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return dbFail("fire reminders", err)
		}
		if len(users) == 0 {
			return nil
		}
		if _, err := q.db.Exec(ctx, sqlTakePositions, now, users); err != nil {
			return dbFail("fire reminders", err)
		}
		if rows, err = q.db.Query(ctx, sqlMarkFired, now, users); err != nil {
			return dbFail("fire reminders", err)
		}
		notified := map[string]bool{}
		var user string
		_, err = pgx.ForEachRow(rows, []any{&user}, func() error {
			fired++
			if !notified[user] {
				notified[user] = true
				q.changed(user) // after the commit: streams here and on other instances wake
			}
			return nil
		})
		if err != nil {
			return dbFail("fire reminders", err)
		}
		return nil
	})
	return fired, err
}

// NextReminder is the moment of the next armed reminder that may still fire
// at now or later (it may be in the past, up to a day), or nil when none is
// armed.
func (q Queries) NextReminder(ctx context.Context, now time.Time) (*time.Time, error) {
	var at *time.Time
	if err := q.db.QueryRow(ctx, sqlNextReminder, now).Scan(&at); err != nil {
		return nil, dbFail("read the next reminder", err)
	}
	return at, nil
}

func scanFired(rows pgx.Rows) ([]FiredReminder, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (FiredReminder, error) {
		var f FiredReminder
		err := row.Scan(&f.Seq, &f.TaskID, &f.Title, &f.DueDate, &f.RemindAt, &f.FiredAt)
		return f, err
	})
}

// ListReminders returns the user's reminders fired in the last 7 days, after
// since when it is not nil, oldest first.
func (q Queries) ListReminders(ctx context.Context, userID string, since *time.Time) ([]FiredReminder, error) {
	rows, err := q.db.Query(ctx, sqlListReminders, userID, since)
	if err != nil {
		return nil, dbFail("list reminders", err)
	}
	fired, err := scanFired(rows)
	if err != nil {
		return nil, dbFail("list reminders", err)
	}
	return fired, nil
}

// PurgeReminders forgets reminders fired more than 7 days ago and armed
// ones that will never fire, and says how many went.
func (q Queries) PurgeReminders(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := q.db.Exec(ctx, sqlPurgeReminders, purgeBatch)
		if err != nil {
			return total, dbFail("purge reminders", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// streamEvent is one event of a user's stream: a change, or a reminder that
// fired, at its feed position.
type streamEvent struct {
	Seq      int64
	Change   *Change
	Reminder *FiredReminder
}

// StreamEventsAfter returns up to about limit events of the user's stream
// after position since, in feed order, and whether more follow: the changes
// of the feed merged with the reminders fired. One round trip. The user's
// position is read first: every position up to it has committed, so both
// later reads see all of them, and the events are cut there. (Read without
// that bound, a reminder could be sent past a change that the other read
// had not seen yet, and the stream's position would then skip the change.)
// What committed after that read comes with the next wake-up.
func (q Queries) StreamEventsAfter(ctx context.Context, userID string, since int64, limit int) ([]streamEvent, bool, error) {
	var bound int64
	var fired []FiredReminder
	batch := &pgx.Batch{}
	batch.Queue(sqlFeedPosition, userID).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&bound); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return nil
	})
	batch.Queue(sqlRemindersAfter, userID, since, limit+1).Query(func(rows pgx.Rows) error {
		var err error
		fired, err = scanFired(rows)
		return err
	})
	collect := queueChangesAfter(batch, userID, since, limit)
	if err := q.db.SendBatch(ctx, batch).Close(); err != nil {
		return nil, false, dbFail("read events", err)
	}
	changes, more := collect()
	cut := bound
	if more {
		cut = min(cut, changes[len(changes)-1].Seq)
	}
	if len(fired) > limit {
		fired, more = fired[:limit], true
		cut = min(cut, fired[len(fired)-1].Seq)
	}
	events := make([]streamEvent, 0, len(changes)+len(fired))
	i, j := 0, 0
	for i < len(changes) || j < len(fired) {
		var e streamEvent
		if j == len(fired) || i < len(changes) && changes[i].Seq < fired[j].Seq {
			e = streamEvent{Seq: changes[i].Seq, Change: &changes[i]}
			i++
		} else {
			e = streamEvent{Seq: fired[j].Seq, Reminder: &fired[j]}
			j++
		}
		if e.Seq > cut {
			break
		}
		events = append(events, e)
	}
	return events, more, nil
}
