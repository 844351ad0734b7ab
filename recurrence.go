package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/teambition/rrule-go"
)

// Recurring tasks (API.md "Recurring tasks and reminders"): the rule, the
// zone and the reminders a client sends, and the next occurrence's due date.
//
// The rule's text is parsed here, restricted to the supported subset; the
// occurrences themselves come from rrule-go, which implements RFC 5545's
// expansion (BYDAY ordinals, BYMONTHDAY=-1, months without a 31st, leap
// years). rrule-go is never asked to compute in the task's zone: Go's
// time.Date moves a wall time inside a spring-forward gap backward (02:30
// becomes 01:30 EST), where RFC 5545 moves it forward by the gap. So the
// rule runs in "floating" wall-clock time (wall clock fields in UTC, where
// no day has a gap or an overlap), and wallToInstant turns each wall time
// into an instant of the zone by RFC 5545's rules.

// Recurrence is a task's recurrence as stored and sent.
type Recurrence struct {
	Rule     string `json:"rule"`      // the RRULE text as given (without an "RRULE:" prefix)
	TimeZone string `json:"time_zone"` // IANA name
	From     string `json:"from"`      // "due" or "completion"
}

const (
	fromDue        = "due"
	fromCompletion = "completion"
)

// rule is a parsed RRULE of the supported subset.
type rule struct {
	freq       rrule.Frequency
	interval   int
	byDay      []rrule.Weekday
	byMonthDay []int
	byMonth    []int
	count      int        // 0: none
	until      *time.Time // wall-clock (floating) time, or an instant when untilUTC
	untilUTC   bool
}

var frequencies = map[string]rrule.Frequency{
	"DAILY": rrule.DAILY, "WEEKLY": rrule.WEEKLY, "MONTHLY": rrule.MONTHLY, "YEARLY": rrule.YEARLY,
}

var weekdays = map[string]rrule.Weekday{
	"MO": rrule.MO, "TU": rrule.TU, "WE": rrule.WE, "TH": rrule.TH, "FR": rrule.FR, "SA": rrule.SA, "SU": rrule.SU,
}

const maxRuleLen = 500

// parseRule reads an RRULE of the supported subset; the error says which part
// is wrong, for the field recurrence.rule.
func parseRule(text string) (rule, error) {
	r := rule{interval: 1}
	if text == "" {
		return r, fmt.Errorf("must not be empty")
	}
	if len(text) > maxRuleLen {
		return r, fmt.Errorf("must be at most %d characters", maxRuleLen)
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(text, ";") {
		name, value, ok := strings.Cut(part, "=")
		name = strings.ToUpper(name)
		if !ok || name == "" || value == "" {
			return r, fmt.Errorf("part %q is not NAME=VALUE", part)
		}
		if seen[name] {
			return r, fmt.Errorf("%s is given more than once", name)
		}
		seen[name] = true
		value = strings.ToUpper(value)
		var err error
		switch name {
		case "FREQ":
			f, ok := frequencies[value]
			if !ok {
				return r, fmt.Errorf("FREQ=%s is not supported: use DAILY, WEEKLY, MONTHLY or YEARLY", value)
			}
			r.freq = f
		case "INTERVAL":
			r.interval, err = ruleInt(name, value, 1, 1000)
		case "COUNT":
			r.count, err = ruleInt(name, value, 1, 100000)
		case "UNTIL":
			err = r.parseUntil(value)
		case "BYMONTH":
			r.byMonth, err = ruleInts(name, value, 1, 12, false)
		case "BYMONTHDAY":
			r.byMonthDay, err = ruleInts(name, value, 1, 31, true)
		case "BYDAY":
			err = r.parseByDay(value)
		default:
			return r, fmt.Errorf("%s is not supported: only FREQ, INTERVAL, BYDAY, BYMONTHDAY, BYMONTH, COUNT and UNTIL are", name)
		}
		if err != nil {
			return r, err
		}
	}
	switch {
	case !seen["FREQ"]:
		return r, fmt.Errorf("FREQ is required")
	case seen["COUNT"] && seen["UNTIL"]:
		return r, fmt.Errorf("COUNT and UNTIL cannot both be given")
	}
	if r.freq != rrule.MONTHLY && r.freq != rrule.YEARLY {
		for _, d := range r.byDay {
			if d.N() != 0 {
				return r, fmt.Errorf("BYDAY ordinals (such as -1FR) are allowed only with FREQ=MONTHLY or YEARLY")
			}
		}
	}
	if len(r.byMonthDay) > 0 && !r.someMonthHasADay() {
		return r, fmt.Errorf("no month of BYMONTH has a day of BYMONTHDAY: the rule never occurs")
	}
	if r.freq == rrule.WEEKLY && len(r.byMonthDay) > 0 {
		return r, fmt.Errorf("BYMONTHDAY cannot be used with FREQ=WEEKLY") // RFC 5545
	}
	return r, nil
}

func ruleInt(name, value string, min, max int) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < min || n > max || strings.HasPrefix(value, "+") {
		return 0, fmt.Errorf("%s must be a whole number from %d to %d", name, min, max)
	}
	return n, nil
}

