package main

import (
	"net/http"
	"net/url"
)

// The trash's routes (API.md "Trash"); DELETE of a task (tasks.go) puts it
// there.

var trashParams = []string{"limit", "cursor"}

// handleTrashList lists trashed tasks, most recently deleted first, paged
// like a listing.
func handleTrashList(w http.ResponseWriter, r *http.Request, q Queries) error {
	values, err := parseQuery(r, trashParams...)
	if err != nil {
		return err
	}
	limit, after, err := parseTrashQuery(values)
	if err != nil {
		return err
	}
	tasks, more, err := q.ListTrash(r.Context(), userIDFrom(r.Context()), after, limit)
	if err != nil {
		return err
	}
	if more {
		values.Set("cursor", cursorAfter(&tasks[len(tasks)-1], trashSort, true).String())
		w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+values.Encode()+`>; rel="next"`)
	}
	buf := getBuffer()
	defer putBuffer(buf)
	*buf = appendTasks(*buf, tasks)
	writeJSON(w, r, http.StatusOK, *buf)
	return nil
}

// handleTrashRestore brings a task back to the live list, as it was.
func handleTrashRestore(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	var t Task
	err = q.InTx(r.Context(), func(q Queries) error {
		t, err = q.RestoreTask(r.Context(), userIDFrom(r.Context()), id, parseIfMatch(r.Header.Values("If-Match")))
		return err
	})
	if err != nil {
		return err
	}
	writeTask(w, r, http.StatusOK, &t)
	return nil
}

// handleTrashDelete deletes one trashed task for good.
func handleTrashDelete(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	if err := q.DeleteForGood(r.Context(), userIDFrom(r.Context()), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleTrashEmpty deletes every trashed task for good.
func handleTrashEmpty(w http.ResponseWriter, r *http.Request, q Queries) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	if err := q.EmptyTrash(r.Context(), userIDFrom(r.Context())); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// parseTrashQuery reads limit (1..500, default 100) and a trash cursor.
func parseTrashQuery(values url.Values) (int, *cursor, error) {
	var errs fieldErrors
	limit := intParam(values, "limit", 100, 1, 500, &errs)
	var after *cursor
	if v, ok := values["cursor"]; ok {
		c, err := decodeCursor(v[0])
		switch {
		case err != nil:
			errs.add("cursor", err.Error())
		case c.Sort != trashSort:
			errs.add("cursor", "was issued for another listing")
		default:
			after = &c
		}
	}
	return limit, after, errs.err()
}
