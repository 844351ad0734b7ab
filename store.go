package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// taskColumns are read back by every statement. user_id is not among them:
// every statement names the user, so the caller already knows it.
// A task that starts a series has no series_id of its own: it reads its id.
const taskColumns = `id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, deleted_at, ` +
	`recurrence_rule, recurrence_tz, recurrence_from, reminders, ` +
	`CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END, next_occurrence_id`

// scanTask reads taskColumns, then the extra columns a statement adds, into
// t, which belongs to userID.
func scanTask(row pgx.Row, t *Task, userID string, extra ...any) error {
	t.UserID = userID
	var rule, zone, from *string
	dest := []any{&t.ID, &t.Title, &t.Description, &t.Completed, &t.CompletedAt,
		&t.Priority, &t.Tags, &t.DueDate, &t.Version, &t.CreatedAt, &t.UpdatedAt, &t.DeletedAt,
		&rule, &zone, &from, &t.Reminders, &t.SeriesID, &t.NextOccurrenceID}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return err
	}
	t.Recurrence = nil
	if rule != nil && zone != nil && from != nil {
		t.Recurrence = &Recurrence{Rule: *rule, TimeZone: *zone, From: *from}
	}
	return nil
}

// recurrenceParams are a recurrence as the statements take it: three nulls
// for none.
func recurrenceParams(r *Recurrence) (rule, zone, from *string) {
	if r == nil {
		return nil, nil, nil
	}
	return &r.Rule, &r.TimeZone, &r.From
}

// Live tasks are those not in the trash: every statement on tasks names
// which it reads.
const live = `deleted_at IS NULL`

// sqlCreateTask takes a slot in the user's quota and the user's next feed
// position, and inserts the task, in one statement. The upsert locks the
// user's count row until the commit, and its WHERE is checked against the
// latest count, so concurrent creates at the limit cannot overshoot it; with
// no slot, nothing is inserted. (Every other change takes its position in the
// tasks_before_update trigger.)
const sqlCreateTask = `
WITH slot AS (
    INSERT INTO task_counts AS c (user_id, tasks, seq) VALUES ($1, 1, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1, seq = c.seq + 1
    WHERE c.tasks < $8
    RETURNING seq
)
INSERT INTO tasks (user_id, title, description, completed, completed_at, priority, tags, due_date, change_seq,
                   recurrence_rule, recurrence_tz, recurrence_from, reminders, series_id, occurrence, occurrence_wall)
SELECT $1, $2, $3, $4, CASE WHEN $4 THEN now() END, $5, $6, $7, seq, $9, $10, $11, $12, $13, $14, $15 FROM slot
RETURNING ` + taskColumns

func (q Queries) CreateTask(ctx context.Context, userID string, in newTask) (Task, error) {
	var t Task
	rule, zone, from := recurrenceParams(in.Recurrence)
	reminders := in.Reminders
	if reminders == nil {
		reminders = []string{}
	}
	var index *int
	var wall *time.Time
	if o := in.Occurrence; o != nil {
		index, wall = &o.Index, &o.Wall
	}
	err := scanTask(q.db.QueryRow(ctx, sqlCreateTask,
		userID, in.Title, in.Description, in.Completed, in.Priority, in.Tags, in.DueDate, q.maxTasks,
		rule, zone, from, reminders, in.SeriesID, index, wall), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errQuotaExceeded
	}
	if err != nil {
		return t, writeFail("create task", err)
	}
	q.changed(userID)
	return t, nil
}