// ruleInts reads a comma-separated list of min..max, or -max..-min too when
// negative is allowed.
func ruleInts(name, value string, min, max int, negative bool) ([]int, error) {
	var out []int
	for _, s := range strings.Split(value, ",") {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "+"))
		if err != nil || !(n >= min && n <= max || negative && n >= -max && n <= -min) {
			if negative {
				return nil, fmt.Errorf("%s values must be %d..%d or -%d..-%d", name, min, max, max, min)
			}
			return nil, fmt.Errorf("%s values must be %d..%d", name, min, max)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%s lists %d twice", name, n)
		}
		out = append(out, n)
	}
	return out, nil
}

func (r *rule) parseByDay(value string) error {
	for _, s := range strings.Split(value, ",") {
		if len(s) < 2 {
			return fmt.Errorf("BYDAY value %q is not a weekday (MO..SU, optionally with an ordinal such as -1FR)", s)
		}
		day, ok := weekdays[s[len(s)-2:]]
		if !ok {
			return fmt.Errorf("BYDAY value %q is not a weekday (MO..SU, optionally with an ordinal such as -1FR)", s)
		}
		if ord := s[:len(s)-2]; ord != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(ord, "+"))
			if err != nil || n == 0 || n < -53 || n > 53 {
				return fmt.Errorf("BYDAY value %q has a bad ordinal (1..53 or -53..-1)", s)
			}
			day = day.Nth(n)
		}
		if slices.Contains(r.byDay, day) {
			return fmt.Errorf("BYDAY lists %s twice", s)
		}
		r.byDay = append(r.byDay, day)
	}
	return nil
}

// parseUntil reads UNTIL as a date (the whole day counts), a UTC date-time
// (…Z, what RFC 5545 asks for with a zoned start) or a local date-time in the
// task's zone.
func (r *rule) parseUntil(value string) error {
	for _, f := range []struct {
		layout string
		utc    bool
		add    time.Duration
	}{
		{"20060102T150405Z", true, 0},
		{"20060102T150405", false, 0},
		{"20060102", false, 24*time.Hour - time.Second},
	} {
		if t, err := time.Parse(f.layout, value); err == nil && len(value) == len(f.layout) {
			t = t.Add(f.add)
			r.until, r.untilUTC = &t, f.utc
			return nil
		}
	}
	return fmt.Errorf("UNTIL must be a date (20271231) or a UTC date-time (20271231T235959Z)")
}

// loadZone reads an IANA time zone name; "Local" (the server's own zone) and
// "" are not zones a client can mean.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || len(name) > 100 {
		return nil, fmt.Errorf("must be an IANA time zone name such as Europe/Berlin")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("must be an IANA time zone name such as Europe/Berlin")
	}
	return loc, nil
}

// Reminders: ISO 8601 durations before the due date, PT0S..P30D. A day is
// 24 hours (a reminder is a fixed time before the due instant).
const (
	maxReminders   = 5
	maxReminderLen = 64
	maxReminder    = 30 * 24 * time.Hour
)

// parseDuration reads an ISO 8601 duration of weeks, or of days, hours,
// minutes and seconds, in whole numbers.
func parseDuration(s string) (time.Duration, bool) {
	rest, ok := strings.CutPrefix(strings.ToUpper(s), "P")
	if !ok || rest == "" || len(s) > maxReminderLen {
		return 0, false
	}
	var total time.Duration
	inTime, any := false, false
	units := "WDTHMS"
	for rest != "" {
		if rest[0] == 'T' {
			if inTime || len(rest) == 1 {
				return 0, false
			}
			inTime, rest = true, rest[1:]
			continue
		}
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i > 9 || i == len(rest) {
			return 0, false
		}
		n, _ := strconv.Atoi(rest[:i])
		unit := rest[i]
		pos := strings.IndexByte(units, unit)
		if pos < 0 {
			return 0, false
		}
		var d time.Duration
		switch {
		case unit == 'W' && !inTime:
			d = 7 * 24 * time.Hour
		case unit == 'D' && !inTime:
			d = 24 * time.Hour
		case unit == 'H' && inTime:
			d = time.Hour
		case unit == 'M' && inTime:
			d = time.Minute
		case unit == 'S' && inTime:
			d = time.Second
		default:
			return 0, false
		}
		units = units[pos+1:] // each unit at most once, in order
		total += time.Duration(n) * d
		any, rest = true, rest[i+1:]
	}
	return total, any
}

