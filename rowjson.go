package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// The hot reads (a page of tasks, one task) go from PostgreSQL's binary row
// straight to JSON, with no Task in between: decoding each value into Go
// (strings, slices, time pointers) and then encoding it again was a quarter
// of a listing's CPU and most of its allocations. appendRawTask writes
// exactly what appendTask writes for the same task (TestRawTaskJSONMatches).
// It reads the columns of taskColumns, in order, in the binary format pgx
// asks for with its default and cache_describe modes; rowsAreBinary checks
// that before the first row, and the callers fall back to scanning when not.

// Positions of taskColumns in a row.
const (
	colID = iota
	colTitle
	colDescription
	colCompleted
	colCompletedAt
	colPriority
	colTags
	colDueDate
	colVersion
	colCreatedAt
	colUpdatedAt
	colDeletedAt
	colRecurrenceRule
	colRecurrenceTZ
	colRecurrenceFrom
	colReminders
	colSeriesID
	colNextOccurrenceID
	taskColumnCount
)

// taskColumnTypes are the types appendRawTask decodes, by position.
var taskColumnTypes = [taskColumnCount]uint32{
	pgtype.Int8OID, pgtype.TextOID, pgtype.TextOID, pgtype.BoolOID, pgtype.TimestamptzOID, pgtype.TextOID,
	pgtype.TextArrayOID, pgtype.TimestamptzOID, pgtype.Int4OID, pgtype.TimestamptzOID, pgtype.TimestamptzOID,
	pgtype.TimestamptzOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TextArrayOID, pgtype.Int8OID,
	pgtype.Int8OID,
}

// rowsAreBinary reports whether rows carry taskColumns as appendRawTask
// reads them: binary, except text, whose two formats are the same bytes (pgx
// asks for text columns in text).
func rowsAreBinary(rows pgx.Rows) bool {
	fields := rows.FieldDescriptions()
	if len(fields) < taskColumnCount {
		return false
	}
	for i, oid := range taskColumnTypes {
		if !fieldIsBinary(fields[i], oid) {
			return false
		}
	}
	return true
}

// fieldIsBinary reports whether a column is of type oid, in the form
// appendRawTask reads.
func fieldIsBinary(f pgconn.FieldDescription, oid uint32) bool {
	return f.DataTypeOID == oid && (f.Format == pgx.BinaryFormatCode || oid == pgtype.TextOID)
}

// getRowPositions are the positions in taskColumns of getRowColumns, in order.
var getRowPositions = [...]int{colID, colTitle, colDescription, colCompleted, colCompletedAt, colPriority, colTags,
	colDueDate, colVersion, colCreatedAt, colUpdatedAt, colRecurrenceRule, colRecurrenceTZ, colRecurrenceFrom,
	colReminders, colSeriesID}

// getRowIsBinary is rowsAreBinary for a row of getRowColumns.
func getRowIsBinary(rows pgx.Rows) bool {
	fields := rows.FieldDescriptions()
	if len(fields) != len(getRowPositions) {
		return false
	}
	for i, col := range getRowPositions {
		if !fieldIsBinary(fields[i], taskColumnTypes[col]) {
			return false
		}
	}
	return true
}

// taskRowOf spreads raw, a row of getRowColumns, over a row of taskColumns,
// the form appendRawTask reads; the two columns the get leaves out are NULL.
func taskRowOf(raw [][]byte) (row [taskColumnCount][]byte, ok bool) {
	if len(raw) != len(getRowPositions) {
		return row, false
	}
	for i, col := range getRowPositions {
		row[col] = raw[i]
	}
	return row, true
}

var errBadRow = errors.New("a task row in an unexpected binary form")

