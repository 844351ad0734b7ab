package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The next occurrence, computed without a database: each case is one of the
// issue's time cases, with the exact instants a calendar shows.

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v.UTC()
}

func mustRule(t testing.TB, rule, zone, from string) recurrenceRule {
	t.Helper()
	if from == "" {
		from = fromDue
	}
	rr, err := compileRecurrence(Recurrence{Rule: rule, TimeZone: zone, From: from})
	if err != nil {
		t.Fatalf("%s: %v", rule, err)
	}
	return rr
}

// series follows a rule from due, completing each occurrence at its due
// date (or at now, when that is later), and returns the next n due dates.
func series(t testing.TB, rr recurrenceRule, due string, now time.Time, n int) []string {
	t.Helper()
	o := occurrence{Due: mustTime(t, due), Index: 1}
	var out []string
	for range n {
		at := o.Due
		if now.After(at) {
			at = now
		}
		next, ok := rr.next(o, at)
		if !ok {
			out = append(out, "end")
			break
		}
		out = append(out, next.Due.Format(time.RFC3339))
		o = next
	}
	return out
}

func TestNextOccurrence(t *testing.T) {
	cases := []struct {
		name, rule, zone, from, due string
		now                         string // "": completed when due
		want                        []string
	}{
		{"weekly Monday 09:00 Berlin across spring-forward", "FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin", "",
			"2027-03-22T08:00:00Z", "", []string{"2027-03-29T07:00:00Z", "2027-04-05T07:00:00Z"}},
		{"weekly Monday 09:00 Berlin across fall-back", "FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin", "",
			"2027-10-25T07:00:00Z", "", []string{"2027-11-01T08:00:00Z", "2027-11-08T08:00:00Z"}},
		// 02:30 does not exist on 2027-03-14 in New York: it moves forward by
		// the gap to 03:30 EDT; the next day is 02:30 EDT again.
		{"daily 02:30 New York across spring-forward", "FREQ=DAILY", "America/New_York", "",
			"2027-03-13T07:30:00Z", "", []string{"2027-03-14T07:30:00Z", "2027-03-15T06:30:00Z", "2027-03-16T06:30:00Z"}},
		// 01:30 occurs twice on 2027-11-07: the first (EDT) is taken.
		{"daily 01:30 New York across fall-back", "FREQ=DAILY", "America/New_York", "",
			"2027-11-06T05:30:00Z", "", []string{"2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z"}},
		{"daily 02:30 New York on fall-back day", "FREQ=DAILY", "America/New_York", "",
			"2027-11-06T06:30:00Z", "", []string{"2027-11-07T07:30:00Z", "2027-11-08T07:30:00Z"}},
		{"monthly on the 31st skips shorter months", "FREQ=MONTHLY;BYMONTHDAY=31", "UTC", "",
			"2027-01-31T10:00:00Z", "", []string{"2027-03-31T10:00:00Z", "2027-05-31T10:00:00Z", "2027-07-31T10:00:00Z", "2027-08-31T10:00:00Z", "2027-10-31T10:00:00Z"}},
		{"monthly on the last day, leap year", "FREQ=MONTHLY;BYMONTHDAY=-1", "UTC", "",
			"2027-12-31T10:00:00Z", "", []string{"2028-01-31T10:00:00Z", "2028-02-29T10:00:00Z", "2028-03-31T10:00:00Z", "2028-04-30T10:00:00Z"}},
		{"monthly on the last day, common year", "FREQ=MONTHLY;BYMONTHDAY=-1", "Europe/Berlin", "",
			"2027-01-31T09:00:00Z", "", []string{"2027-02-28T09:00:00Z", "2027-03-31T08:00:00Z"}},
		{"yearly on February 29", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "UTC", "",
			"2024-02-29T12:00:00Z", "2024-03-01T00:00:00Z", []string{"2028-02-29T12:00:00Z"}},
		{"last Friday of the month", "FREQ=MONTHLY;BYDAY=-1FR", "UTC", "",
			"2027-01-29T17:00:00Z", "", []string{"2027-02-26T17:00:00Z", "2027-03-26T17:00:00Z"}},
		{"every other week, Monday and Wednesday", "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE", "UTC", "",
			"2027-01-04T09:00:00Z", "", []string{"2027-01-06T09:00:00Z", "2027-01-18T09:00:00Z", "2027-01-20T09:00:00Z"}},
		// Completed three weeks late: the past Mondays are skipped.
		{"overdue weekly skips to the next future Monday", "FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin", "",
			"2027-01-04T08:00:00Z", "2027-01-27T11:00:00Z", []string{"2027-02-01T08:00:00Z"}},
		// From completion: the completion's date plus the interval, at the
		// due date's time of day.
		{"from completion on an overdue task", "FREQ=DAILY;INTERVAL=2", "Europe/Berlin", fromCompletion,
			"2027-03-01T08:00:00Z", "2027-03-10T14:00:00Z", []string{"2027-03-12T08:00:00Z"}},
		{"from completion monthly keeps the time across DST", "FREQ=MONTHLY", "Europe/Berlin", fromCompletion,
			"2027-03-01T08:00:00Z", "2027-03-20T20:00:00Z", []string{"2027-04-20T07:00:00Z"}},
		{"from completion clamps to the month's end", "FREQ=MONTHLY", "UTC", fromCompletion,
			"2027-01-01T08:00:00Z", "2027-01-31T20:00:00Z", []string{"2027-02-28T08:00:00Z"}},
		{"COUNT ends the series", "FREQ=DAILY;COUNT=3", "UTC", "",
			"2027-01-01T08:00:00Z", "", []string{"2027-01-02T08:00:00Z", "2027-01-03T08:00:00Z", "end"}},
		{"COUNT counts skipped occurrences", "FREQ=DAILY;COUNT=3", "UTC", "",
			"2027-01-01T08:00:00Z", "2027-01-02T12:00:00Z", []string{"2027-01-03T08:00:00Z", "end"}},
		{"UNTIL ends the series (inclusive)", "FREQ=DAILY;UNTIL=20270103T080000Z", "UTC", "",
			"2027-01-01T08:00:00Z", "", []string{"2027-01-02T08:00:00Z", "2027-01-03T08:00:00Z", "end"}},
		{"UNTIL as a date includes that day", "FREQ=WEEKLY;UNTIL=20270111", "America/New_York", "",
			"2027-01-04T23:00:00Z", "", []string{"2027-01-11T23:00:00Z", "end"}},
		{"a rule that never matches ends", "FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=1;BYDAY=5MO", "UTC", "",
			"2027-01-01T08:00:00Z", "", []string{"end"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rr := mustRule(t, c.rule, c.zone, c.from)
			var now time.Time
			if c.now != "" {
				now = mustTime(t, c.now)
			}
			got := series(t, rr, c.due, now, len(c.want))
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Fatalf("got  %v\nwant %v", got, c.want)
			}
		})
	}
}

