package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

func handleTaskCreate(w http.ResponseWriter, r *http.Request, q Queries) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	members, err := readObject(w, r)
	if err != nil {
		return err
	}
	in, err := parseNewTask(members)
	if err != nil {
		return err
	}
	t, err := q.CreateTask(r.Context(), userIDFrom(r.Context()), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", taskPath(t.UserID, t.ID))
	writeTask(w, r, http.StatusCreated, &t)
	return nil
}

func handleTaskGet(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	buf := getBuffer()
	defer putBuffer(buf)
	body, version, err := q.GetTaskJSON(r.Context(), userIDFrom(r.Context()), id, (*buf)[:0])
	*buf = body
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(version))
	if noneMatch(r.Header.Values("If-None-Match"), version) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, r, http.StatusOK, body)
	return nil
}

// handleTaskUpdate serves PUT and PATCH alike: the fields given change,
// omitted ones keep their values.
func handleTaskUpdate(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	members, err := readObject(w, r)
	if err != nil {
		return err
	}
	changes, err := parseTaskChanges(members)
	if err != nil {
		return err
	}
	t, err := q.UpdateTask(r.Context(), userIDFrom(r.Context()), id, changes, parseIfMatch(r.Header.Values("If-Match")))
	if err != nil {
		return err
	}
	linkNextOccurrence(w, &t)
	writeTask(w, r, http.StatusOK, &t)
	return nil
}

// handleTaskComplete toggles completed (empty body) or sets it ({"completed": bool}).
func handleTaskComplete(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	var completed *bool // nil: toggle
	// Only JSON's own whitespace makes an empty body: "\u00a0" is malformed.
	if len(bytes.Trim(body, " \t\r\n")) > 0 {
		if completed, err = parseCompleteBody(body); err != nil {
			return err
		}
	}
	t, err := q.SetCompleted(r.Context(), userIDFrom(r.Context()), id, completed, parseIfMatch(r.Header.Values("If-Match")))
	if err != nil {
		return err
	}
	linkNextOccurrence(w, &t)
	writeTask(w, r, http.StatusOK, &t)
	return nil
}

func handleTaskDelete(w http.ResponseWriter, r *http.Request, q Queries) error {
	id, err := taskRoute(r)
	if err != nil {
		return err
	}
	if err := q.TrashTask(r.Context(), userIDFrom(r.Context()), id, parseIfMatch(r.Header.Values("If-Match"))); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleTaskList lists; with If-None-Match naming the list's current ETag,
// it answers 304 from the user's feed position alone.
func handleTaskList(w http.ResponseWriter, r *http.Request, q Queries) error {
	values, err := parseQuery(r, listParams...)
	if err != nil {
		return err
	}
	lq, err := parseListQuery(values)
	if err != nil {
		return err
	}
	lq.User = userIDFrom(r.Context())
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 {
		seq, err := q.FeedPosition(r.Context(), lq.User)
		if err != nil {
			return err
		}
		if listStillCurrent(inm, lq.User, seq) {
			w.Header().Set("ETag", listETag(lq.User, seq))
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
	}
	buf := getBuffer()
	defer putBuffer(buf)
	page, err := q.ListTasksJSON(r.Context(), lq, (*buf)[:0])
	*buf = page.Body
	if err != nil {
		return err
	}
	if page.More {
		values.Set("cursor", page.Next.String())
		w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+values.Encode()+`>; rel="next"`)
	}
	w.Header().Set("ETag", listETag(lq.User, page.Seq))
	writeJSON(w, r, http.StatusOK, page.Body)
	return nil
}

func handleTaskStats(w http.ResponseWriter, r *http.Request, q Queries) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	user := userIDFrom(r.Context())
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 {
		seq, err := q.FeedPosition(r.Context(), user)
		if err != nil {
			return err
		}
		if tag, ok := statsStillCurrent(inm, user, seq, time.Now()); ok {
			w.Header().Set("ETag", tag)
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
	}
	st, err := q.Stats(r.Context(), user)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", statsETag(user, st.Seq, st.NextOverdue))
	body := fmt.Appendf(nil, `{"total":%d,"completed":%d,"pending":%d,"overdue":%d}`, st.Total, st.Completed, st.Pending, st.Overdue)
	writeJSON(w, r, http.StatusOK, body)
	return nil
}

func writeTask(w http.ResponseWriter, r *http.Request, status int, t *Task) {
	w.Header().Set("ETag", etag(t.Version))
	buf := getBuffer()
	defer putBuffer(buf)
	*buf = appendTask(*buf, t)
	writeJSON(w, r, status, *buf)
}

// linkNextOccurrence points a completed task's response at the next
// occurrence its completion created (API.md "Recurring tasks").
func linkNextOccurrence(w http.ResponseWriter, t *Task) {
	if t.Completed && t.NextOccurrenceID != nil {
		w.Header().Set("Link", "<"+taskPath(t.UserID, *t.NextOccurrenceID)+`>; rel="next-occurrence"`)
	}
}

func etag(version int32) string { return `"` + strconv.Itoa(int(version)) + `"` }

func taskPath(userID string, id int64) string {
	return "/api/" + url.PathEscape(userID) + "/tasks/" + strconv.FormatInt(id, 10)
}
