package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ---- handlers -------------------------------------------------------------

// errorHandler is a handler that returns its failure instead of writing it;
// handle turns every such error into problem+json in one place.
type errorHandler func(w http.ResponseWriter, r *http.Request) error

func handle(log *slog.Logger, h errorHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			respondError(w, r, log, err)
		}
	})
}

func handleTaskCreate(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
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
		t, err := store.CreateTask(r.Context(), userIDFrom(r.Context()), in)
		if err != nil {
			return err
		}
		w.Header().Set("Location", taskPath(t.UserID, t.ID))
		writeTask(w, r, http.StatusCreated, &t)
		return nil
	})
}

func handleTaskGet(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := taskRoute(r)
		if err != nil {
			return err
		}
		t, err := store.GetTask(r.Context(), userIDFrom(r.Context()), id)
		if err != nil {
			return err
		}
		if noneMatch(r.Header.Values("If-None-Match"), t.Version) {
			w.Header().Set("ETag", etag(t.Version))
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		writeTask(w, r, http.StatusOK, &t)
		return nil
	})
}

// handleTaskUpdate serves PUT and PATCH alike: the fields given change,
// omitted ones keep their values.
func handleTaskUpdate(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
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
		t, err := store.UpdateTask(r.Context(), userIDFrom(r.Context()), id, changes, parseIfMatch(r.Header.Values("If-Match")))
		if err != nil {
			return err
		}
		writeTask(w, r, http.StatusOK, &t)
		return nil
	})
}

// handleTaskComplete toggles completed (empty body) or sets it ({"completed": bool}).
func handleTaskComplete(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
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
		t, err := store.SetCompleted(r.Context(), userIDFrom(r.Context()), id, completed, parseIfMatch(r.Header.Values("If-Match")))
		if err != nil {
			return err
		}
		writeTask(w, r, http.StatusOK, &t)
		return nil
	})
}

func handleTaskDelete(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
		id, err := taskRoute(r)
		if err != nil {
			return err
		}
		if err := store.DeleteTask(r.Context(), userIDFrom(r.Context()), id, parseIfMatch(r.Header.Values("If-Match"))); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func handleTaskList(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
		values, err := parseQuery(r, listParams...)
		if err != nil {
			return err
		}
		q, err := parseListQuery(values)
		if err != nil {
			return err
		}
		q.User = userIDFrom(r.Context())
		tasks, more, err := store.ListTasks(r.Context(), q)
		if err != nil {
			return err
		}
		if more {
			values.Set("cursor", cursorAfter(&tasks[len(tasks)-1], q.Sort, q.Desc).String())
			w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+values.Encode()+`>; rel="next"`)
		}
		buf := getBuffer()
		defer putBuffer(buf)
		*buf = appendTasks(*buf, tasks)
		writeJSON(w, r, http.StatusOK, *buf)
		return nil
	})
}

func handleTaskStats(store *Store, log *slog.Logger) http.Handler {
	return handle(log, func(w http.ResponseWriter, r *http.Request) error {
		if err := checkQuery(r); err != nil {
			return err
		}
		st, err := store.Stats(r.Context(), userIDFrom(r.Context()))
		if err != nil {
			return err
		}
		body := fmt.Appendf(nil, `{"total":%d,"completed":%d,"pending":%d,"overdue":%d}`, st.Total, st.Completed, st.Pending, st.Overdue)
		writeJSON(w, r, http.StatusOK, body)
		return nil
	})
}

// ---- responses ------------------------------------------------------------

func writeTask(w http.ResponseWriter, r *http.Request, status int, t *Task) {
	w.Header().Set("ETag", etag(t.Version))
	buf := getBuffer()
	defer putBuffer(buf)
	*buf = appendTask(*buf, t)
	writeJSON(w, r, status, *buf)
}

func etag(version int32) string { return `"` + strconv.Itoa(int(version)) + `"` }

