package main

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// cursor is the position just after the last task of a page, in one sort and
// order: the sort key and id of that task. Pages are keyset-based, so writes
// between pages neither skip nor repeat the tasks that were there all along.
type cursor struct {
	Sort  string
	Desc  bool
	ID    int64
	Time  time.Time // created_at, updated_at or due_date
	NoDue bool      // due_date sort: that task has no due date
	Rank  int       // priority sort: none 0 .. high 3
	Title string    // title sort
}

// trashSort is the one order of the trash: most recently deleted first.
const trashSort = "deleted_at"

func cursorAfter(t *Task, sort string, desc bool) cursor {
	c := cursor{Sort: sort, Desc: desc, ID: t.ID}
	switch sort {
	case "created_at":
		c.Time = t.CreatedAt
	case "updated_at":
		c.Time = t.UpdatedAt
	case "due_date":
		if t.DueDate == nil {
			c.NoDue = true
		} else {
			c.Time = *t.DueDate
		}
	case "priority":
		c.Rank, _ = priorityRank(t.Priority)
	case "title":
		c.Title = t.Title
	case trashSort:
		if t.DeletedAt != nil {
			c.Time = *t.DeletedAt
		}
	}
	return c
}

// dueKey is the value a due_date cursor compares with: tasks without a due
// date sort as if it were infinitely late (asc) or early (desc), i.e. last.
func (c cursor) dueKey(desc bool) any {
	if c.NoDue {
		return pgInfinity(desc)
	}
	return c.Time
}

// The encoding, before base64url: 1.<sort>.<a|d>.<id>.<key>, where the key is
// microseconds since 1970, "n" (no due date), a priority rank, or a base64url title.
func (c cursor) String() string {
	order := "a"
	if c.Desc {
		order = "d"
	}
	var key string
	switch c.Sort {
	case "priority":
		key = strconv.Itoa(c.Rank)
	case "title":
		key = base64.RawURLEncoding.EncodeToString([]byte(c.Title))
	default:
		if c.NoDue {
			key = "n"
		} else {
			key = strconv.FormatInt(c.Time.UnixMicro(), 10)
		}
	}
	raw := "1." + c.Sort + "." + order + "." + strconv.FormatInt(c.ID, 10) + "." + key
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

var errBadCursor = errors.New("is not a cursor this service issued")

func decodeCursor(s string) (cursor, error) {
	var c cursor
	if len(s) > 2048 {
		return c, errBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, errBadCursor
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 5 || parts[0] != "1" {
		return c, errBadCursor
	}
	c.Sort = parts[1]
	if !slices.Contains(taskSorts, c.Sort) && c.Sort != trashSort {
		return c, errBadCursor
	}
	switch parts[2] {
	case "a":
	case "d":
		c.Desc = true
	default:
		return c, errBadCursor
	}
	if c.ID, err = strconv.ParseInt(parts[3], 10, 64); err != nil || c.ID <= 0 {
		return c, errBadCursor
	}
	key := parts[4]
	switch c.Sort {
	case "priority":
		if c.Rank, err = strconv.Atoi(key); err != nil || c.Rank < 0 || c.Rank >= len(priorities) {
			return c, errBadCursor
		}
	case "title":
		t, err := base64.RawURLEncoding.DecodeString(key)
		if err != nil || !utf8.Valid(t) || strings.ContainsRune(string(t), 0) || utf8.RuneCount(t) > maxTitleLen {
			return c, errBadCursor
		}
		c.Title = string(t)
	default:
		if key == "n" && c.Sort == "due_date" {
			c.NoDue = true
			break
		}
		us, err := strconv.ParseInt(key, 10, 64)
		if err != nil || us < minTimestamp.UnixMicro() || us > maxTimestamp.UnixMicro() {
			return c, errBadCursor
		}
		c.Time = time.UnixMicro(us).UTC()
	}
	return c, nil
}