const sqlGetTask = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1 AND user_id = $2 AND ` + live

// getRowColumns are taskColumns without deleted_at (NULL in every live task)
// and next_occurrence_id (not in a task's JSON): 16 columns, for
// GetTaskJSON. pgx keeps 16 field descriptions per connection and allocates
// a new slice for every result with more, about 1 % of a get's CPU.
// TestGetRowColumns keeps the two lists in step.
const getRowColumns = `id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at, ` +
	`recurrence_rule, recurrence_tz, recurrence_from, reminders, ` +
	`CASE WHEN recurrence_rule IS NOT NULL THEN coalesce(series_id, id) END`

const sqlGetTaskRow = `SELECT ` + getRowColumns + ` FROM tasks WHERE id = $1 AND user_id = $2 AND ` + live

func (q Queries) GetTask(ctx context.Context, userID string, id int64) (Task, error) {
	var t Task
	err := scanTask(q.db.QueryRow(ctx, sqlGetTask, id, userID), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errTaskNotFound
	}
	if err != nil {
		return t, dbFail(fmt.Sprintf("get task %d", id), err)
	}
	return t, nil
}

// ifMatch is a parsed If-Match header: nil matches any version; otherwise the
// task's version must be one of these (an empty list matches none).
type ifMatch []int32

// sqlUpdateTask writes the given fields only if the version matches, in one
// statement. The tasks_before_update trigger bumps version and updated_at
// when something changed, and keeps completed_at right. A recurrence of
// $11..$13 replaces the task's; ” clears it; null keeps it.
//
// Two updates it leaves alone, matching no row, for updateLocked to make:
// one whose merged row would have a recurrence or reminders but no due date
// (the 422 is told apart there, before anything is written, even inside the
// transaction of an Idempotency-Key), and one that completes a recurring
// task that has not created its next occurrence yet.
const sqlUpdateTask = `
UPDATE tasks SET
    title           = coalesce($3, title),
    description     = coalesce($4, description),
    completed       = coalesce($5, completed),
    priority        = coalesce($6, priority),
    tags            = coalesce($7, tags),
    due_date        = CASE WHEN $8 THEN $9 ELSE due_date END,
    recurrence_rule = CASE WHEN $11::text IS NULL THEN recurrence_rule ELSE nullif($11, '') END,
    recurrence_tz   = CASE WHEN $11::text IS NULL THEN recurrence_tz ELSE nullif($12, '') END,
    recurrence_from = CASE WHEN $11::text IS NULL THEN recurrence_from ELSE nullif($13, '') END,
    reminders       = coalesce($14, reminders)
WHERE id = $1 AND user_id = $2 AND ` + live + ` AND ($10::integer[] IS NULL OR version = ANY ($10))
    AND ((CASE WHEN $8 THEN $9::timestamptz ELSE due_date END) IS NOT NULL
         OR (CASE WHEN $11::text IS NULL THEN recurrence_rule ELSE nullif($11, '') END) IS NULL
            AND cardinality(coalesce($14::text[], reminders)) = 0)
    AND NOT (NOT completed AND coalesce($5::boolean, false) AND next_occurrence_id IS NULL
             AND (CASE WHEN $11::text IS NULL THEN recurrence_rule ELSE nullif($11, '') END) IS NOT NULL)
RETURNING ` + taskColumns

func (q Queries) UpdateTask(ctx context.Context, userID string, id int64, c taskChanges, match ifMatch) (Task, error) {
	var t Task
	var rule, zone, from *string
	if c.RecurrenceSet {
		empty := ""
		rule, zone, from = &empty, &empty, &empty
		if c.Recurrence != nil {
			rule, zone, from = recurrenceParams(c.Recurrence)
		}
	}
	err := scanTask(q.db.QueryRow(ctx, sqlUpdateTask, id, userID,
		c.Title, c.Description, c.Completed, c.Priority, c.Tags, c.DueSet, c.DueDate, []int32(match),
		rule, zone, from, c.Reminders), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return q.updateLocked(ctx, userID, id, c, false, match)
	}
	if err != nil {
		return t, writeFail(fmt.Sprintf("update task %d", id), err)
	}
	q.changed(userID)
	return t, nil
}

// sqlSetCompleted sets completed, or toggles it when $3 is null. Completing
// a recurring task that has not created its next occurrence matches no row:
// updateLocked does that, in a transaction.
const sqlSetCompleted = `
UPDATE tasks SET completed = coalesce($3, NOT completed)
WHERE id = $1 AND user_id = $2 AND ` + live + ` AND ($4::integer[] IS NULL OR version = ANY ($4))
    AND NOT (recurrence_rule IS NOT NULL AND next_occurrence_id IS NULL AND NOT completed AND coalesce($3, NOT completed))