func taskPath(userID string, id int64) string {
	return "/api/" + url.PathEscape(userID) + "/tasks/" + strconv.FormatInt(id, 10)
}

// ---- path, query and headers ----------------------------------------------

// taskRoute checks what a route on one task takes from its URL: the {id},
// and no query parameters.
func taskRoute(r *http.Request) (int64, error) {
	id, err := taskIDOf(r)
	if err != nil {
		return 0, err
	}
	return id, checkQuery(r)
}

// taskIDOf reads {id}: a positive 64-bit integer in plain decimal, else 404.
func taskIDOf(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	if s == "" || s[0] < '1' || s[0] > '9' || len(s) > 19 {
		return 0, errNotFound("No task has the id " + strconv.Quote(s) + ".")
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errNotFound("No task has the id " + strconv.Quote(s) + ".")
	}
	return id, nil
}

// parseIfMatch reads If-Match: absent or "*" is no condition (nil); otherwise
// the strong entity tags it lists. A weak or malformed tag matches nothing,
// so the write is refused rather than made blindly.
func parseIfMatch(values []string) ifMatch {
	if len(values) == 0 {
		return nil
	}
	out := ifMatch{}
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" {
				return nil
			}
			if n, ok := parseETag(tag); ok {
				out = append(out, n)
			}
		}
	}
	return out
}

// noneMatch reports whether If-None-Match names the current version (weak
// comparison, as RFC 9110 has for If-None-Match) or is "*".
func noneMatch(values []string, version int32) bool {
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" {
				return true
			}
			if n, ok := parseETag(tag); ok && n == version {
				return true
			}
		}
	}
	return false
}

func parseETag(tag string) (int32, bool) {
	if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return 0, false
	}
	n, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 32)
	return int32(n), err == nil && n >= 1
}

// parseQuery parses the query string and refuses parameters the route does
// not take, or that are given more than once.
func parseQuery(r *http.Request, allowed ...string) (url.Values, error) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errBadRequest("The query string is malformed.")
	}
	var errs fieldErrors
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range values {
			if !yield(k) {
				return
			}
		}
	}) {
		switch {
		case !slices.Contains(allowed, name):
			errs.add(name, "is not a query parameter of this route")
		case len(values[name]) > 1:
			errs.add(name, "is given more than once")
		}
	}
	return values, errs.err()
}

// checkQuery refuses any query parameter, for routes that take none.
func checkQuery(r *http.Request) error {
	if r.URL.RawQuery == "" {
		return nil
	}
	_, err := parseQuery(r)
	return err
}

var listParams = []string{"status", "priority", "tag", "q", "due_before", "due_after", "sort", "order", "limit", "cursor"}

func parseListQuery(values url.Values) (listQuery, error) {
	q := listQuery{Sort: "created_at", Desc: true, Limit: 100}
	var errs fieldErrors
	if v, ok := values["status"]; ok {
		switch v[0] {
		case "all":
		case "pending", "completed":
			done := v[0] == "completed"
			q.Completed = &done
		default:
			errs.add("status", "must be one of all, pending, completed")
		}
	}
	if v, ok := values["priority"]; ok {
		if _, valid := priorityRank[v[0]]; !valid {
			errs.add("priority", "must be one of none, low, medium, high")
		}
		q.Priority = v[0]
	}
	if v, ok := values["tag"]; ok {
		if msg := checkText(v[0], 1, 50); msg != "" {
			errs.add("tag", msg)
		}
		q.Tag = v[0]
	}
	if v, ok := values["q"]; ok {
		if msg := checkText(v[0], 0, 200); msg != "" {
			errs.add("q", msg)
		}
		q.Q = v[0]
	}
	for _, name := range []string{"due_before", "due_after"} {
		if v, ok := values[name]; ok {
			t, valid := parseTimestamp(v[0])
			if !valid {
				errs.add(name, "must be an RFC 3339 timestamp with an offset, such as 2026-11-26T09:00:00Z (send + as %2B)")
				continue
			}
			if name == "due_before" {
				q.DueBefore = &t
			} else {
				q.DueAfter = &t
			}
		}
	}
	if v, ok := values["sort"]; ok {
		if _, valid := sortKeys[v[0]]; !valid {
			errs.add("sort", "must be one of created_at, updated_at, due_date, priority, title")
		}
		q.Sort = v[0]
	}
	if v, ok := values["order"]; ok {
		switch v[0] {
		case "asc", "desc":
			q.Desc = v[0] == "desc"
		default:
			errs.add("order", "must be asc or desc")
		}
	}
	if v, ok := values["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > 500 || v[0][0] < '1' || v[0][0] > '9' {
			errs.add("limit", "must be a whole number from 1 to 500")
		}
		q.Limit = n
	}
	if v, ok := values["cursor"]; ok && len(errs) == 0 {
		c, err := decodeCursor(v[0])
		switch {
		case err != nil:
			errs.add("cursor", err.Error())
		case c.Sort != q.Sort || c.Desc != q.Desc:
			errs.add("cursor", "was issued for another sort or order")
		default:
			q.After = &c
		}
	}
	return q, errs.err()
}