// appendRawTask appends the task in raw (a row of taskColumns) as JSON.
func appendRawTask(b []byte, raw [][]byte, userID string) ([]byte, error) {
	if len(raw) < taskColumnCount || len(raw[colID]) != 8 || len(raw[colCompleted]) != 1 || len(raw[colVersion]) != 4 {
		return b, errBadRow
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(binary.BigEndian.Uint64(raw[colID])), 10)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, userID)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, raw[colTitle])
	b = append(b, `,"description":`...)
	b = appendJSONString(b, raw[colDescription])
	b = append(b, `,"completed":`...)
	b = strconv.AppendBool(b, raw[colCompleted][0] != 0)
	b = append(b, `,"completed_at":`...)
	b = appendRawTime(b, raw[colCompletedAt])
	b = append(b, `,"priority":`...)
	b = appendJSONString(b, raw[colPriority])
	b = append(b, `,"tags":`...)
	b, err := appendRawTextArray(b, raw[colTags])
	if err != nil {
		return b, err
	}
	b = append(b, `,"due_date":`...)
	b = appendRawTime(b, raw[colDueDate])
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(int32(binary.BigEndian.Uint32(raw[colVersion]))), 10)
	b = append(b, `,"created_at":`...)
	b = appendRawTime(b, raw[colCreatedAt])
	b = append(b, `,"updated_at":`...)
	b = appendRawTime(b, raw[colUpdatedAt])
	b = append(b, `,"recurrence":`...)
	if raw[colRecurrenceRule] != nil {
		b = append(b, `{"rule":`...)
		b = appendJSONString(b, raw[colRecurrenceRule])
		b = append(b, `,"time_zone":`...)
		b = appendJSONString(b, raw[colRecurrenceTZ])
		b = append(b, `,"from":`...)
		b = appendJSONString(b, raw[colRecurrenceFrom])
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"reminders":`...)
	if b, err = appendRawTextArray(b, raw[colReminders]); err != nil {
		return b, err
	}
	b = append(b, `,"series_id":`...)
	switch len(raw[colSeriesID]) {
	case 8:
		b = strconv.AppendInt(b, int64(binary.BigEndian.Uint64(raw[colSeriesID])), 10)
	case 0:
		b = append(b, "null"...)
	default:
		return b, errBadRow
	}
	if raw[colDeletedAt] != nil {
		b = append(b, `,"deleted_at":`...)
		b = appendRawTime(b, raw[colDeletedAt])
	}
	return append(b, '}'), nil
}

// rawVersion is the version in a row of taskColumns.
func rawVersion(raw [][]byte) int32 { return int32(binary.BigEndian.Uint32(raw[colVersion])) }

// pgEpochMicros is PostgreSQL's epoch, 2000-01-01, in Unix microseconds.
const pgEpochMicros = 946684800 * 1000000

// rawTime decodes a binary timestamptz (microseconds since 2000-01-01 UTC).
func rawTime(v []byte) time.Time {
	return time.UnixMicro(int64(binary.BigEndian.Uint64(v)) + pgEpochMicros).UTC()
}

func appendRawTime(b, v []byte) []byte {
	if v == nil || len(v) != 8 {
		return append(b, "null"...)
	}
	return appendUnixMicro(b, int64(binary.BigEndian.Uint64(v))+pgEpochMicros)
}

// appendRawTextArray appends a binary one-dimensional text[] as a JSON array.
// The binary form: ndim, has-null flag, element type, then per dimension its
// length and lower bound, then each element's length (-1: NULL) and bytes.
func appendRawTextArray(b, v []byte) ([]byte, error) {
	b = append(b, '[')
	n := 0
	err := eachRawText(v, func(elem []byte) {
		if n > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, elem)
		n++
	})
	return append(b, ']'), err
}

// eachRawText calls fn with each element of a binary one-dimensional text[]
// (see appendRawTextArray), in order.
func eachRawText(v []byte, fn func(elem []byte)) error {
	if len(v) < 12 {
		return errBadRow
	}
	ndim := binary.BigEndian.Uint32(v[0:4])
	if ndim == 0 {
		return nil
	}
	if ndim != 1 || len(v) < 20 {
		return errBadRow
	}
	n := int(binary.BigEndian.Uint32(v[12:16]))
	rest := v[20:]
	for range n {
		if len(rest) < 4 {
			return errBadRow
		}
		size := int32(binary.BigEndian.Uint32(rest[:4]))
		rest = rest[4:]
		if size < 0 || int(size) > len(rest) {
			return errBadRow // the schema keeps tags free of NULLs
		}
		fn(rest[:size])
		rest = rest[size:]
	}
	return nil
}

// rawCursor is the cursor after the task in raw, for the next page: only
// its sort key is decoded.
func rawCursor(raw [][]byte, sort string, desc bool) cursor {
	t := Task{ID: int64(binary.BigEndian.Uint64(raw[colID]))}
	switch sort {
	case "created_at":
		t.CreatedAt = rawTime(raw[colCreatedAt])
	case "updated_at":
		t.UpdatedAt = rawTime(raw[colUpdatedAt])
	case "due_date":
		if raw[colDueDate] != nil {
			due := rawTime(raw[colDueDate])
			t.DueDate = &due
		}
	case "priority":
		t.Priority = string(raw[colPriority])
	case "title":
		t.Title = string(raw[colTitle])
	}
	return cursorAfter(&t, sort, desc)
}

// TaskPageJSON is a page of a listing, already encoded.
type TaskPageJSON struct {
	Body  []byte // the JSON array
	Count int
	More  bool   // another page follows
	Next  cursor // after the page's last task, when More
	Seq   int64  // the user's feed position the page reflects
	read  bool   // with no task, a row still carried Seq (a search's)
}

// ListTasksJSON is ListTasks, encoding the page into dst as the rows arrive.
func (q Queries) ListTasksJSON(ctx context.Context, lq listQuery, dst []byte) (TaskPageJSON, error) {
	return q.ListTasksJSONVisit(ctx, lq, dst, nil)
}

// taskVisitor sees each task of a page as it is encoded, to render it in
// another form too (MCP's text): its row of taskColumns as appendRawTask
// reads it, or, when the rows came in text, the task scanned (raw nil).
type taskVisitor func(raw [][]byte, t *Task) error

// ListTasksJSONVisit is ListTasksJSON that also shows each task of the page
// to visit (nil: none).
func (q Queries) ListTasksJSONVisit(ctx context.Context, lq listQuery, dst []byte, visit taskVisitor) (TaskPageJSON, error) {
	page, err := q.listOnceJSON(ctx, lq, dst, visit)
	if err != nil || page.Count > 0 || page.read {
		return page, err
	}
	// As in ListTasks: with no row to carry it, the position is read before
	// a second listing.
	seq, err := q.FeedPosition(ctx, lq.User)
	if err != nil {
		return page, err
	}
	if page, err = q.listOnceJSON(ctx, lq, dst, visit); err != nil || page.Count > 0 {
		return page, err
	}
	page.Seq = seq
	return page, nil
}

func (q Queries) listOnceJSON(ctx context.Context, lq listQuery, dst []byte, visit taskVisitor) (TaskPageJSON, error) {
	if searchIndexed(lq.Q) { // a search may take more than one statement: its page is encoded once found
		return q.listScanned(ctx, lq, dst, visit)
	}
	sql, args := listSQL(lq)
	if lq.filtered() {
		args = append([]any{pgx.QueryExecModeCacheDescribe}, args...) // see listOnce
	}
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return TaskPageJSON{}, dbFail("list tasks", err)
	}
	defer rows.Close()
	if !rowsAreBinary(rows) {
		rows.Close()
		return q.listScanned(ctx, lq, dst, visit)
	}
	page := TaskPageJSON{Body: append(dst, '[')}
	for rows.Next() {
		raw := rows.RawValues()
		if page.Count == lq.Limit { // the row past the page: only says that more follow
			page.More = true
			continue
		}
		if page.Count > 0 {
			page.Body = append(page.Body, ',')
		}
		if page.Body, err = appendRawTask(page.Body, raw, lq.User); err != nil {
			return TaskPageJSON{}, dbFail("list tasks", err)
		}
		if visit != nil {
			if err := visit(raw, nil); err != nil {
				return TaskPageJSON{}, dbFail("list tasks", err)
			}
		}
		if len(raw) > taskColumnCount && len(raw[taskColumnCount]) == 8 {
			page.Seq = int64(binary.BigEndian.Uint64(raw[taskColumnCount]))
		}
		page.Count++
		if page.Count == lq.Limit {
			page.Next = rawCursor(raw, lq.Sort, lq.Desc)
		}
	}
	if err := rows.Err(); err != nil {
		return TaskPageJSON{}, dbFail("list tasks", err)
	}
	page.Body = append(page.Body, ']')
	return page, nil
}

// listScanned is the listing through Task values: for rows in text format,
// and for a search, whose page is known only once its last statement ran.
func (q Queries) listScanned(ctx context.Context, lq listQuery, dst []byte, visit taskVisitor) (TaskPageJSON, error) {
	tasks, err := q.listOnce(ctx, lq)
	if err != nil {
		return TaskPageJSON{}, err
	}
	for i := range tasks.Tasks {
		if visit != nil {
			if err := visit(nil, &tasks.Tasks[i]); err != nil {
				return TaskPageJSON{}, err
			}
		}
	}
	page := TaskPageJSON{Body: appendTasks(dst, tasks.Tasks), Count: len(tasks.Tasks), More: tasks.More, Seq: tasks.Seq, read: tasks.read}
	if tasks.More {
		page.Next = cursorAfter(&tasks.Tasks[len(tasks.Tasks)-1], lq.Sort, lq.Desc)
	}
	return page, nil
}

// GetTaskJSON is GetTask, encoded into dst; it also returns the version.
func (q Queries) GetTaskJSON(ctx context.Context, userID string, id int64, dst []byte) ([]byte, int32, error) {
	rows, err := q.db.Query(ctx, sqlGetTaskRow, id, userID)
	if err != nil {
		return dst, 0, dbFail(fmt.Sprintf("get task %d", id), err)
	}
	defer rows.Close()
	if !getRowIsBinary(rows) {
		rows.Close()
		t, err := q.GetTask(ctx, userID, id)
		return appendTask(dst, &t), t.Version, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return dst, 0, dbFail(fmt.Sprintf("get task %d", id), err)
		}
		return dst, 0, errTaskNotFound
	}
	row, ok := taskRowOf(rows.RawValues())
	if !ok {
		return dst, 0, dbFail(fmt.Sprintf("get task %d", id), errBadRow)
	}
	body, err := appendRawTask(dst, row[:], userID)
	if err != nil {
		return dst, 0, dbFail(fmt.Sprintf("get task %d", id), err)
	}
	version := rawVersion(row[:])
	rows.Close()
	if err := rows.Err(); err != nil {
		return dst, 0, dbFail(fmt.Sprintf("get task %d", id), err)
	}
	return body, version, nil
}

// appendRawChanges appends the changes in rows (taskColumns, then
// change_seq), each task encoded straight from its binary row: a sync of
// 100 changes decodes no Task.
func appendRawChanges(changes []Change, rows pgx.Rows, userID string, expect int) ([]Change, error) {
	changes = slices.Grow(changes, expect)
	// One buffer for all the tasks, each change a slice of it (a slice taken
	// before the buffer grows keeps the bytes it had), sized for tasks of
	// ~500 bytes.
	arena := make([]byte, 0, 512*expect)
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != taskColumnCount+1 || len(raw[taskColumnCount]) != 8 || len(raw[colID]) != 8 {
			return changes, errBadRow
		}
		c := Change{Seq: int64(binary.BigEndian.Uint64(raw[taskColumnCount]))}
		if raw[colDeletedAt] != nil {
			c.Deleted = int64(binary.BigEndian.Uint64(raw[colID]))
		} else {
			start := len(arena)
			var err error
			if arena, err = appendRawTask(arena, raw, userID); err != nil {
				return changes, err
			}
			c.JSON = arena[start:len(arena):len(arena)]
		}
		changes = append(changes, c)
	}
	return changes, rows.Err()
}

// changesPageIsBinary is rowsAreBinary for the rows of sqlChangesPage:
// taskColumns, change_seq, then whether tombstones follow.
func changesPageIsBinary(rows pgx.Rows) bool {
	fields := rows.FieldDescriptions()
	return len(fields) == taskColumnCount+2 && rowsAreBinary(rows) &&
		fieldIsBinary(fields[taskColumnCount], pgtype.Int8OID) && fieldIsBinary(fields[taskColumnCount+1], pgtype.Int8OID)
}

// appendRaw appends the changes in binary rows of sqlChangesPage, read with
// one more than limit, to the page: each row straight to JSON, as
// appendChange writes it. The row past limit is not in the page: it only
// says that more follow. reread says that the page must be read through
// ChangesAfter instead: a tombstone falls within the page (its delete goes
// in between), or a row came out of position order. A tombstone falls
// within the page unless more follow and it comes after the page's last
// change: then it is the next page's.
func (page *ChangesPageJSON) appendRaw(rows pgx.Rows, userID string, limit int) (reread bool, err error) {
	tombstone := int64(-1) // the first tombstone's position after the token's; -1: none
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != taskColumnCount+2 {
			return false, errBadRow
		}
		if raw[colID] == nil { // the row of NULLs: the first tombstone after the position, if any
			switch first := raw[taskColumnCount+1]; {
			case first == nil:
			case len(first) == 8:
				tombstone = int64(binary.BigEndian.Uint64(first))
			default:
				return false, errBadRow
			}
			continue
		}
		if len(raw[taskColumnCount]) != 8 || len(raw[colID]) != 8 {
			return false, errBadRow
		}
		seq := int64(binary.BigEndian.Uint64(raw[taskColumnCount]))
		if page.Count > 0 && seq <= page.Last {
			return true, nil
		}
		if page.Count == limit {
			page.More = true
			continue
		}
		if page.Count > 0 {
			page.Body = append(page.Body, ',')
		}
		if raw[colDeletedAt] != nil {
			page.Body = append(page.Body, `{"op":"delete","id":`...)
			page.Body = strconv.AppendInt(page.Body, int64(binary.BigEndian.Uint64(raw[colID])), 10)
		} else {
			page.Body = append(page.Body, `{"op":"upsert","task":`...)
			if page.Body, err = appendRawTask(page.Body, raw, userID); err != nil {
				return false, err
			}
		}
		page.Body = append(page.Body, '}')
		page.Count, page.Last = page.Count+1, seq
	}
	if tombstone >= 0 && (!page.More || tombstone <= page.Last) {
		return true, nil
	}
	return false, rows.Err()
}