RETURNING ` + taskColumns

func (q Queries) SetCompleted(ctx context.Context, userID string, id int64, completed *bool, match ifMatch) (Task, error) {
	var t Task
	err := scanTask(q.db.QueryRow(ctx, sqlSetCompleted, id, userID, completed, []int32(match)), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return q.updateLocked(ctx, userID, id, taskChanges{Completed: completed}, completed == nil, match)
	}
	if err != nil {
		return t, dbFail(fmt.Sprintf("complete task %d", id), err)
	}
	q.changed(userID)
	return t, nil
}

// writeFail is dbFail, except that the database's own check that a
// recurrence and reminders have a due date is the client's 422.
func writeFail(op string, err error) error {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "23514" && pgErr.ConstraintName == "tasks_due_date_needed" {
		return errDueDateNeeded
	}
	return dbFail(op, err)
}

// sqlTrashTask moves the task to the trash if the version matches. The
// tasks_before_update trigger frees its quota slot and gives the change its
// feed position.
const sqlTrashTask = `
UPDATE tasks SET deleted_at = now()
WHERE id = $1 AND user_id = $2 AND ` + live + ` AND ($3::integer[] IS NULL OR version = ANY ($3))`

func (q Queries) TrashTask(ctx context.Context, userID string, id int64, match ifMatch) error {
	tag, err := q.db.Exec(ctx, sqlTrashTask, id, userID, []int32(match))
	if err != nil {
		return dbFail(fmt.Sprintf("trash task %d", id), err)
	}
	if tag.RowsAffected() == 0 {
		return q.whyNoRow(ctx, userID, id)
	}
	q.changed(userID)
	return nil
}

// whyNoRow tells a conditional write that matched no row apart: the task is
// not the user's (404) or its version did not match (412). It runs only on
// that failure path.
func (q Queries) whyNoRow(ctx context.Context, userID string, id int64) error {
	var exists bool
	if err := q.db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM tasks WHERE id = $1 AND user_id = $2 AND `+live+`)`, id, userID).Scan(&exists); err != nil {
		return dbFail(fmt.Sprintf("check task %d", id), err)
	}
	if exists {
		return errVersionMismatch
	}
	return errTaskNotFound
}

// TaskStats are the counts of GET /tasks/stats, and what their ETag says.
type TaskStats struct {
	Total, Completed, Pending, Overdue int64
	Seq                                int64      // the user's feed position the counts reflect
	NextOverdue                        *time.Time // when Overdue will next grow by itself: the earliest due date still ahead
}

const sqlTaskStats = `
SELECT count(*),
       count(*) FILTER (WHERE completed),
       count(*) FILTER (WHERE NOT completed AND due_date < now()),
       min(due_date) FILTER (WHERE NOT completed AND due_date >= now()),
       coalesce((SELECT seq FROM task_counts WHERE user_id = $1), 0)
FROM tasks WHERE user_id = $1 AND ` + live

func (q Queries) Stats(ctx context.Context, userID string) (TaskStats, error) {
	var st TaskStats
	if err := q.db.QueryRow(ctx, sqlTaskStats, userID).Scan(&st.Total, &st.Completed, &st.Overdue,
		&st.NextOverdue, &st.Seq); err != nil {
		return st, dbFail("task stats", err)
	}
	st.Pending = st.Total - st.Completed
	return st, nil
}

