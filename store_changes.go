package main

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The change feed's statements (API.md "Changes (sync)"). Every change of a
// user's task takes the user's next position (task_counts.seq) while holding
// the user's row until it commits, so positions become visible in order: a
// reader that sees position N has seen every position below it. A task's row
// keeps the position of its latest change; a task deleted for good leaves a
// tombstone with the position it took when it went to the trash.

// Change is one entry of the feed: a live task in its current state, or the
// id of a task that went to the trash or was deleted for good.
type Change struct {
	Seq     int64
	Task    *Task  // nil: deleted, or read as JSON
	JSON    []byte // the task as the API writes it, when its row came in binary (rowjson.go)
	Deleted int64  // the id, when Task and JSON are nil
}

const (
	// The tasks changed after a position, in the order of their latest change.
	sqlChangedTasks = `
SELECT ` + taskColumns + `, change_seq` + changedTasksFrom
	// The rows sqlChangedTasks and sqlChangesPage read.
	changedTasksFrom = ` FROM tasks
WHERE user_id = $1 AND change_seq > $2
ORDER BY change_seq LIMIT $3`
	sqlTombstonesAfter = `
SELECT task_id, seq FROM task_tombstones
WHERE user_id = $1 AND seq > $2
ORDER BY seq LIMIT $3`
	// A page of a full sync: the live tasks, in the order of their latest
	// change, after a (position, id).
	sqlLiveTasksAfter = `
SELECT ` + taskColumns + `, change_seq FROM tasks
WHERE user_id = $1 AND ` + live + ` AND (change_seq, id) > ($2, $3)
ORDER BY change_seq, id LIMIT $4`
)

// sqlChangesPage is a page of the feed's answer in one statement, one
// snapshot: the tasks changed after the position, as sqlChangedTasks reads
// them (their last column NULL), then one row of NULLs whose last column
// is the first tombstone's position after the position, or NULL (one index
// probe). A UNION ALL, not a join of the two: its Append passes
// the tasks' rows on as the index scan makes them, where a join's node
// projected every row again (pgbench, 32 clients: 15 % less PostgreSQL CPU
// per page). Append runs its parts in order; appendRaw needs no order
// between the row of NULLs and the tasks, and checks the tasks' order, and
// the plans test checks the plan.
var sqlChangesPage = `
(SELECT ` + taskColumns + `, change_seq, NULL::bigint` + changedTasksFrom + `)
UNION ALL
SELECT ` + strings.Repeat("NULL, ", taskColumnCount+1) + `(SELECT min(seq) FROM task_tombstones WHERE user_id = $1 AND seq > $2)`

// ChangesAfter returns up to limit changes of the user's tasks after
// position since, oldest first, each task at most once, and whether more
// follow.
func (q Queries) ChangesAfter(ctx context.Context, userID string, since int64, limit int) ([]Change, bool, error) {
	batch := &pgx.Batch{}
	collect := queueChangesAfter(batch, userID, since, limit)
	if err := q.db.SendBatch(ctx, batch).Close(); err != nil {
		return nil, false, dbFail("read changes", err)
	}
	changes, more := collect()
	return changes, more, nil
}

// queueChangesAfter queues ChangesAfter's two statements on batch, to go in
// one round trip, tombstones second: a task deleted for good in between is
// seen by both and kept once. collect returns their result once the batch
// has run.
func queueChangesAfter(batch *pgx.Batch, userID string, since int64, limit int) (collect func() ([]Change, bool)) {
	var changes []Change
	batch.Queue(sqlChangedTasks, userID, since, limit+1).Query(func(rows pgx.Rows) error {
		var err error
		changes, err = scanChangedTasks(changes, rows, userID, limit+1)
		return err
	})
	batch.Queue(sqlTombstonesAfter, userID, since, limit+1).Query(func(rows pgx.Rows) error {
		var err error
		changes, err = scanTombstones(changes, rows)
		return err
	})
	return func() ([]Change, bool) { return mergeChanges(changes, limit) }
}

// scanChangedTasks appends the changes in the rows of sqlChangedTasks:
// encoded straight from binary rows when they are (rowjson.go), else
// scanned.
func scanChangedTasks(changes []Change, rows pgx.Rows, userID string, expect int) ([]Change, error) {
	if rowsAreBinary(rows) {
		return appendRawChanges(changes, rows, userID, expect)
	}
	for rows.Next() {
		var t Task
		var seq int64
		if err := scanTask(rows, &t, userID, &seq); err != nil {
			return changes, err
		}
		c := Change{Seq: seq, Task: &t}
		if t.DeletedAt != nil {
			c = Change{Seq: seq, Deleted: t.ID}
		}
		changes = append(changes, c)
	}
	return changes, rows.Err()
}

// scanTombstones appends the deletes in the rows of sqlTombstonesAfter.
func scanTombstones(changes []Change, rows pgx.Rows) ([]Change, error) {
	for rows.Next() {
		var c Change
		if err := rows.Scan(&c.Deleted, &c.Seq); err != nil {
			return changes, err
		}
		changes = append(changes, c)
	}
	return changes, rows.Err()
}