// formatDuration is d's canonical ISO 8601 form: days, hours, minutes and
// seconds, the zero parts left out (PT0S for zero).
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "PT0S"
	}
	s := int64(d / time.Second)
	days, s := s/86400, s%86400
	h, s := s/3600, s%3600
	m, s := s/60, s%60
	b := []byte{'P'}
	if days > 0 {
		b = append(strconv.AppendInt(b, days, 10), 'D')
	}
	if h > 0 || m > 0 || s > 0 {
		b = append(b, 'T')
	}
	for _, p := range []struct {
		n    int64
		unit byte
	}{{h, 'H'}, {m, 'M'}, {s, 'S'}} {
		if p.n > 0 {
			b = append(strconv.AppendInt(b, p.n, 10), p.unit)
		}
	}
	return string(b)
}

// recurrenceRule is a validated recurrence, ready to compute occurrences.
type recurrenceRule struct {
	rule
	loc  *time.Location
	from string
}

func compileRecurrence(rec Recurrence) (recurrenceRule, error) {
	r, err := parseRule(strings.TrimPrefix(rec.Rule, "RRULE:"))
	if err != nil {
		return recurrenceRule{}, err
	}
	loc, err := loadZone(rec.TimeZone)
	if err != nil {
		return recurrenceRule{}, err
	}
	return recurrenceRule{rule: r, loc: loc, from: rec.From}, nil
}

// searchYears bounds the search for the next occurrence: a rule that matches
// nothing (BYMONTH=2;BYMONTHDAY=30) ends its series instead of searching to
// the year 9999. Leap days recur within 8 years.
const searchYears = 30

// occurrence is one occurrence of a series: its due date, the wall-clock
// time the rule gave it (which differs when it fell in a spring-forward gap),
// and its index in the series (the first is 1).
type occurrence struct {
	Due   time.Time
	Wall  time.Time // floating
	Index int
}

// start is the wall-clock time the rule runs from: the one the occurrence
// was given, while its due date is still the one that time gave (a client
// may have moved it since), else the due date's wall clock in the zone.
func (rr recurrenceRule) start(o occurrence) time.Time {
	due := o.Due.Truncate(time.Second)
	if !o.Wall.IsZero() && wallToInstant(o.Wall, rr.loc).Equal(due) {
		return o.Wall
	}
	return floating(due.In(rr.loc))
}

// next returns the occurrence after o; ok is false when the series has ended
// (COUNT or UNTIL used up, or no occurrence within searchYears). now is the
// completion time.
//
// from "due": the first occurrence of the rule strictly after both o's due
// date and now, the ones skipped counting toward COUNT. from "completion":
// the completion's date in the zone plus one interval, at o's time of day.
func (rr recurrenceRule) next(o occurrence, now time.Time) (next occurrence, ok bool) {
	due, index := o.Due, o.Index
	frac := time.Duration(due.Nanosecond() / 1000 * 1000)
	start := rr.start(o)
	if rr.from == fromCompletion {
		day := floating(now.In(rr.loc))
		wall := time.Date(day.Year(), day.Month(), day.Day(), start.Hour(), start.Minute(), start.Second(), 0, time.UTC)
		switch rr.freq {
		case rrule.DAILY:
			wall = wall.AddDate(0, 0, rr.interval)
		case rrule.WEEKLY:
			wall = wall.AddDate(0, 0, 7*rr.interval)
		case rrule.MONTHLY:
			wall = addMonthsClamped(wall, rr.interval)
		case rrule.YEARLY:
			wall = addMonthsClamped(wall, 12*rr.interval)
		}
		next = occurrence{Due: wallToInstant(wall, rr.loc).Add(frac), Wall: wall, Index: index + 1}
		return next, rr.within(next)
	}
	after := due
	if now.After(after) {
		after = now
	}
	iter, err := rr.iterate(start, floating(after.In(rr.loc)).AddDate(searchYears, 0, 0))
	if err != nil {
		return next, false
	}
	for {
		wall, more := iter()
		if !more {
			return occurrence{}, false
		}
		if !wall.After(start) {
			continue // the start itself is o
		}
		index++
		next = occurrence{Due: wallToInstant(wall, rr.loc).Add(frac), Wall: wall, Index: index}
		if !rr.within(next) {
			return occurrence{}, false
		}
		if next.Due.After(after) {
			return next, true
		}
	}
}