// sqlFeedPosition is the user's latest feed position: what a list's or the
// stats' ETag is made of.
const sqlFeedPosition = `SELECT seq FROM task_counts WHERE user_id = $1`

// FeedPosition is the user's latest feed position; 0 before any change.
func (q Queries) FeedPosition(ctx context.Context, userID string) (int64, error) {
	var seq int64
	err := q.db.QueryRow(ctx, sqlFeedPosition, userID).Scan(&seq)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, dbFail("feed position", err)
	}
	return seq, nil
}

// listQuery is a validated GET /tasks query.
type listQuery struct {
	User      string
	Completed *bool // status: nil for all
	Priority  string
	Tag       string
	Q         string
	DueBefore *time.Time
	DueAfter  *time.Time
	Sort      string
	Desc      bool
	Limit     int
	After     *cursor // the last task of the previous page
}

// sortKeys are the SQL expressions each sort orders by (then by id), chosen
// from this table only. Each matches an index of schema.sql exactly.
var sortKeys = map[string]struct{ asc, desc string }{
	"created_at": {"created_at", "created_at"},
	"updated_at": {"updated_at", "updated_at"},
	"priority":   {"priority_rank", "priority_rank"},
	"title":      {`(lower(title) COLLATE "C")`, `(lower(title) COLLATE "C")`},
	"due_date":   {"coalesce(due_date, 'infinity')", "coalesce(due_date, '-infinity')"},
}

// listing is a listing query in parts: fixed fragments of SQL, and the
// parameters they name.
type listing struct {
	args        []any
	user        string // the user's parameter
	where       string // every condition but q's
	key, dir    string // the sort key and direction
	q, contains string // q's parameter and the condition that a task contains it ("": no q)
	limit       string // the parameter of the page size plus one
}

func (l listing) order() string { return l.key + l.dir + ", id" + l.dir }

// newListing assembles the parts of a listing query from fixed fragments;
// values from the request only ever travel as parameters.
func newListing(q listQuery) listing {
	var l listing
	arg := func(v any) string {
		l.args = append(l.args, v)
		return "$" + strconv.Itoa(len(l.args))
	}
	l.user = arg(q.User)
	l.where = "user_id = " + l.user + " AND " + live
	if q.Completed != nil {
		if *q.Completed {
			l.where += " AND completed"
		} else {
			l.where += " AND NOT completed"
		}
	}
	if q.Priority != "" {
		l.where += " AND priority = " + arg(q.Priority)
	}
	if q.Tag != "" {
		l.where += " AND tags @> ARRAY[" + arg(q.Tag) + "::text]"
	}
	if q.Q != "" {
		l.q = arg(q.Q)
		l.contains = searchContains(l.q)
	}
	if q.DueBefore != nil {
		l.where += " AND due_date < " + arg(*q.DueBefore)
	}
	if q.DueAfter != nil {
		l.where += " AND due_date > " + arg(*q.DueAfter)
	}

	cmp := " > "
	l.key, l.dir = sortKeys[q.Sort].asc, " ASC"
	if q.Desc {
		l.key, l.dir, cmp = sortKeys[q.Sort].desc, " DESC", " < "
	}
	if c := q.After; c != nil {
		var k string
		switch q.Sort {
		case "title":
			k = `lower(` + arg(c.Title) + `::text) COLLATE "C"`
		case "priority":
			k = arg(int16(c.Rank))
		case "due_date":
			k = arg(c.dueKey(q.Desc)) + "::timestamptz"
		default:
			k = arg(c.Time)
		}
		l.where += " AND (" + l.key + ", id)" + cmp + "(" + k + ", " + arg(c.ID) + ")"
	}
	l.limit = arg(q.Limit + 1)
	return l
}

