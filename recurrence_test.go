package main

import (
	"strings"
	"testing"
	"time"
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
		{"a rule that never matches ends", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "UTC", "",
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
		"FREQ=DAILY;", "FREQ", "FREQ=WEEKLY;BYMONTHDAY=1", "FREQ=WEEKLY;BYDAY=MO,MO",
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