// The index of the occurrence counts every occurrence of the rule, the
// skipped ones too, so COUNT holds however late a task is completed.
func TestNextOccurrenceIndex(t *testing.T) {
	rr := mustRule(t, "FREQ=WEEKLY;BYDAY=MO", "Europe/Berlin", "")
	next, ok := rr.next(occurrence{Due: mustTime(t, "2027-01-04T08:00:00Z"), Index: 1}, mustTime(t, "2027-01-27T11:00:00Z"))
	if !ok || next.Index != 5 {
		t.Fatalf("index %d (ok %v), want 5: Jan 11, 18, 25 skipped, Feb 1 next", next.Index, ok)
	}
}

// The wall-clock conversion, on each kind of day.
func TestWallToInstant(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	lh, _ := time.LoadLocation("Australia/Lord_Howe") // a 30-minute DST shift
	cases := []struct {
		wall string
		loc  *time.Location
		want string
	}{
		{"2027-03-14T02:30:00Z", ny, "2027-03-14T07:30:00Z"}, // gap: 03:30 EDT
		{"2027-03-14T02:00:00Z", ny, "2027-03-14T07:00:00Z"}, // gap start: 03:00 EDT
		{"2027-03-14T03:00:00Z", ny, "2027-03-14T07:00:00Z"},
		{"2027-11-07T01:30:00Z", ny, "2027-11-07T05:30:00Z"}, // twice: the first (EDT)
		{"2027-11-07T02:00:00Z", ny, "2027-11-07T07:00:00Z"},
		{"2027-07-01T12:00:00Z", ny, "2027-07-01T16:00:00Z"},
		{"2027-10-03T02:15:00Z", lh, "2027-10-02T15:45:00Z"}, // gap 02:00-02:30: 02:45 +11
	}
	for _, c := range cases {
		if got := wallToInstant(mustTime(t, c.wall), c.loc); !got.Equal(mustTime(t, c.want)) {
			t.Errorf("%s in %s: %s, want %s", c.wall, c.loc, got.UTC().Format(time.RFC3339), c.want)
		}
	}
}