// iterate yields the rule's wall-clock times from start until until, in
// order. rrule-go (like python-dateutil, which it ports) keeps a day only if
// it matches both its BYDAY values without an ordinal and those with one,
// where RFC 5545 keeps a day that matches either (BYDAY=FR,-1SU is every
// Friday and the last Sunday): a rule that mixes the two runs as two rules,
// one for each kind, whose times are merged.
func (rr recurrenceRule) iterate(start, until time.Time) (rrule.Next, error) {
	opt := rrule.ROption{
		Freq: rr.freq, Interval: rr.interval, Dtstart: start, Wkst: rrule.MO,
		Byweekday: rr.byDay, Bymonthday: rr.byMonthDay, Bymonth: rr.byMonth, Until: until,
	}
	var plain, ordinal []rrule.Weekday
	for _, d := range rr.byDay {
		if d.N() == 0 {
			plain = append(plain, d)
		} else {
			ordinal = append(ordinal, d)
		}
	}
	if len(plain) == 0 || len(ordinal) == 0 {
		r, err := rrule.NewRRule(opt)
		if err != nil {
			return nil, err
		}
		return r.Iterator(), nil
	}
	opt.Byweekday = plain
	a, err := rrule.NewRRule(opt)
	if err != nil {
		return nil, err
	}
	opt.Byweekday = ordinal
	b, err := rrule.NewRRule(opt)
	if err != nil {
		return nil, err
	}
	nextA, nextB := a.Iterator(), b.Iterator()
	ta, okA := nextA()
	tb, okB := nextB()
	return func() (time.Time, bool) {
		switch {
		case !okA && !okB:
			return time.Time{}, false
		case okA && (!okB || ta.Before(tb)):
			t := ta
			ta, okA = nextA()
			return t, true
		case okB && (!okA || tb.Before(ta)):
			t := tb
			tb, okB = nextB()
			return t, true
		}
		t := ta // the same time from both
		ta, okA = nextA()
		tb, okB = nextB()
		return t, true
	}, nil
}

// within reports whether o is still part of the series (COUNT, UNTIL).
func (rr recurrenceRule) within(o occurrence) bool {
	if rr.count > 0 && o.Index > rr.count {
		return false
	}
	if rr.until != nil {
		if rr.untilUTC {
			return !o.Due.Truncate(time.Second).After(*rr.until)
		}
		return !o.Wall.After(*rr.until)
	}
	return true
}

// floating is t's wall clock read as UTC.
func floating(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
}

// addMonthsClamped adds n months, keeping the day unless the month is
// shorter (January 31 plus a month is February 28 or 29).
func addMonthsClamped(t time.Time, n int) time.Time {
	first := time.Date(t.Year(), t.Month()+time.Month(n), 1, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	last := first.AddDate(0, 1, -1).Day()
	return first.AddDate(0, 0, min(t.Day(), last)-1)
}

// wallToInstant is the instant at which loc's clocks show wall (a floating
// time). A time that occurs twice (fall-back) is the first of the two; a time
// that does not exist (a spring-forward gap) is read with the offset in
// effect before the gap, which moves it forward by the gap (RFC 5545 3.3.5).
func wallToInstant(wall time.Time, loc *time.Location) time.Time {
	// Every offset that could apply: those in effect a day and a half around
	// (the wall time, read as UTC, is within 14 hours of the instant).
	var offsets []int
	for _, d := range []time.Duration{-36 * time.Hour, 0, 36 * time.Hour} {
		_, off := wall.Add(d).In(loc).Zone()
		if !slices.Contains(offsets, off) {
			offsets = append(offsets, off)
		}
	}
	var best, earliest time.Time
	found := false
	for _, off := range offsets {
		c := wall.Add(-time.Duration(off) * time.Second)
		if earliest.IsZero() || c.Before(earliest) {
			earliest = c
		}
		if floating(c.In(loc)).Equal(wall) && (!found || c.Before(best)) {
			best, found = c, true
		}
	}
	if found {
		return best
	}
	// In a gap: the earliest candidate lies before the transition, so its
	// offset is the one before the gap.
	_, before := earliest.In(loc).Zone()
	return wall.Add(-time.Duration(before) * time.Second)
}

// someMonthHasADay reports whether some month the rule allows has some day
// of its BYMONTHDAY (February counted with 29). A rule that never matches
// would have rrule-go search day by day to the year 9999.
func (r rule) someMonthHasADay() bool {
	months := r.byMonth
	if len(months) == 0 {
		months = []int{1}
	}
	for _, m := range months {
		days := []int{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[m-1]
		for _, d := range r.byMonthDay {
			if d <= days && -d <= days {
				return true
			}
		}
	}
	return false
}

// onlyFreqAndInterval reports whether the rule has no part but FREQ and
// INTERVAL: what a recurrence from completion takes.
func (r rule) onlyFreqAndInterval() bool {
	return len(r.byDay) == 0 && len(r.byMonthDay) == 0 && len(r.byMonth) == 0 && r.count == 0 && r.until == nil
}