// mergeChanges puts the changes of the two statements, each read with one
// more than limit, in position order, keeps a task seen by both once (a
// tombstone has the position of the trashed task's row: the same change),
// and cuts them to limit; more says whether more follow.
func mergeChanges(changes []Change, limit int) ([]Change, bool) {
	slices.SortFunc(changes, func(a, b Change) int { return cmp.Compare(a.Seq, b.Seq) })
	changes = slices.CompactFunc(changes, func(a, b Change) bool { return a.Seq == b.Seq })
	if len(changes) > limit {
		return changes[:limit], true
	}
	return changes, false
}

// ChangesPageJSON is a page of the feed, already encoded.
type ChangesPageJSON struct {
	Body  []byte // dst, then the changes as appendChange writes them, comma-separated
	Count int
	More  bool  // more changes follow
	Last  int64 // the position of the page's last change, when Count > 0
}

// ChangesAfterJSON is ChangesAfter, its page encoded after dst, for the
// feed's handler. In the common case it is one statement (sqlChangesPage),
// whose binary rows are encoded straight into the page as they arrive: no
// Change per row, no buffer of tasks to copy. When a tombstone falls within
// the page (after the position and, when more follow, before the page's last
// change), its delete must be merged in between, so the page is read again
// through ChangesAfter, a second round trip, but only for a page that covers
// a task deleted for good: a tombstone past a full page waits for the next.
// Rows in text (the simple protocol) take that way too
// (TestChangesAnswerEncoding checks every way gives the same bytes).
func (q Queries) ChangesAfterJSON(ctx context.Context, userID string, since int64, limit int, dst []byte) (ChangesPageJSON, error) {
	page := ChangesPageJSON{Body: dst}
	rows, err := q.db.Query(ctx, sqlChangesPage, userID, since, limit+1)
	if err != nil {
		return ChangesPageJSON{}, dbFail("read changes", err)
	}
	reread := true
	if changesPageIsBinary(rows) {
		reread, err = page.appendRaw(rows, userID, limit)
	}
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		return ChangesPageJSON{}, dbFail("read changes", err)
	}
	if !reread {
		return page, nil
	}
	changes, more, err := q.ChangesAfter(ctx, userID, since, limit)
	if err != nil {
		return ChangesPageJSON{}, err
	}
	page = ChangesPageJSON{Body: dst, More: more}
	for i, c := range changes {
		if i > 0 {
			page.Body = append(page.Body, ',')
		}
		page.Body = appendChange(page.Body, c)
		page.Count, page.Last = page.Count+1, c.Seq
	}
	return page, nil
}

// FullSyncPage is a page of the user's live tasks in feed order.
type FullSyncPage struct {
	Tasks   []Task
	Seqs    []int64 // each task's position
	More    bool    // more live tasks follow
	Started int64   // the position before the first page: where the feed goes on
	Latest  int64   // the user's position after this page was read
}

// FullSync returns up to limit live tasks after (afterSeq, afterID). started
// is the position read before the sync's first page; pass -1 on the first
// page, and it is read before the page. Three statements, one round trip.
func (q Queries) FullSync(ctx context.Context, userID string, started, afterSeq, afterID int64, limit int) (FullSyncPage, error) {
	page := FullSyncPage{Started: started}
	position := func(dst *int64) func(pgx.Row) error {
		return func(row pgx.Row) error {
			err := row.Scan(dst)
			if errors.Is(err, pgx.ErrNoRows) {
				*dst = 0
				return nil
			}
			return err
		}
	}
	batch := &pgx.Batch{}
	if started < 0 {
		batch.Queue(sqlFeedPosition, userID).QueryRow(position(&page.Started))
	}
	batch.Queue(sqlLiveTasksAfter, userID, afterSeq, afterID, limit+1).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var t Task
			var seq int64
			if err := scanTask(rows, &t, userID, &seq); err != nil {
				return err
			}
			page.Tasks, page.Seqs = append(page.Tasks, t), append(page.Seqs, seq)
		}
		return rows.Err()
	})
	batch.Queue(sqlFeedPosition, userID).QueryRow(position(&page.Latest))
	if err := q.db.SendBatch(ctx, batch).Close(); err != nil {
		return page, dbFail("full sync", err)
	}
	if len(page.Tasks) > limit {
		page.Tasks, page.Seqs, page.More = page.Tasks[:limit], page.Seqs[:limit], true
	}
	return page, nil
}

// SyncTokenKey is the key that signs sync tokens, the same for every instance.
func (q Queries) SyncTokenKey(ctx context.Context) ([]byte, error) {
	var key []byte
	if err := q.db.QueryRow(ctx, `SELECT key FROM service_keys WHERE name = 'sync_token'`).Scan(&key); err != nil {
		return nil, dbFail("read the sync token key", err)
	}
	return key, nil
}

// WatchedPositions returns the feed positions of the users, for the
// notifier's periodic re-read (users without a position are left out).
func (q Queries) WatchedPositions(ctx context.Context, users []string) (map[string]int64, error) {
	rows, err := q.db.Query(ctx, `SELECT user_id, seq FROM task_counts WHERE user_id = ANY ($1)`, users)
	if err != nil {
		return nil, dbFail("read feed positions", err)
	}
	out := map[string]int64{}
	var user string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&user, &seq}, func() error { out[user] = seq; return nil })
	if err != nil {
		return nil, dbFail("read feed positions", err)
	}
	return out, nil
}