func TestParseRuleRejects(t *testing.T) {
	for _, rule := range []string{
		"", "FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=SECONDLY", "FREQ=WEEKLY;BYHOUR=9", "FREQ=MONTHLY;BYSETPOS=-1",
		"FREQ=YEARLY;BYWEEKNO=20", "FREQ=YEARLY;BYYEARDAY=100", "FREQ=DAILY;BYMINUTE=5", "FREQ=DAILY;WKST=SU",
		"FREQ=DAILY;FREQ=WEEKLY", "INTERVAL=2", "FREQ=DAILY;COUNT=2;UNTIL=20270101", "FREQ=DAILY;INTERVAL=0",
		"FREQ=DAILY;INTERVAL=x", "FREQ=DAILY;COUNT=0", "FREQ=MONTHLY;BYMONTHDAY=32", "FREQ=MONTHLY;BYMONTHDAY=0",
		"FREQ=MONTHLY;BYMONTHDAY=-32", "FREQ=YEARLY;BYMONTH=13", "FREQ=WEEKLY;BYDAY=XX", "FREQ=WEEKLY;BYDAY=1MO",
		"FREQ=DAILY;BYDAY=-1FR", "FREQ=MONTHLY;BYDAY=0MO", "FREQ=DAILY;UNTIL=2027-01-01", "FREQ=DAILY;X-FOO=1",
		"FREQ=DAILY;", "FREQ", "FREQ=WEEKLY;BYMONTHDAY=1", "FREQ=WEEKLY;BYDAY=MO,MO", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30,-31",
		"FREQ=DAILY;BYMONTH=4,6;BYMONTHDAY=31",
	} {
		if _, err := parseRule(rule); err == nil {
			t.Errorf("%q: accepted", rule)
		}
	}
	for _, rule := range []string{
		"FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=MONTHLY;BYDAY=-1FR", "FREQ=YEARLY;BYMONTH=2;BYDAY=2MO",
		"FREQ=MONTHLY;BYMONTHDAY=-1,15", "freq=daily;interval=3", "FREQ=DAILY;UNTIL=20271231T235959Z",
		"FREQ=DAILY;COUNT=10",
	} {
		if _, err := parseRule(rule); err != nil {
			t.Errorf("%q: %v", rule, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]string{
		"PT0S": "PT0S", "PT15M": "PT15M", "P1D": "P1D", "PT90M": "PT1H30M", "P1W": "P7D", "P30D": "P30D",
		"P1DT2H3M4S": "P1DT2H3M4S", "PT24H": "P1D",
	} {
		d, ok := parseDuration(in)
		if !ok || formatDuration(d) != want {
			t.Errorf("%s: %s (%v), want %s", in, formatDuration(d), ok, want)
		}
	}
	for _, in := range []string{"", "P", "PT", "15M", "P1H", "PT1D", "P1M", "P1Y", "PT1.5H", "P-1D", "PT1M1H", "P1DT", "P1D1D"} {
		if _, ok := parseDuration(in); ok {
			t.Errorf("%q: accepted", in)
		}
	}
}

// ---- through the API -------------------------------------------------------

// recurringTask is a task as a client sees it, with the recurrence fields.
type recurringTask struct {
	taskJSON
	Recurrence *Recurrence `json:"recurrence"`
	Reminders  []string    `json:"reminders"`
	SeriesID   *int64      `json:"series_id"`
}

func (r testResponse) recurring(t testing.TB) recurringTask {
	t.Helper()
	var v recurringTask
	r.decode(t, &v)
	return v
}

// fakeClock is a clock a test sets; the store reads it for next occurrences.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func (c *fakeClock) Now() time.Time  { return *c.t.Load() }
func (c *fakeClock) Set(t time.Time) { c.t.Store(&t) }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}

// nextOccurrenceOf reads the Link of a completing response: the next
// occurrence's id, or 0 when there is none.
func nextOccurrenceOf(t testing.TB, r testResponse) int64 {
	t.Helper()
	link := r.Header.Get("Link")
	if link == "" {
		return 0
	}
	m := regexp.MustCompile(`^</api/([^/>]+)/tasks/([0-9]+)>; rel="next-occurrence"$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link %q is not a next-occurrence link", link)
	}
	id, _ := strconv.ParseInt(m[2], 10, 64)
	return id
}

// seriesTasks are the ids of the user's tasks in a series, oldest first.
func seriesTasks(t testing.TB, a *testAPI, user string, series int64) []int64 {
	t.Helper()
	rows, err := a.pool.Query(context.Background(),
		`SELECT id FROM tasks WHERE user_id = $1 AND coalesce(series_id, id) = $2 ORDER BY id`, user, series)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func complete(t testing.TB, a *testAPI, tok string, id int64, opts ...reqOption) testResponse {
	t.Helper()
	return mustStatus(t, a.do(t, "PATCH", taskURL(id)+"/complete", `{"completed":true}`, append(opts, bearer(tok))...), http.StatusOK)
}

// The recurrence, the reminders and series_id go through create, read,
// list, update and the change feed, and come back as they were sent.
func TestRecurrenceRoundTrip(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	since := syncAll(t, a, tok, "")
	created := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"standup","due_date":"2027-03-22T09:00:00+01:00",`+
		`"recurrence":{"rule":"FREQ=WEEKLY;BYDAY=MO,WE","time_zone":"Europe/Berlin"},"reminders":["PT15M","P1D","PT90M","PT15M"]}`,
		bearer(tok)), http.StatusCreated).recurring(t)
	want := Recurrence{Rule: "FREQ=WEEKLY;BYDAY=MO,WE", TimeZone: "Europe/Berlin", From: "due"}
	if created.Recurrence == nil || *created.Recurrence != want || strings.Join(created.Reminders, ",") != "PT15M,P1D,PT1H30M" ||
		created.SeriesID == nil || *created.SeriesID != created.ID {
		t.Fatalf("created %+v %+v %v", created.Recurrence, created.Reminders, created.SeriesID)
	}
	got := mustStatus(t, a.do(t, "GET", taskURL(created.ID), nil, bearer(tok)), http.StatusOK).recurring(t)
	if *got.Recurrence != want || len(got.Reminders) != 3 || *got.SeriesID != created.ID {
		t.Fatalf("read back %+v", got)
	}
	var list []recurringTask
	mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK).decode(t, &list)
	if len(list) != 1 || *list[0].Recurrence != want || *list[0].SeriesID != created.ID {
		t.Fatalf("listed %+v", list)
	}
	var feed struct {
		Changes []struct {
			Task recurringTask `json:"task"`
		} `json:"changes"`
	}
	mustStatus(t, a.do(t, "GET", "/api/me/changes?since="+since, nil, bearer(tok)), http.StatusOK).decode(t, &feed)
	if len(feed.Changes) != 1 || *feed.Changes[0].Task.Recurrence != want || len(feed.Changes[0].Task.Reminders) != 3 {
		t.Fatalf("feed %+v", feed)
	}

	// A partial update keeps them; a new rule replaces the whole recurrence.
	upd := mustStatus(t, a.do(t, "PATCH", taskURL(created.ID), `{"title":"daily standup"}`, bearer(tok)), http.StatusOK).recurring(t)
	if *upd.Recurrence != want || len(upd.Reminders) != 3 {
		t.Fatalf("a partial update changed them: %+v", upd)
	}
	upd = mustStatus(t, a.do(t, "PATCH", taskURL(created.ID), `{"recurrence":{"rule":"RRULE:FREQ=DAILY","from":"completion"},"reminders":["PT0S"]}`,
		bearer(tok)), http.StatusOK).recurring(t)
	if *upd.Recurrence != (Recurrence{Rule: "FREQ=DAILY", TimeZone: "UTC", From: "completion"}) || strings.Join(upd.Reminders, ",") != "PT0S" ||
		upd.Version != got.Version+2 {
		t.Fatalf("replaced: %+v", upd)
	}
	// Sending the task back as received changes nothing (series_id is read-only).
	body, _ := json.Marshal(upd)
	same := mustStatus(t, a.do(t, "PUT", taskURL(created.ID), body, bearer(tok)), http.StatusOK).recurring(t)
	if same.Version != upd.Version {
		t.Fatalf("sending the task back changed it: version %d -> %d", upd.Version, same.Version)
	}
	// null stops it recurring, and clears the reminders.
	upd = mustStatus(t, a.do(t, "PATCH", taskURL(created.ID), `{"recurrence":null,"reminders":null}`, bearer(tok)), http.StatusOK).recurring(t)
	if upd.Recurrence != nil || len(upd.Reminders) != 0 || upd.Reminders == nil || upd.SeriesID != nil {
		t.Fatalf("cleared: %+v", upd)
	}
	// A task without them shows null and [].
	plain := a.do(t, "POST", "/api/me/tasks", `{"title":"plain"}`, bearer(tok))
	if !strings.Contains(string(plain.Body), `"recurrence":null,"reminders":[],"series_id":null`) {
		t.Fatalf("plain task: %s", plain.Body)
	}
}