// listSQL is the listing's statement. A q with trigrams makes it a search,
// which may take more than one (store_search.go): this is its first.
func listSQL(q listQuery) (string, []any) {
	l := newListing(q)
	if searchIndexed(q.Q) {
		return l.searchSQL(sqlSearchHead), l.args
	}
	where := l.where
	if l.contains != "" {
		where += " AND " + l.contains
	}
	// Each row also carries the user's feed position, read in the same
	// snapshot: the list's ETag.
	return "SELECT " + taskColumns + ", (SELECT seq FROM task_counts WHERE user_id = " + l.user + ")" +
		" FROM tasks WHERE " + where + " ORDER BY " + l.order() + " LIMIT " + l.limit, l.args
}

// TaskPage is a page of a listing.
type TaskPage struct {
	Tasks []Task
	More  bool  // another page follows
	Seq   int64 // the user's feed position the page reflects
	read  bool  // with no task, a row still carried Seq (a search's)
}

// ListTasks returns up to lq.Limit tasks, whether more follow, and the feed
// position they reflect.
func (q Queries) ListTasks(ctx context.Context, lq listQuery) (TaskPage, error) {
	page, err := q.listOnce(ctx, lq)
	if err != nil || len(page.Tasks) > 0 || page.read {
		return page, err
	}
	// No row carried the position. Read before a second listing, it can only
	// be older than what that listing reflects, so the ETag at worst changes
	// sooner than it had to; read after, it could hide a task created between.
	seq, err := q.FeedPosition(ctx, lq.User)
	if err != nil {
		return page, err
	}
	if page, err = q.listOnce(ctx, lq); err != nil || len(page.Tasks) > 0 {
		return page, err
	}
	page.Seq = seq
	return page, nil
}

func (q Queries) listOnce(ctx context.Context, lq listQuery) (TaskPage, error) {
	if searchIndexed(lq.Q) {
		return q.search(ctx, lq)
	}
	sql, args := listSQL(lq)
	return q.listPage(ctx, lq, sql, args)
}

// listPage runs a statement of a listing and reads its page.
func (q Queries) listPage(ctx context.Context, lq listQuery, sql string, args []any) (TaskPage, error) {
	if lq.filtered() {
		// A filter's selectivity varies wildly between users and values, but a
		// prepared statement's generic plan (PostgreSQL's choice from its sixth
		// execution on) assumes an average user: for a user with many tasks it
		// reads them all to find a page (docs/performance.md has the numbers).
		// An unnamed statement is planned for its values every time, still in
		// a single round trip.
		args = append([]any{pgx.QueryExecModeCacheDescribe}, args...)
	}
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return TaskPage{}, dbFail("list tasks", err)
	}
	defer rows.Close()
	page := TaskPage{Tasks: make([]Task, 0, min(lq.Limit+1, 128))}
	for rows.Next() {
		if rows.RawValues()[0] == nil { // a search that found nothing: its position alone
			dest := make([]any, len(rows.RawValues()))
			dest[taskColumnCount] = &page.Seq
			if err := rows.Scan(dest...); err != nil {
				return TaskPage{}, dbFail("list tasks", err)
			}
			page.read = true
			continue
		}
		page.Tasks = append(page.Tasks, Task{})
		if err := scanTask(rows, &page.Tasks[len(page.Tasks)-1], lq.User, &page.Seq); err != nil {
			return TaskPage{}, dbFail("list tasks", err)
		}
	}
	if err := rows.Err(); err != nil {
		return TaskPage{}, dbFail("list tasks", err)
	}
	if len(page.Tasks) > lq.Limit {
		page.Tasks, page.More = page.Tasks[:lq.Limit], true
	}
	return page, nil
}

// filtered reports whether the listing narrows the user's tasks by more than the page.
func (q listQuery) filtered() bool {
	return q.Completed != nil || q.Priority != "" || q.Tag != "" || q.Q != "" || q.DueBefore != nil || q.DueAfter != nil
}

// pgInfinity stands in for a missing due date in a due_date cursor.
func pgInfinity(desc bool) pgtype.Timestamptz {
	if desc {
		return pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	}
	return pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
}
