package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// What a request says outside its body: the path's ids, the query
// parameters and the conditional headers.

// taskRoute checks what a route on one task takes from its URL: the {id},
// and no query parameters.
func taskRoute(r *http.Request) (int64, error) {
	id, err := taskIDOf(r)
	if err != nil {
		return 0, err
	}
	return id, checkQuery(r)
}

// taskIDOf reads {id}: a task id, else 404.
func taskIDOf(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, ok := parseTaskID(s)
	if !ok {
		return 0, newError(CodeNotFound, "%s", "No task has the id "+strconv.Quote(s)+".")
	}
	return id, nil
}

// parseTaskID reads a task id: a positive 64-bit integer in plain decimal.
func parseTaskID(s string) (int64, bool) {
	if s == "" || s[0] < '1' || s[0] > '9' || len(s) > 19 {
		return 0, false
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil
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
		return nil, newError(CodeBadRequest, "The query string is malformed.")
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
		if _, valid := priorityRank(v[0]); !valid {
			errs.add("priority", priorityMessage)
		}
		q.Priority = v[0]
	}
	if v, ok := values["tag"]; ok {
		if msg := checkText(v[0], 1, maxTagLen); msg != "" {
			errs.add("tag", msg)
		}
		q.Tag = v[0]
	}
	if v, ok := values["q"]; ok {
		if msg := checkText(v[0], 0, maxSearchLen); msg != "" {
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
		if !slices.Contains(taskSorts, v[0]) {
			errs.add("sort", "must be one of "+strings.Join(taskSorts, ", "))
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
	q.Limit = intParam(values, "limit", 100, 1, 500, &errs)
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

// intParam reads the query parameter name as a whole number from lo to hi,
// in plain decimal (no sign, no leading zeros); def when it is absent.
func intParam(values url.Values, name string, def, lo, hi int, errs *fieldErrors) int {
	v, ok := values[name]
	if !ok {
		return def
	}
	s := v[0]
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi || s[0] == '+' || s[0] == '-' || (len(s) > 1 && s[0] == '0') {
		errs.add(name, fmt.Sprintf("must be a whole number from %d to %d", lo, hi))
		return def
	}
	return n
}