// ---- bodies ---------------------------------------------------------------

// readObject reads a body that must be one JSON object.
func readObject(w http.ResponseWriter, r *http.Request) ([]jsonMember, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, errBadRequest("A JSON object body is required.")
	}
	return decodeObject(body)
}

// readOnlyFields are server-set: ignored in a body, so a client can send back
// a task it received.
var readOnlyFields = map[string]bool{
	"id": true, "user_id": true, "version": true, "created_at": true, "updated_at": true, "completed_at": true,
}

// parseTaskChanges validates an update body; every bad field is reported.
func parseTaskChanges(members []jsonMember) (taskChanges, error) {
	var c taskChanges
	var errs fieldErrors
	for _, m := range members {
		switch m.Name {
		case "title":
			s, ok := jsonString(m.Value)
			if !ok {
				errs.add("title", "must be a string")
				continue
			}
			s = strings.TrimSpace(s)
			if msg := checkText(s, 1, 200); msg != "" {
				errs.add("title", msg)
				continue
			}
			c.Title = &s
		case "description":
			s := ""
			if !isNull(m.Value) {
				var ok bool
				if s, ok = jsonString(m.Value); !ok {
					errs.add("description", "must be a string or null")
					continue
				}
			}
			if msg := checkText(s, 0, 1000); msg != "" {
				errs.add("description", msg)
				continue
			}
			c.Description = &s
		case "completed":
			b, ok := jsonBool(m.Value)
			if !ok {
				errs.add("completed", "must be true or false")
				continue
			}
			c.Completed = &b
		case "priority":
			s, ok := jsonString(m.Value)
			if _, valid := priorityRank[s]; !ok || !valid {
				errs.add("priority", "must be one of none, low, medium, high")
				continue
			}
			c.Priority = &s
		case "tags":
			if isNull(m.Value) {
				c.Tags = []string{}
				continue
			}
			c.Tags = parseTags(m.Value, &errs)
		case "due_date":
			c.DueSet = true
			if isNull(m.Value) {
				continue
			}
			s, _ := jsonString(m.Value)
			t, ok := parseTimestamp(s)
			if !ok {
				errs.add("due_date", "must be an RFC 3339 timestamp with an offset, such as 2026-11-26T09:00:00Z, or null")
				continue
			}
			c.DueDate = &t
		default:
			if !readOnlyFields[m.Name] {
				errs.add(m.Name, "is not a field of a task")
			}
		}
	}
	return c, errs.err()
}

