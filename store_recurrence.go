package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The writes that one statement cannot make: completing a recurring task,
// which creates its next occurrence in the same transaction, and an update
// whose merged row breaks the due-date rule, told apart before anything is
// written. SetCompleted and UpdateTask try their single statement first;
// only when it matches no row do they come here (a missing task and a stale
// version come here too, and are told apart here).

const (
	// sqlLockTask reads the task and locks it until the commit: concurrent
	// completes of one task, on any instance, take their turns here, and
	// each sees whether the one before created the next occurrence.
	sqlLockTask = `
SELECT ` + taskColumns + `, coalesce(occurrence, 1), occurrence_wall FROM tasks
WHERE id = $1 AND user_id = $2 AND ` + live + ` FOR UPDATE`
	// sqlWriteTask writes a merged task, locked by sqlLockTask; the
	// tasks_before_update trigger moves version, updated_at, completed_at
	// and the feed position as for any update.
	sqlWriteTask = `
UPDATE tasks SET title = $3, description = $4, completed = $5, priority = $6, tags = $7, due_date = $8,
    recurrence_rule = $9, recurrence_tz = $10, recurrence_from = $11, reminders = $12,
    next_occurrence_id = coalesce(next_occurrence_id, $13)
WHERE id = $1 AND user_id = $2
RETURNING ` + taskColumns
)

// updateLocked makes an update (toggle: completed becomes the opposite) in
// a transaction: it locks the task, merges the changes, checks them, creates
// the next occurrence when the update completes a recurring task for the
// first time, and writes the task. Over the quota, the next occurrence
// cannot be created and nothing is written (409).
func (q Queries) updateLocked(ctx context.Context, userID string, id int64, c taskChanges, toggle bool, match ifMatch) (Task, error) {
	var t Task
	err := q.InTx(ctx, func(q Queries) error {
		var old Task
		var index int
		var wall *time.Time
		err := scanTask(q.db.QueryRow(ctx, sqlLockTask, id, userID), &old, userID, &index, &wall)
		if errors.Is(err, pgx.ErrNoRows) {
			return errTaskNotFound
		}
		if err != nil {
			return dbFail(fmt.Sprintf("lock task %d", id), err)
		}
		if match != nil && !match.has(old.Version) {
			return errVersionMismatch
		}
		if toggle {
			completed := !old.Completed
			c.Completed = &completed
		}
		merged := c.applyTo(old)
		if !merged.scheduleValid() {
			return errDueDateNeeded
		}
		var next *int64
		if merged.Completed && !old.Completed && merged.Recurrence != nil && old.NextOccurrenceID == nil {
			o := occurrence{Due: *merged.DueDate, Index: index}
			if wall != nil {
				o.Wall = *wall
			}
			series := old.ID
			if old.SeriesID != nil {
				series = *old.SeriesID
			}
			if next, err = q.createNextOccurrence(ctx, merged, series, o); err != nil {
				return err
			}
		}
		rule, zone, from := recurrenceParams(merged.Recurrence)
		reminders := merged.Reminders
		if reminders == nil {
			reminders = []string{}
		}
		err = scanTask(q.db.QueryRow(ctx, sqlWriteTask, id, userID, merged.Title, merged.Description,
			merged.Completed, merged.Priority, merged.Tags, merged.DueDate, rule, zone, from, reminders, next), &t, userID)
		if err != nil {
			return writeFail(fmt.Sprintf("update task %d", id), err)
		}
		q.changed(userID)
		return nil
	})
	return t, err
}

// createNextOccurrence creates the occurrence of t's series after o, t
// being o completed now, and returns its id; nil when the series has ended.
func (q Queries) createNextOccurrence(ctx context.Context, t Task, series int64, o occurrence) (*int64, error) {
	rr, err := compileRecurrence(*t.Recurrence)
	if err != nil {
		return nil, fmt.Errorf("task %d has a recurrence the service cannot read: %w", t.ID, err)
	}
	next, ok := rr.next(o, q.now())
	if !ok {
		return nil, nil
	}
	created, err := q.CreateTask(ctx, t.UserID, newTask{
		Title: t.Title, Description: t.Description, Priority: t.Priority, Tags: t.Tags,
		DueDate: &next.Due, Recurrence: t.Recurrence, Reminders: t.Reminders,
		SeriesID: &series, Occurrence: &next,
	})
	if err != nil {
		return nil, err
	}
	return &created.ID, nil
}