// Every unsupported or malformed part is a 422 naming the field.
func TestRecurrenceValidation(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	const due = `"due_date":"2027-01-04T09:00:00Z"`
	cases := []struct {
		body  string
		field string
	}{
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=HOURLY"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=WEEKLY;BYHOUR=9"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=MONTHLY;BYSETPOS=-1;BYDAY=MO"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY;COUNT=3;UNTIL=20270101"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=WEEKLY;BYDAY=1MO"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=MONTHLY;BYMONTHDAY=32"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY;INTERVAL=2;INTERVAL=3"}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":""}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":7}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{}}`, "recurrence.rule"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY","time_zone":"Mars/Olympus"}}`, "recurrence.time_zone"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY","time_zone":"Local"}}`, "recurrence.time_zone"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY","time_zone":""}}`, "recurrence.time_zone"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY","from":"start"}}`, "recurrence.from"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=WEEKLY;BYDAY=MO","from":"completion"}}`, "recurrence.from"},
		{`{"title":"x",` + due + `,"recurrence":{"rule":"FREQ=DAILY","every":"day"}}`, "recurrence.every"},
		{`{"title":"x",` + due + `,"recurrence":"FREQ=DAILY"}`, "recurrence"},
		{`{"title":"x",` + due + `,"reminders":["PT15M","15 minutes"]}`, "reminders[1]"},
		{`{"title":"x",` + due + `,"reminders":["P31D"]}`, "reminders[0]"},
		{`{"title":"x",` + due + `,"reminders":["P1M"]}`, "reminders[0]"},
		{`{"title":"x",` + due + `,"reminders":["-PT1H"]}`, "reminders[0]"},
		{`{"title":"x",` + due + `,"reminders":[15]}`, "reminders[0]"},
		{`{"title":"x",` + due + `,"reminders":["PT1M","PT2M","PT3M","PT4M","PT5M","PT6M"]}`, "reminders"},
		{`{"title":"x",` + due + `,"reminders":"PT1M"}`, "reminders"},
		{`{"title":"x","recurrence":{"rule":"FREQ=DAILY"}}`, "due_date"},
		{`{"title":"x","reminders":["PT5M"]}`, "due_date"},
	}
	for _, c := range cases {
		p := mustStatus(t, a.do(t, "POST", "/api/me/tasks", c.body, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
		if len(p.Errors) != 1 || p.Errors[0].Field != c.field {
			t.Errorf("%s: errors %+v, want one naming %s", c.body, p.Errors, c.field)
		}
	}

	// On an update, the rule holds on the task as merged: clearing the due
	// date of a recurring task, or giving reminders to a task without one.
	task := a.createTask(t, tok, `{"title":"x",`+due+`,"recurrence":{"rule":"FREQ=DAILY"}}`)
	plain := a.createTask(t, tok, `{"title":"y"}`)
	for _, c := range []struct {
		id   int64
		body string
	}{
		{task.ID, `{"due_date":null}`},
		{plain.ID, `{"reminders":["PT5M"]}`},
		{plain.ID, `{"recurrence":{"rule":"FREQ=DAILY"}}`},
	} {
		for _, key := range []string{"", "key-" + strconv.FormatInt(c.id, 10) + c.body} { // on the pool, and in a key's transaction
			var opts []reqOption
			if key != "" {
				opts = append(opts, header("Idempotency-Key", key))
			}
			p := mustStatus(t, a.do(t, "PATCH", taskURL(c.id), c.body, append(opts, bearer(tok))...), http.StatusUnprocessableEntity).problem(t)
			if len(p.Errors) != 1 || p.Errors[0].Field != "due_date" {
				t.Errorf("%s: %+v", c.body, p.Errors)
			}
		}
	}
	if got := mustStatus(t, a.do(t, "GET", taskURL(task.ID), nil, bearer(tok)), http.StatusOK).recurring(t); got.DueDate == nil || got.Version != 1 {
		t.Fatalf("a refused update changed the task: %+v", got)
	}
	// Clearing both at once is fine.
	mustStatus(t, a.do(t, "PATCH", taskURL(task.ID), `{"due_date":null,"recurrence":null}`, bearer(tok)), http.StatusOK)
}

// Completing a recurring task creates the next occurrence, once, and links
// to it; the next occurrence is the same task, due next, not completed.
func TestCompleteCreatesNextOccurrence(t *testing.T) {
	clock := newFakeClock(mustTime(t, "2027-03-22T08:30:00Z"))
	a := startAPI(t, func(o *apiOptions) { o.now = clock.Now })
	user, tok := a.newUser(t)
	first := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"standup","description":"d","priority":"high","tags":["work"],`+
		`"due_date":"2027-03-22T09:00:00+01:00","recurrence":{"rule":"FREQ=WEEKLY;BYDAY=MO","time_zone":"Europe/Berlin"},"reminders":["PT15M"]}`,
		bearer(tok)), http.StatusCreated).recurring(t)
	res := a.do(t, "PATCH", taskURL(first.ID)+"/complete", nil, bearer(tok))
	mustStatus(t, res, http.StatusOK)
	next := nextOccurrenceOf(t, res)
	if next == 0 || !res.recurring(t).Completed {
		t.Fatalf("no next occurrence: %s %v", res, res.Header)
	}
	if want := "</api/" + user + "/tasks/" + strconv.FormatInt(next, 10) + `>; rel="next-occurrence"`; res.Header.Get("Link") != want {
		t.Fatalf("Link %q, want %q", res.Header.Get("Link"), want)
	}
	n := mustStatus(t, a.do(t, "GET", taskURL(next), nil, bearer(tok)), http.StatusOK).recurring(t)
	if n.Title != "standup" || n.Description != "d" || n.Priority != "high" || strings.Join(n.Tags, ",") != "work" ||
		n.Completed || *n.DueDate != "2027-03-29T07:00:00.000000Z" || *n.Recurrence != *first.Recurrence ||
		strings.Join(n.Reminders, ",") != "PT15M" || *n.SeriesID != first.ID {
		t.Fatalf("next occurrence %+v", n)
	}
	// Completing the next one goes on from it; the series keeps its id.
	clock.Set(mustTime(t, "2027-03-29T07:00:00Z"))
	third := nextOccurrenceOf(t, complete(t, a, tok, next))
	if got := mustStatus(t, a.do(t, "GET", taskURL(third), nil, bearer(tok)), http.StatusOK).recurring(t); *got.DueDate != "2027-04-05T07:00:00.000000Z" || *got.SeriesID != first.ID {
		t.Fatalf("third %+v", got)
	}
	// Reopening and completing again creates nothing more; completing a
	// completed task still links to its next occurrence.
	for range 3 {
		mustStatus(t, a.do(t, "PATCH", taskURL(first.ID)+"/complete", nil, bearer(tok)), http.StatusOK)
		if res := mustStatus(t, a.do(t, "PATCH", taskURL(first.ID)+"/complete", nil, bearer(tok)), http.StatusOK); nextOccurrenceOf(t, res) != next {
			t.Fatalf("toggled back: Link %q", res.Header.Get("Link"))
		}
	}
	if res := complete(t, a, tok, first.ID); nextOccurrenceOf(t, res) != next {
		t.Fatalf("completed again: Link %q", res.Header.Get("Link"))
	}
	// Reopened, there is no link.
	if res := mustStatus(t, a.do(t, "PATCH", taskURL(first.ID)+"/complete", `{"completed":false}`, bearer(tok)), http.StatusOK); res.Header.Get("Link") != "" {
		t.Fatalf("reopened with Link %q", res.Header.Get("Link"))
	}
	// PUT with completed: true completes it the same way.
	clock.Set(mustTime(t, "2027-04-05T07:00:00Z"))
	res = mustStatus(t, a.do(t, "PUT", taskURL(third), `{"completed":true,"title":"standup!"}`, bearer(tok)), http.StatusOK)
	fourth := nextOccurrenceOf(t, res)
	if got := mustStatus(t, a.do(t, "GET", taskURL(fourth), nil, bearer(tok)), http.StatusOK).recurring(t); got.Title != "standup!" || *got.DueDate != "2027-04-12T07:00:00.000000Z" {
		t.Fatalf("fourth %+v", got)
	}
	if ids := seriesTasks(t, a, user, first.ID); len(ids) != 4 {
		t.Fatalf("series %v, want 4 tasks", ids)
	}
	// A plain task's completion has no link.
	plain := a.createTask(t, tok, `{"title":"plain"}`)
	if res := complete(t, a, tok, plain.ID); res.Header.Get("Link") != "" {
		t.Fatalf("plain task: Link %q", res.Header.Get("Link"))
	}
}

// However many completes race, and however they are retried, a task creates
// one next occurrence.
func TestNextOccurrenceAtMostOnce(t *testing.T) {
	a := startAPI(t)
	b := startAPI(t)
	user, tok := a.newUser(t)
	due := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	task := a.createTask(t, tok, `{"title":"daily","due_date":"`+due+`","recurrence":{"rule":"FREQ=DAILY"}}`)

	var wg sync.WaitGroup
	links := make([]int64, 20)
	for i := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := a
			if i%2 == 1 {
				api = b // two instances
			}
			links[i] = nextOccurrenceOf(t, complete(t, api, tok, task.ID))
		}()
	}
	wg.Wait()
	ids := seriesTasks(t, a, user, task.ID)
	if len(ids) != 2 {
		t.Fatalf("20 concurrent completes made the series %v, want the task and one next occurrence", ids)
	}
	for i, l := range links {
		if l != ids[1] {
			t.Fatalf("response %d links to %d, want %d", i, l, ids[1])
		}
	}

	// Toggled back and forth, concurrently: still one.
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustStatus(t, a.do(t, "PATCH", taskURL(task.ID)+"/complete", nil, bearer(tok)), http.StatusOK)
		}()
	}
	wg.Wait()
	if ids := seriesTasks(t, a, user, task.ID); len(ids) != 2 {
		t.Fatalf("after toggles: %v", ids)
	}

	// An Idempotency-Key retry replays the first answer, Link included.
	other := a.createTask(t, tok, `{"title":"weekly","due_date":"`+due+`","recurrence":{"rule":"FREQ=WEEKLY"}}`)
	key := header("Idempotency-Key", "complete-"+strconv.FormatInt(other.ID, 10))
	first := complete(t, a, tok, other.ID, key)
	mustStatus(t, a.do(t, "PATCH", taskURL(other.ID)+"/complete", `{"completed":false}`, bearer(tok)), http.StatusOK)
	retry := complete(t, b, tok, other.ID, key)
	if retry.Header.Get("Idempotent-Replayed") != "true" || retry.Header.Get("Link") != first.Header.Get("Link") || nextOccurrenceOf(t, first) == 0 {
		t.Fatalf("retry %v, first %v", retry.Header, first.Header)
	}
	if ids := seriesTasks(t, a, user, other.ID); len(ids) != 2 {
		t.Fatalf("after a retry: %v", ids)
	}
}

// COUNT and UNTIL end a series: the last occurrence creates none.
func TestSeriesEnds(t *testing.T) {
	clock := newFakeClock(mustTime(t, "2027-01-01T00:00:00Z"))
	a := startAPI(t, func(o *apiOptions) { o.now = clock.Now })
	user, tok := a.newUser(t)
	for _, rule := range []string{"FREQ=DAILY;COUNT=3", "FREQ=DAILY;UNTIL=20270103T090000Z"} {
		task := a.createTask(t, tok, `{"title":"x","due_date":"2027-01-01T09:00:00Z","recurrence":{"rule":"`+rule+`"}}`)
		id := task.ID
		var dues []string
		for {
			res := complete(t, a, tok, id)
			next := nextOccurrenceOf(t, res)
			if next == 0 {
				break
			}
			n := mustStatus(t, a.do(t, "GET", taskURL(next), nil, bearer(tok)), http.StatusOK).task(t)
			dues = append(dues, *n.DueDate)
			id = next
			if len(dues) > 5 {
				break
			}
		}
		if strings.Join(dues, " ") != "2027-01-02T09:00:00.000000Z 2027-01-03T09:00:00.000000Z" {
			t.Fatalf("%s: occurrences after the first %v", rule, dues)
		}
		if ids := seriesTasks(t, a, user, task.ID); len(ids) != 3 {
			t.Fatalf("%s: series %v", rule, ids)
		}
	}
}

// The time cases through the API: each next due date exactly.
func TestNextOccurrenceThroughTheAPI(t *testing.T) {
	clock := newFakeClock(time.Time{})
	a := startAPI(t, func(o *apiOptions) { o.now = clock.Now })
	_, tok := a.newUser(t)
	cases := []struct {
		recurrence, due, completedAt string
		want                         []string
	}{
		{`{"rule":"FREQ=WEEKLY;BYDAY=MO","time_zone":"Europe/Berlin"}`, "2027-03-22T09:00:00+01:00", "",
			[]string{"2027-03-29T07:00:00.000000Z", "2027-04-05T07:00:00.000000Z"}},
		{`{"rule":"FREQ=WEEKLY;BYDAY=MO","time_zone":"Europe/Berlin"}`, "2027-10-25T09:00:00+02:00", "",
			[]string{"2027-11-01T08:00:00.000000Z", "2027-11-08T08:00:00.000000Z"}},
		{`{"rule":"FREQ=DAILY","time_zone":"America/New_York"}`, "2027-03-13T02:30:00-05:00", "",
			[]string{"2027-03-14T07:30:00.000000Z", "2027-03-15T06:30:00.000000Z"}},
		{`{"rule":"FREQ=DAILY","time_zone":"America/New_York"}`, "2027-11-06T01:30:00-04:00", "",
			[]string{"2027-11-07T05:30:00.000000Z", "2027-11-08T06:30:00.000000Z"}},
		{`{"rule":"FREQ=MONTHLY;BYMONTHDAY=31"}`, "2027-01-31T10:00:00Z", "",
			[]string{"2027-03-31T10:00:00.000000Z", "2027-05-31T10:00:00.000000Z"}},
		{`{"rule":"FREQ=MONTHLY;BYMONTHDAY=-1"}`, "2028-01-31T10:00:00Z", "",
			[]string{"2028-02-29T10:00:00.000000Z", "2028-03-31T10:00:00.000000Z"}},
		{`{"rule":"FREQ=DAILY;INTERVAL=2","time_zone":"Europe/Berlin","from":"completion"}`, "2027-03-01T09:00:00+01:00", "2027-03-10T15:00:00+01:00",
			[]string{"2027-03-12T08:00:00.000000Z"}},
		{`{"rule":"FREQ=WEEKLY;BYDAY=MO","time_zone":"Europe/Berlin"}`, "2027-01-04T09:00:00+01:00", "2027-01-27T12:00:00+01:00",
			[]string{"2027-02-01T08:00:00.000000Z"}},
	}
	for _, c := range cases {
		task := a.createTask(t, tok, `{"title":"x","due_date":"`+c.due+`","recurrence":`+c.recurrence+`}`)
		id, at := task.ID, c.completedAt
		if at == "" {
			at = c.due
		}
		var got []string
		for range c.want {
			clock.Set(mustTime(t, at))
			next := nextOccurrenceOf(t, complete(t, a, tok, id))
			if next == 0 {
				t.Fatalf("%s from %s: no next occurrence", c.recurrence, c.due)
			}
			n := mustStatus(t, a.do(t, "GET", taskURL(next), nil, bearer(tok)), http.StatusOK).task(t)
			got = append(got, *n.DueDate)
			id, at = next, *n.DueDate
		}
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s from %s: %v, want %v", c.recurrence, c.due, got, c.want)
		}
	}
}

// The next occurrence takes a quota slot: over the quota the completion is
// 409 and changes nothing.
func TestCompleteOverQuota(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = 1 })
	user, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"x","due_date":"2030-01-01T09:00:00Z","recurrence":{"rule":"FREQ=DAILY"}}`)
	for _, opts := range [][]reqOption{nil, {header("Idempotency-Key", "over-quota")}} {
		res := a.do(t, "PATCH", taskURL(task.ID)+"/complete", nil, append(opts, bearer(tok))...)
		if p := mustStatus(t, res, http.StatusConflict).problem(t); p.Type != "/problems/quota-exceeded" {
			t.Fatalf("problem %+v", p)
		}
	}
	got := mustStatus(t, a.do(t, "GET", taskURL(task.ID), nil, bearer(tok)), http.StatusOK).task(t)
	if got.Completed || got.Version != 1 || len(seriesTasks(t, a, user, task.ID)) != 1 {
		t.Fatalf("the refused completion changed something: %+v", got)
	}
	// A stale If-Match and a missing task are told apart on this path too.
	mustStatus(t, a.do(t, "PATCH", taskURL(task.ID)+"/complete", nil, bearer(tok), header("If-Match", `"7"`)), http.StatusPreconditionFailed)
	mustStatus(t, a.do(t, "PATCH", taskURL(task.ID+1000000)+"/complete", nil, bearer(tok)), http.StatusNotFound)
}

