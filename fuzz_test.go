package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fuzz targets for everything that reads client input before it reaches the
// database: request bodies, list query strings, cursors, bearer tokens, and
// the hand-written JSON string encoder. Run one at a time, e.g.
//
//	go test -run '^$' -fuzz '^FuzzTaskBody$' -fuzztime 10m -parallel 1 .
//
// The seed corpora are the f.Add calls below and testdata/fuzz/<FuzzName>/,
// which also keeps every input that once failed, as a regression test. A plain
// `go test` runs all the seeds.

// ---- request bodies ---------------------------------------------------------

// FuzzTaskBody feeds a body to the decoder and every body parser. None may
// panic; every refusal is a client error (400 for bytes that are not one JSON
// value, 422 for JSON that is not an acceptable task); whatever is accepted
// obeys the rules of API.md's task table. (The 413 and 415 of readBody, which
// come before these, are TestHostileInput's.)
func FuzzTaskBody(f *testing.F) {
	for _, s := range []string{
		`{"title":"x"}`,
		`{"title":"  Write the report  ","description":"q","completed":true,"priority":"high","tags":[" a ","b","a"],"due_date":"2026-12-01T10:30:00.5+02:00"}`,
		`{"description":null,"tags":null,"due_date":null}`,
		`{"completed":false}`,
		`{"id":1,"user_id":"u","version":3,"created_at":"x","updated_at":null,"completed_at":[],"title":"sent back"}`,
		`{"title":"x","title":"y"}`,
		`{"title":"\u0000"}`,
		`{"title":1e999999}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if c, err := parseCompleteBody(body); err != nil {
			wantClientError(t, err, http.StatusBadRequest, http.StatusUnprocessableEntity)
		} else {
			checkCompleteBody(t, body, c)
		}

		members, err := decodeObject(body)
		if err != nil {
			wantClientError(t, err, http.StatusBadRequest, http.StatusUnprocessableEntity)
			return
		}
		checkMembers(t, body, members)

		changes, changesErr := parseTaskChanges(members)
		if changesErr != nil {
			wantClientError(t, changesErr, http.StatusUnprocessableEntity)
		} else {
			checkTaskChanges(t, members, changes)
		}

		in, err := parseNewTask(members)
		if err != nil {
			wantClientError(t, err, http.StatusUnprocessableEntity)
			if changesErr == nil && changes.Title != nil {
				t.Fatalf("a valid update with a title is refused as a create: %v", err)
			}
			return
		}
		if changesErr != nil {
			t.Fatalf("accepted as a create, refused as an update: %v", changesErr)
		}
		checkNewTask(t, changes, in)
	})
}

// wantClientError fails unless err is an *Error answered with one of
// statuses, and a 422 says which fields are wrong.
func wantClientError(t *testing.T, err error, statuses ...int) {
	t.Helper()
	ae, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	if status := statusOf(ae.Code); !slices.Contains(statuses, status) {
		t.Fatalf("status %d (%v), want one of %v", status, ae, statuses)
	}
	if ae.Message == "" {
		t.Fatalf("%v without a message", ae.Code)
	}
	if statusOf(ae.Code) == http.StatusUnprocessableEntity && len(ae.Fields) == 0 {
		t.Fatalf("422 without field errors: %v", ae)
	}
	if len(ae.Fields) > maxFieldErrors {
		t.Fatalf("%d field errors, at most %d are kept", len(ae.Fields), maxFieldErrors)
	}
	for _, fe := range ae.Fields {
		if fe.Message == "" || !utf8.ValidString(fe.Field) || utf8.RuneCountInString(fe.Field) > 103 {
			t.Fatalf("field error %+q", fe)
		}
	}
	if b, err := json.Marshal(problem{Status: statusOf(ae.Code), Detail: ae.Message, Errors: ae.Fields}); err != nil || !json.Valid(b) {
		t.Fatalf("the problem does not encode: %v", err)
	}
}

// checkMembers: an accepted body is one JSON object with distinct member
// names, and members are exactly its members.
func checkMembers(t *testing.T, body []byte, members []jsonMember) {
	t.Helper()
	if !utf8.Valid(body) || !json.Valid(body) {
		t.Fatal("decodeObject accepted a body that is not valid UTF-8 JSON")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatalf("decodeObject accepted a body that is not an object: %v", err)
	}
	if len(obj) != len(members) {
		t.Fatalf("%d members, the object has %d distinct names", len(members), len(obj))
	}
	for _, m := range members {
		want, ok := obj[m.Name]
		if !ok || compactJSON(t, m.Value) != compactJSON(t, want) {
			t.Fatalf("member %q = %s, the object has %s", m.Name, m.Value, want)
		}
	}
}

func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("member value %q is not JSON: %v", raw, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkTextRule fails unless s is a valid text of min..max code points,
// checked here independently of the service's own checkText.
func checkTextRule(t *testing.T, field, s string, min, max int) {
	t.Helper()
	n := utf8.RuneCountInString(s)
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) || n < min || n > max {
		t.Fatalf("%s %q accepted: want valid UTF-8 without NUL, %d..%d code points (has %d)", field, s, min, max, n)
	}
}

func checkTimestampRule(t *testing.T, field string, ts time.Time) {
	t.Helper()
	if ts.Location() != time.UTC || ts.Year() < 1 || ts.Year() > 9999 {
		t.Fatalf("%s %v accepted: want UTC, years 1..9999", field, ts)
	}
}

// checkTaskChanges checks an accepted update against the rules and against
// the body itself, decoded by encoding/json.
func checkTaskChanges(t *testing.T, members []jsonMember, c taskChanges) {
	t.Helper()
	given := map[string]json.RawMessage{}
	for _, m := range members {
		given[m.Name] = m.Value
		switch m.Name {
		case "title", "description", "completed", "priority", "tags", "due_date":
		default:
			if !readOnlyFields[m.Name] {
				t.Fatalf("unknown field %q accepted", m.Name)
			}
		}
	}
	var s string
	raw, ok := given["title"]
	switch {
	case ok != (c.Title != nil):
		t.Fatalf("title given %v, parsed %v", ok, c.Title)
	case ok:
		checkTextRule(t, "title", *c.Title, 1, 200)
		if json.Unmarshal(raw, &s) != nil || strings.TrimSpace(s) != *c.Title || strings.TrimSpace(*c.Title) != *c.Title {
			t.Fatalf("title %s parsed as %q", raw, *c.Title)
		}
	}
	raw, ok = given["description"]
	switch {
	case ok != (c.Description != nil):
		t.Fatalf("description given %v, parsed %v", ok, c.Description)
	case ok:
		checkTextRule(t, "description", *c.Description, 0, 1000)
		s = ""
		if json.Unmarshal(raw, &s) != nil || s != *c.Description {
			t.Fatalf("description %s parsed as %q", raw, *c.Description)
		}
	}
	raw, ok = given["completed"]
	switch {
	case ok != (c.Completed != nil):
		t.Fatalf("completed given %v, parsed %v", ok, c.Completed)
	case ok:
		var b bool
		if json.Unmarshal(raw, &b) != nil || b != *c.Completed {
			t.Fatalf("completed %s parsed as %v", raw, *c.Completed)
		}
	}
	raw, ok = given["priority"]
	switch {
	case ok != (c.Priority != nil):
		t.Fatalf("priority given %v, parsed %v", ok, c.Priority)
	case ok:
		if !slices.Contains([]string{"none", "low", "medium", "high"}, *c.Priority) ||
			json.Unmarshal(raw, &s) != nil || s != *c.Priority {
			t.Fatalf("priority %s parsed as %q", raw, *c.Priority)
		}
	}
	raw, ok = given["tags"]
	switch {
	case ok != (c.Tags != nil):
		t.Fatalf("tags given %v, parsed %v", ok, c.Tags)
	case ok:
		checkTagsRule(t, c.Tags)
		var items []string
		if json.Unmarshal(raw, &items) != nil {
			t.Fatalf("tags %s accepted", raw)
		}
		want := []string{}
		for _, tag := range items {
			if tag = strings.TrimSpace(tag); !slices.Contains(want, tag) {
				want = append(want, tag)
			}
		}
		if !slices.Equal(c.Tags, want) {
			t.Fatalf("tags %s parsed as %q, want %q", raw, c.Tags, want)
		}
	}
	raw, ok = given["due_date"]
	switch {
	case ok != c.DueSet:
		t.Fatalf("due_date given %v, DueSet %v", ok, c.DueSet)
	case ok && string(raw) == "null":
		if c.DueDate != nil {
			t.Fatalf("due_date null parsed as %v", c.DueDate)
		}
	case ok:
		if c.DueDate == nil {
			t.Fatalf("due_date %s parsed as null", raw)
		}
		checkTimestampRule(t, "due_date", *c.DueDate)
		if json.Unmarshal(raw, &s) != nil || s == "" {
			t.Fatalf("due_date %s accepted", raw)
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !want.Equal(*c.DueDate) {
			t.Fatalf("due_date %s parsed as %v", raw, c.DueDate)
		}
	}
}

func checkTagsRule(t *testing.T, tags []string) {
	t.Helper()
	if len(tags) > 20 {
		t.Fatalf("%d tags accepted, at most 20", len(tags))
	}
	for i, tag := range tags {
		checkTextRule(t, "tag", tag, 1, 50)
		if strings.TrimSpace(tag) != tag || slices.Contains(tags[:i], tag) {
			t.Fatalf("tags %q: want each trimmed and distinct", tags)
		}
	}
}

// checkNewTask: a create is the update applied to the defaults.
func checkNewTask(t *testing.T, c taskChanges, in newTask) {
	t.Helper()
	want := newTask{Title: *c.Title, Priority: "none", Tags: []string{}, DueDate: c.DueDate}
	if c.Description != nil {
		want.Description = *c.Description
	}
	if c.Completed != nil {
		want.Completed = *c.Completed
	}
	if c.Priority != nil {
		want.Priority = *c.Priority
	}
	if c.Tags != nil {
		want.Tags = c.Tags
	}
	if in.Title != want.Title || in.Description != want.Description || in.Completed != want.Completed ||
		in.Priority != want.Priority || !slices.Equal(in.Tags, want.Tags) || in.Tags == nil || !sameTimePtr(in.DueDate, want.DueDate) {
		t.Fatalf("create %+v, want %+v", in, want)
	}
}

func sameTimePtr(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

// checkCompleteBody: {"completed": bool}, plus read-only fields at most.
func checkCompleteBody(t *testing.T, body []byte, completed *bool) {
	t.Helper()
	var obj map[string]json.RawMessage
	if completed == nil || json.Unmarshal(body, &obj) != nil {
		t.Fatalf("complete body %q accepted as %v", body, completed)
	}
	for name, raw := range obj {
		if name == "completed" {
			var b bool
			if json.Unmarshal(raw, &b) != nil || b != *completed {
				t.Fatalf("completed %s parsed as %v", raw, *completed)
			}
		} else if !readOnlyFields[name] {
			t.Fatalf("complete body with %q accepted", name)
		}
	}
}

// ---- list query strings -----------------------------------------------------

// FuzzListQuery parses a raw query string as the list route does. Refusals
// are 400 (not a query string) or 422; an accepted query obeys API.md's
// listing rules, and the SQL built for it holds no request text.
func FuzzListQuery(f *testing.F) {
	now := time.Date(2026, 11, 26, 1, 11, 38, 123456000, time.UTC)
	task := &Task{ID: 42, Title: "Ünïcode title", Priority: "high", CreatedAt: now, UpdatedAt: now, DueDate: &now}
	for sort := range sortKeys {
		for _, desc := range []bool{false, true} {
			order := map[bool]string{false: "asc", true: "desc"}[desc]
			v := url.Values{"sort": {sort}, "order": {order}, "cursor": {cursorAfter(task, sort, desc).String()}}
			f.Add(v.Encode())
		}
	}
	for _, s := range []string{
		"",
		"status=pending&priority=high&tag=work&q=50%25_off&due_before=2026-12-01T00:00:00Z&due_after=2026-01-01T00:00:00%2B02:00&limit=500",
		"q=%27%3B+DROP+TABLE+tasks%3B+--&tag=title",
		"limit=0", "limit=%2B5", "limit=99999999999999999999", "status=all&status=all",
		"unknown=1", "q=%00", "q=%FF", "q=a%", "a;b=c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := parseQuery(&http.Request{URL: &url.URL{RawQuery: raw}}, listParams...)
		if err != nil {
			wantClientError(t, err, http.StatusBadRequest, http.StatusUnprocessableEntity)
			return
		}
		q, err := parseListQuery(values)
		if err != nil {
			wantClientError(t, err, http.StatusUnprocessableEntity)
			return
		}
		checkListQuery(t, values, q)
		q.User = "user-1"
		checkListSQL(t, q)
	})
}

func checkListQuery(t *testing.T, values url.Values, q listQuery) {
	t.Helper()
	for name, vs := range values {
		if !slices.Contains(listParams, name) || len(vs) != 1 {
			t.Fatalf("parameter %q = %q accepted", name, vs)
		}
	}
	if q.Limit < 1 || q.Limit > 500 || (!values.Has("limit") && q.Limit != 100) {
		t.Fatalf("limit %d", q.Limit)
	}
	if _, ok := sortKeys[q.Sort]; !ok || (!values.Has("sort") && q.Sort != "created_at") {
		t.Fatalf("sort %q", q.Sort)
	}
	if order := values.Get("order"); q.Desc != (order == "" || order == "desc") {
		t.Fatalf("order %q parsed as desc=%v", order, q.Desc)
	}
	switch status := values.Get("status"); {
	case status == "completed" && (q.Completed == nil || !*q.Completed),
		status == "pending" && (q.Completed == nil || *q.Completed),
		(status == "" || status == "all") && q.Completed != nil:
		t.Fatalf("status %q parsed as %v", status, q.Completed)
	}
	if q.Priority != "" && !slices.Contains([]string{"none", "low", "medium", "high"}, q.Priority) {
		t.Fatalf("priority %q", q.Priority)
	}
	if values.Has("tag") {
		checkTextRule(t, "tag", q.Tag, 1, 50)
	}
	checkTextRule(t, "q", q.Q, 0, 200)
	for _, ts := range []*time.Time{q.DueBefore, q.DueAfter} {
		if ts != nil {
			checkTimestampRule(t, "due_before/due_after", *ts)
		}
	}
	if values.Has("cursor") != (q.After != nil) {
		t.Fatalf("cursor given %v, parsed %v", values.Has("cursor"), q.After)
	}
	if c := q.After; c != nil {
		if c.Sort != q.Sort || c.Desc != q.Desc {
			t.Fatalf("cursor for %s/%v accepted for %s/%v", c.Sort, c.Desc, q.Sort, q.Desc)
		}
		checkCursorRule(t, *c)
	}
}

var (
	placeholder = regexp.MustCompile(`\$[0-9]+`)
	qArg        = regexp.MustCompile(`strpos\(lower\(title\), lower\(\$([0-9]+)\)\)`)
)

// checkListSQL: the SQL text depends only on which filters are set (and, for
// q, whether it has trigrams for the search index), never on their values,
// which all travel as $N parameters. That is the exact form of "no request
// text in the SQL": a value that reached the text would change it.
func checkListSQL(t *testing.T, q listQuery) {
	t.Helper()
	statements, args := listStatements(q)
	sql := strings.Join(statements, ";\n")
	skeleton := skeletonSQL(q)
	// First the plain form: q and tag, when they hold letters, are not in the
	// text, unless they are words of the fixed text itself ("title", "ORDER BY").
	for _, v := range []string{q.Q, q.Tag} {
		if strings.IndexFunc(v, unicode.IsLetter) >= 0 && strings.Contains(sql, v) && !strings.Contains(skeleton, v) {
			t.Fatalf("request text %q appears in the SQL: %s", v, sql)
		}
	}
	if sql != skeleton {
		t.Fatalf("the SQL depends on request values:\n%s\n%s", sql, skeleton)
	}
	// Every value is a parameter, and every statement uses every parameter.
	for _, statement := range statements {
		used := map[string]bool{}
		for _, p := range placeholder.FindAllString(statement, -1) {
			used[p] = true
		}
		for i := range args {
			if !used["$"+strconv.Itoa(i+1)] {
				t.Fatalf("argument $%d is unused: %s", i+1, statement)
			}
		}
		if len(used) != len(args) {
			t.Fatalf("%d placeholders, %d arguments: %s", len(used), len(args), statement)
		}
	}
	if !slices.Contains(args, any(q.User)) || (q.Tag != "" && !slices.Contains(args, any(q.Tag))) {
		t.Fatalf("user or tag not passed as an argument: %v", args)
	}
	if q.Q != "" {
		m := qArg.FindStringSubmatch(sql)
		n, _ := strconv.Atoi(m[1])
		if arg, ok := args[n-1].(string); !ok || arg != q.Q {
			t.Fatalf("q %q was passed as %q", q.Q, args[n-1])
		}
	}
}

// listStatements are the statements a listing may run: one, or a search's
// three (store_search.go).
func listStatements(q listQuery) ([]string, []any) {
	if !searchIndexed(q.Q) {
		sql, args := listSQL(q)
		return []string{sql}, args
	}
	l := newListing(q)
	return []string{l.searchSQL(sqlSearchHead), l.searchSQL(sqlSearchWalk), l.searchSQL(sqlSearchIndex)}, l.args
}

// skeletonSQL is the SQL for q with every request value replaced by a fixed
// one. A q long enough for the search index keeps one that is.
func skeletonSQL(q listQuery) string {
	if q.Q != "" {
		if searchIndexed(q.Q) {
			q.Q = "vvv"
		} else {
			q.Q = "v"
		}
	}
	if q.Tag != "" {
		q.Tag = "v"
	}
	if q.Priority != "" {
		q.Priority = "none"
	}
	if q.After != nil {
		c := cursor{Sort: q.After.Sort, Desc: q.After.Desc, ID: 1, NoDue: q.After.NoDue}
		q.After = &c
	}
	if q.DueBefore != nil {
		q.DueBefore = &time.Time{}
	}
	if q.DueAfter != nil {
		q.DueAfter = &time.Time{}
	}
	q.Limit = 1
	q.User = "u"
	statements, _ := listStatements(q)
	return strings.Join(statements, ";\n")
}

// ---- cursors ----------------------------------------------------------------

// FuzzCursor decodes arbitrary strings as cursors, and round-trips the cursor
// of a fuzzed task. A decoded cursor is one the service could have issued:
// it re-encodes to a string that decodes to the same cursor.
func FuzzCursor(f *testing.F) {
	now := time.Date(2026, 11, 26, 1, 11, 38, 123456000, time.UTC).UnixMicro()
	for i, sort := range []string{"created_at", "updated_at", "due_date", "priority", "title"} {
		task := &Task{ID: int64(i + 1), Title: "Ünïcode title", Priority: "medium"}
		c := cursorAfter(task, sort, i%2 == 0)
		f.Add(c.String(), int64(i+1), now, "Ünïcode title", uint8(i), i == 2, uint8(i), i%2 == 0)
	}
	f.Add("", int64(1), minTimestamp.UnixMicro(), "t", uint8(0), false, uint8(0), false)
	f.Add("", int64(1<<62), maxTimestamp.UnixMicro(), strings.Repeat("é", 200), uint8(3), false, uint8(4), true)
	f.Fuzz(func(t *testing.T, s string, id, micros int64, title string, rank uint8, noDue bool, sortIdx uint8, desc bool) {
		if c, err := decodeCursor(s); err == nil {
			checkCursorRule(t, c)
			again := c.String()
			d, err := decodeCursor(again)
			if err != nil || !sameCursor(c, d) {
				t.Fatalf("%q decodes to %+v, which re-encodes to %q, which decodes to %+v (%v)", s, c, again, d, err)
			}
			if d.String() != again {
				t.Fatalf("re-encoding is not stable: %q then %q", again, d.String())
			}
		} else if err != errBadCursor {
			t.Fatalf("error %v, want errBadCursor", err)
		}

		// A task as the database returns it: positive id, microsecond
		// timestamps in range, a title that passed validation.
		sorts := []string{"created_at", "updated_at", "due_date", "priority", "title"}
		if id <= 0 || micros < minTimestamp.UnixMicro() || micros > maxTimestamp.UnixMicro() ||
			checkText(title, 1, 200) != "" {
			return
		}
		ts := time.UnixMicro(micros).UTC()
		task := &Task{ID: id, Title: title, Priority: []string{"none", "low", "medium", "high"}[rank%4],
			CreatedAt: ts, UpdatedAt: ts, DueDate: &ts}
		if noDue {
			task.DueDate = nil
		}
		c := cursorAfter(task, sorts[int(sortIdx)%len(sorts)], desc)
		d, err := decodeCursor(c.String())
		if err != nil || !sameCursor(c, d) {
			t.Fatalf("cursor %+v encodes to %q, which decodes to %+v (%v)", c, c.String(), d, err)
		}
	})
}

func sameCursor(a, b cursor) bool {
	return a.Sort == b.Sort && a.Desc == b.Desc && a.ID == b.ID && a.Time.Equal(b.Time) &&
		a.NoDue == b.NoDue && a.Rank == b.Rank && a.Title == b.Title
}

// checkCursorRule: only what cursorAfter can make for a stored task, with
// the fields the other sorts use left empty.
func checkCursorRule(t *testing.T, c cursor) {
	t.Helper()
	if _, ok := sortKeys[c.Sort]; !ok || c.ID <= 0 {
		t.Fatalf("cursor %+v", c)
	}
	bad := false
	switch {
	case c.Sort == "title":
		checkTextRule(t, "cursor title", c.Title, 0, 200)
		bad = !c.Time.IsZero() || c.NoDue || c.Rank != 0
	case c.Sort == "priority":
		bad = c.Rank < 0 || c.Rank > 3 || !c.Time.IsZero() || c.NoDue || c.Title != ""
	case c.NoDue:
		bad = c.Sort != "due_date" || !c.Time.IsZero() || c.Rank != 0 || c.Title != ""
	default:
		checkTimestampRule(t, "cursor time", c.Time)
		bad = c.Time.Nanosecond()%1000 != 0 || c.Rank != 0 || c.Title != ""
	}
	if bad {
		t.Fatalf("cursor %+v", c)
	}
}

// ---- bearer tokens ----------------------------------------------------------

// FuzzBearerToken reads an Authorization header value and verifies the token
// with a secret-only verifier: anything but a valid token is a *tokenError,
// never a panic or another error. A token minted for a fuzzed sub verifies to
// exactly that sub, or is refused because the sub is not a valid user id.
func FuzzBearerToken(f *testing.F) {
	secret := []byte(testSecret)
	now := time.Now()
	for _, sub := range []string{"user-1", "", strings.Repeat("é", 255), strings.Repeat("x", 256), "a\x00b", "\xff"} {
		tok, err := mintToken(secret, sub, "", "", time.Hour, now)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("Bearer "+tok, sub)
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "bearer  a.b.c ", "Basic dXNlcjpwYXNz", "Bearer ..", "Bearer a.b.c.d"} {
		f.Add(h, "user-1")
	}
	v := newVerifier(verifierOptions{Secret: secret, Leeway: time.Minute})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, header, sub string) {
		token, ok := bearerToken([]string{header})
		scheme, rest, _ := strings.Cut(header, " ")
		if ok != (strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(rest) != "") ||
			(ok && token != strings.TrimSpace(rest)) {
			t.Fatalf("bearerToken(%q) = %q, %v", header, token, ok)
		}
		if ok {
			got, err := v.Verify(ctx, token)
			if err != nil {
				wantTokenError(t, err)
			} else if !validSub(got) {
				t.Fatalf("token %q verified to the invalid sub %q", token, got)
			}
		}
		if tok, ok := bearerToken([]string{header, header}); !ok || tok != "-" {
			t.Fatalf("two Authorization headers gave %q, %v", tok, ok)
		}

		tok, err := mintToken(secret, sub, "", "", time.Hour, time.Now())
		if err != nil {
			t.Fatalf("mint a token for %q: %v", sub, err)
		}
		if got, ok := bearerToken([]string{"Bearer " + tok}); !ok || got != tok {
			t.Fatalf("bearerToken lost the token: %q", got)
		}
		// JSON cannot carry invalid UTF-8: the token holds the sub with each
		// invalid byte replaced by U+FFFD, as encoding/json writes it.
		want := string([]rune(sub))
		got, err := v.Verify(ctx, tok)
		switch {
		case err != nil:
			wantTokenError(t, err)
			if validSub(want) {
				t.Fatalf("a token for the valid sub %q was refused: %v", want, err)
			}
		case got != want || !validSub(got):
			t.Fatalf("a token for %q verified to %q", sub, got)
		}
	})
}

func wantTokenError(t *testing.T, err error) {
	t.Helper()
	if te, ok := err.(*tokenError); !ok || te.reason == "" {
		t.Fatalf("error %T %v, want *tokenError", err, err)
	}
}

// validSub is API.md's rule for sub, checked independently of Verify.
func validSub(s string) bool {
	return s != "" && utf8.RuneCountInString(s) <= 255 && !strings.ContainsRune(s, 0)
}

// ---- the JSON string encoder ------------------------------------------------

// FuzzAppendJSONString checks the hand-written encoder against encoding/json.
//
// The exact property: the output is valid JSON that decodes to s with each
// byte that is not part of valid UTF-8 replaced by U+FFFD, one per byte — as
// encoding/json.Marshal does and as string([]rune(s)) does. (Not
// strings.ToValidUTF8, which replaces a whole run of invalid bytes by one
// U+FFFD.) The output is itself valid UTF-8 with no raw control characters
// and no raw U+2028/U+2029, so it is also a valid JavaScript string literal.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x01\x1f\x7f", "\b\f\n\r\t", "<>&", "\u2028\u2029", "é日本🎉",
		"\xff", "\xff\xfe", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x80", "a\xc3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString([]byte("x"), s)
		if out[0] != 'x' {
			t.Fatal("appendJSONString overwrote what it appends to")
		}
		out = out[1:]
		if !utf8.Valid(out) {
			t.Fatalf("%q encodes to invalid UTF-8 %q", s, out)
		}
		for _, r := range string(out) {
			if r < 0x20 || r == '\u2028' || r == '\u2029' {
				t.Fatalf("%q encodes to %q, with a raw %U", s, out, r)
			}
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q encodes to %q, which is not a JSON string: %v", s, out, err)
		}
		if want := string([]rune(s)); got != want {
			t.Fatalf("%q encodes to %q, which decodes to %q, want %q", s, out, got, want)
		}
		std, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var stdGot string
		if err := json.Unmarshal(std, &stdGot); err != nil || stdGot != got {
			t.Fatalf("encoding/json gives %q for %q, appendJSONString %q", stdGot, s, got)
		}
	})
}