// parseNewTask validates a create body: title is required, the rest default.
func parseNewTask(members []jsonMember) (newTask, error) {
	c, err := parseTaskChanges(members)
	errs, _ := err.(*apiError)
	if c.Title == nil && !slices.ContainsFunc(members, func(m jsonMember) bool { return m.Name == "title" }) {
		fe := fieldError{Field: "title", Message: "is required"}
		if errs == nil {
			errs = errValidation(fe)
		} else if len(errs.Fields) < maxFieldErrors {
			errs = errValidation(append(errs.Fields, fe)...)
		}
	}
	if errs != nil {
		return newTask{}, errs
	}
	in := newTask{Title: *c.Title, Priority: "none", Tags: []string{}, DueDate: c.DueDate}
	if c.Description != nil {
		in.Description = *c.Description
	}
	if c.Completed != nil {
		in.Completed = *c.Completed
	}
	if c.Priority != nil {
		in.Priority = *c.Priority
	}
	if c.Tags != nil {
		in.Tags = c.Tags
	}
	return in, nil
}

// parseCompleteBody reads {"completed": bool}; read-only task fields are ignored.
func parseCompleteBody(body []byte) (*bool, error) {
	members, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	var completed *bool
	var errs fieldErrors
	for _, m := range members {
		switch {
		case m.Name == "completed":
			b, ok := jsonBool(m.Value)
			if !ok {
				errs.add("completed", "must be true or false")
				continue
			}
			completed = &b
		case !readOnlyFields[m.Name]:
			errs.add(m.Name, "is not accepted here: send an empty body to toggle, or {\"completed\": true|false}")
		}
	}
	if completed == nil && len(errs) == 0 {
		errs.add("completed", "is required (or send an empty body to toggle)")
	}
	return completed, errs.err()
}

// parseTags trims each tag, checks its length, drops exact duplicates (order
// kept) and allows at most 20.
func parseTags(raw json.RawMessage, errs *fieldErrors) []string {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		errs.add("tags", "must be an array of strings, or null")
		return nil
	}
	tags := make([]string, 0, min(len(items), 21))
	bad := false
	for i, item := range items {
		s, ok := jsonString(item)
		field := "tags[" + strconv.Itoa(i) + "]"
		if !ok {
			errs.add(field, "must be a string")
			bad = true
			continue
		}
		s = strings.TrimSpace(s)
		if msg := checkText(s, 1, 50); msg != "" {
			errs.add(field, msg)
			bad = true
			continue
		}
		if len(tags) <= 20 && !slices.Contains(tags, s) { // 21 distinct already fail
			tags = append(tags, s)
		}
	}
	if len(tags) > 20 {
		errs.add("tags", "must have at most 20 distinct tags")
		bad = true
	}
	if bad {
		return nil
	}
	return tags
}

// checkText returns what is wrong with s as a text of min..max characters
// (Unicode code points), or "". PostgreSQL cannot store NUL in text.
func checkText(s string, min, max int) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "must not contain NUL characters"
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n < min && min == 1:
		return "must not be empty"
	case n < min:
		return fmt.Sprintf("must be at least %d characters", min)
	case n > max:
		return fmt.Sprintf("must be at most %d characters", max)
	}
	return ""
}

// parseTimestamp accepts RFC 3339 with an offset (Z or ±hh:mm), years 0001-9999.
func parseTimestamp(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Before(minTimestamp) || t.After(maxTimestamp) {
		return time.Time{}, false
	}
	return t.UTC(), true
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonBool(raw json.RawMessage) (bool, bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// fieldErrors collects validation problems; at most maxFieldErrors are kept.
type fieldErrors []fieldError

const maxFieldErrors = 50

func (e *fieldErrors) add(field, msg string) {
	if len(*e) >= maxFieldErrors {
		return
	}
	if len(field) > 100 {
		field = field[:100] + "..."
	}
	if !utf8.ValidString(field) {
		field = strings.ToValidUTF8(field, "\uFFFD")
	}
	*e = append(*e, fieldError{Field: field, Message: msg})
}

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return errValidation(e...)
}