// Completing a recurring task (lock, create the next occurrence, write)
// against a plain toggle (one statement), through the whole handler:
//
//	go test -run '^$' -bench 'Toggle|CompleteRecurring' -benchmem
func BenchmarkToggle(b *testing.B) {
	a := newBenchAPI(b)
	task, err := a.store.CreateTask(context.Background(), "bench-user", newTask{Title: "toggle", Priority: "none", Tags: []string{}})
	if err != nil {
		b.Fatal(err)
	}
	path := fmt.Sprintf("/api/me/tasks/%d/complete", task.ID)
	b.ReportAllocs()
	for b.Loop() {
		if rec := a.serve("PATCH", path, ""); rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

func BenchmarkCompleteRecurring(b *testing.B) {
	a := newBenchAPI(b)
	due := time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC)
	task, err := a.store.CreateTask(context.Background(), "bench-user", newTask{Title: "daily", Priority: "none", Tags: []string{},
		DueDate: &due, Recurrence: &Recurrence{Rule: "FREQ=DAILY", TimeZone: "Europe/Berlin", From: fromDue}})
	if err != nil {
		b.Fatal(err)
	}
	id := task.ID
	b.ReportAllocs()
	for b.Loop() {
		rec := a.serve("PATCH", fmt.Sprintf("/api/me/tasks/%d/complete", id), "")
		link := rec.Header().Get("Link")
		if rec.Code != http.StatusOK || link == "" {
			b.Fatalf("status %d, Link %q: %s", rec.Code, link, rec.Body)
		}
		next := link[strings.LastIndexByte(link, '/')+1 : strings.IndexByte(link, '>')]
		if id, err = strconv.ParseInt(next, 10, 64); err != nil {
			b.Fatal(err)
		}
	}
}
