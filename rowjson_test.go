package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The binary-row encoder writes exactly what the Task encoder writes, for
// tasks with every kind of value: escapes, non-ASCII, tags, dates, nulls,
// completed, trashed; a page and its cursor agree too.
func TestRawTaskJSONMatches(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	bodies := []string{
		`{"title":"plain"}`,
		`{"title":"quote \" backslash \\ tab \t nl \n ctl \u0001","description":"é ü 日本 🎉 \u2028 \u2029"}`,
		`{"title":"tags","tags":["a","b c","ü"],"priority":"high","due_date":"2031-02-03T04:05:06.789012Z"}`,
		`{"title":"done","completed":true,"due_date":"0001-01-01T00:00:00Z"}`,
		`{"title":"late","due_date":"9999-12-31T23:59:59.999999Z","priority":"low"}`,
		`{"title":"recurs","due_date":"2031-02-03T04:05:06Z","recurrence":{"rule":"FREQ=MONTHLY;BYDAY=MO,-1FR","time_zone":"Europe/Berlin"},"reminders":["PT15M","P1D"]}`,
	}
	var ids []int64
	for _, b := range bodies {
		ids = append(ids, a.createTask(t, tok, b).ID)
	}
	mustStatus(t, a.do(t, "DELETE", taskURL(ids[0]), nil, bearer(tok)), 204)
	// The next occurrence of a series carries the series' id.
	ids = append(ids, nextOccurrenceOf(t, complete(t, a, tok, ids[len(ids)-1])))
	q := a.store.Queries
	for _, filtered := range []bool{false, true} { // the two exec modes: prepared, and unnamed (cache_describe)
		lq := listQuery{User: user, Sort: "created_at", Desc: true, Limit: 10}
		if filtered {
			lq.Priority = "high"
		}
		sql, args := listSQL(lq)
		if filtered {
			args = append([]any{pgx.QueryExecModeCacheDescribe}, args...)
		}
		rows, err := q.db.Query(t.Context(), sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		binary := rowsAreBinary(rows)
		rows.Close()
		if !binary {
			t.Fatalf("filtered=%v: the rows are not in the form appendRawTask reads: %+v", filtered, rows.FieldDescriptions())
		}
	}
	// The get's row too, or GetTaskJSON would answer by its fallback.
	getRows, err := q.db.Query(t.Context(), sqlGetTaskRow, ids[1], user)
	if err != nil {
		t.Fatal(err)
	}
	binary := getRowIsBinary(getRows)
	getRows.Close()
	if !binary {
		t.Fatalf("the get's row is not in the form appendRawTask reads: %+v", getRows.FieldDescriptions())
	}
	for _, id := range ids[1:] {
		task, err := q.GetTask(t.Context(), user, id)
		if err != nil {
			t.Fatal(err)
		}
		raw, version, err := q.GetTaskJSON(t.Context(), user, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := appendTask(nil, &task); !bytes.Equal(raw, want) || version != task.Version {
			t.Fatalf("task %d:\nraw  %s\nwant %s", id, raw, want)
		}
	}
	if _, _, err := q.GetTaskJSON(t.Context(), user, ids[0], nil); err != errTaskNotFound {
		t.Fatalf("a trashed task: %v", err)
	}
	for _, sort := range taskSorts {
		for _, desc := range []bool{true, false} {
			lq := listQuery{User: user, Sort: sort, Desc: desc, Limit: 2}
			page, err := q.ListTasks(t.Context(), lq)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := q.ListTasksJSON(t.Context(), lq, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := appendTasks(nil, page.Tasks)
			name := fmt.Sprintf("%s desc=%v", sort, desc)
			if !bytes.Equal(raw.Body, want) || raw.More != page.More || raw.Seq != page.Seq || raw.Count != len(page.Tasks) {
				t.Fatalf("%s:\nraw  %s (more %v, seq %d)\nwant %s (more %v, seq %d)", name, raw.Body, raw.More, raw.Seq, want, page.More, page.Seq)
			}
			if wantNext := cursorAfter(&page.Tasks[len(page.Tasks)-1], sort, desc); raw.Next.String() != wantNext.String() {
				t.Fatalf("%s: cursor %s, want %s", name, raw.Next, wantNext)
			}
		}
	}

	// The feed: each change encoded from its binary row reads as the same
	// change decoded into a Task (rows in text: the simple protocol).
	changes, _, err := q.ChangesAfter(t.Context(), user, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := q.db.Query(t.Context(), sqlChangedTasks, pgx.QueryExecModeSimpleProtocol, user, 0, 101)
	if err != nil {
		t.Fatal(err)
	}
	var want []Change
	for rows.Next() {
		var task Task
		var seq int64
		if err := scanTask(rows, &task, user, &seq); err != nil {
			t.Fatal(err)
		}
		c := Change{Seq: seq, Task: &task}
		if task.DeletedAt != nil {
			c = Change{Seq: seq, Deleted: task.ID}
		}
		want = append(want, c)
	}
	if rows.Err() != nil || len(changes) != len(ids) || len(want) != len(changes) {
		t.Fatalf("%d changes from binary rows, %d from text (%v), want %d", len(changes), len(want), rows.Err(), len(ids))
	}
	for i := range changes {
		if changes[i].JSON == nil && changes[i].Deleted == 0 {
			t.Fatalf("change %d was not encoded from its binary row", i)
		}
		if got, w := appendChange(nil, changes[i]), appendChange(nil, want[i]); !bytes.Equal(got, w) || changes[i].Seq != want[i].Seq {
			t.Fatalf("change %d:\nraw  %s (seq %d)\nwant %s (seq %d)", i, got, changes[i].Seq, w, want[i].Seq)
		}
	}
}

// getRowColumns is taskColumns without deleted_at and next_occurrence_id, and
// getRowPositions says where each of its columns is in taskColumns.
func TestGetRowColumns(t *testing.T) {
	all, get := sqlColumns(taskColumns), sqlColumns(getRowColumns)
	if want := slices.DeleteFunc(slices.Clone(all), func(c string) bool {
		return c == "deleted_at" || c == "next_occurrence_id"
	}); !slices.Equal(get, want) {
		t.Fatalf("getRowColumns\n%q\nwant\n%q", get, want)
	}
	if len(get) != len(getRowPositions) || len(get) > 16 {
		t.Fatalf("%d columns, %d positions (pgx allocates for more than 16 columns)", len(get), len(getRowPositions))
	}
	for i, col := range getRowPositions {
		if get[i] != all[col] {
			t.Errorf("column %d is %s, position %d is %s", i, get[i], col, all[col])
		}
	}
}

// sqlColumns splits a select list at its top-level commas.
func sqlColumns(list string) []string {
	var cols []string
	depth, start := 0, 0
	for i, c := range list {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				cols = append(cols, strings.TrimSpace(list[start:i]))
				start = i + 1
			}
		}
	}
	return append(cols, strings.TrimSpace(list[start:]))
}
