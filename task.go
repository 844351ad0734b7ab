package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The task's home: its fields, their limits and allowed values, and the
// validation of what a client sends. Handlers, store, encoder, cursor and the
// OpenAPI tests take them from here; docs/architecture.md lists the other
// places a new field touches.

// Task is a task as stored and as sent to clients.
type Task struct {
	ID          int64
	UserID      string
	Title       string
	Description string
	Completed   bool
	CompletedAt *time.Time
	Priority    string
	Tags        []string
	DueDate     *time.Time
	Version     int32
	CreatedAt   time.Time
	UpdatedAt   time.Time
	DeletedAt   *time.Time  // in the trash since; nil for a live task
	Recurrence  *Recurrence // nil: does not recur
	Reminders   []string    // ISO 8601 durations before DueDate, canonical
	SeriesID    *int64      // the first task of its series; nil unless it recurs

	// Bookkeeping, not sent: the next occurrence, once completing the task
	// created it (at most once ever).
	NextOccurrenceID *int64
}

// Limits of a task's fields, in Unicode code points where they are texts.
const (
	maxTitleLen       = 200
	maxDescriptionLen = 1000
	maxTagLen         = 50
	maxTags           = 20
	maxSearchLen      = 200 // the q of a listing
)

// priorities are a task's priority values, lowest first; the first is the default.
var priorities = []string{"none", "low", "medium", "high"}

var priorityMessage = "must be one of " + strings.Join(priorities, ", ")

// priorityRank is p's place in priorities: how the priority sort orders it.
func priorityRank(p string) (int, bool) {
	i := slices.Index(priorities, p)
	return i, i >= 0
}

// taskSorts are the orders a listing can be sorted by; the first is the default.
var taskSorts = []string{"created_at", "updated_at", "due_date", "priority", "title"}

// Timestamps are years 0001..9999 (what four digits and PostgreSQL both hold).
var (
	minTimestamp = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTimestamp = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// newTask is a validated create request.
type newTask struct {
	Title       string
	Description string
	Completed   bool
	Priority    string
	Tags        []string
	DueDate     *time.Time
	Recurrence  *Recurrence
	Reminders   []string

	// Set only for the next occurrence of a series.
	SeriesID   *int64
	Occurrence *occurrence
}

// taskChanges are the fields an update gives; nil (and !DueSet,
// !RecurrenceSet) keep a value.
type taskChanges struct {
	Title         *string
	Description   *string
	Completed     *bool
	Priority      *string
	Tags          []string // nil: keep; empty: clear
	DueSet        bool
	DueDate       *time.Time
	RecurrenceSet bool
	Recurrence    *Recurrence // nil with RecurrenceSet: clear
	Reminders     []string    // nil: keep; empty: clear
}

// readOnlyFields are server-set: ignored in a body, so a client can send back
// a task it received.
var readOnlyFields = map[string]bool{
	"id": true, "user_id": true, "version": true, "created_at": true, "updated_at": true, "completed_at": true,
	"deleted_at": true, "series_id": true,
}

// errDueDateNeeded is a recurrence or reminders without a due date, found
// in a body or on the merged row of an update.
var errDueDateNeeded = invalid(FieldError{Field: "due_date", Message: "is required by a recurrence and by reminders"})

// applyTo is t with the changes made: the row an update writes.
func (c taskChanges) applyTo(t Task) Task {
	if c.Title != nil {
		t.Title = *c.Title
	}
	if c.Description != nil {
		t.Description = *c.Description
	}
	if c.Completed != nil {
		t.Completed = *c.Completed
	}
	if c.Priority != nil {
		t.Priority = *c.Priority
	}
	if c.Tags != nil {
		t.Tags = c.Tags
	}
	if c.DueSet {
		t.DueDate = c.DueDate
	}
	if c.RecurrenceSet {
		t.Recurrence = c.Recurrence
	}
	if c.Reminders != nil {
		t.Reminders = c.Reminders
	}
	return t
}

// scheduleValid reports whether a recurrence and reminders have the due date
// they are reckoned from (the tasks_due_date_needed constraint).
func (t *Task) scheduleValid() bool {
	return t.DueDate != nil || t.Recurrence == nil && len(t.Reminders) == 0
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
			if msg := checkText(s, 1, maxTitleLen); msg != "" {
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
			if msg := checkText(s, 0, maxDescriptionLen); msg != "" {
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
			if _, valid := priorityRank(s); !ok || !valid {
				errs.add("priority", priorityMessage)
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
		case "recurrence":
			c.RecurrenceSet = true
			c.Recurrence = parseRecurrence(m.Value, &errs)
		case "reminders":
			if isNull(m.Value) {
				c.Reminders = []string{}
				continue
			}
			c.Reminders = parseReminders(m.Value, &errs)
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
	var errs fieldErrors
	if e, ok := err.(*Error); ok {
		errs = e.Fields
	}
	if c.Title == nil && !slices.ContainsFunc(members, func(m jsonMember) bool { return m.Name == "title" }) {
		errs.add("title", "is required")
	}
	if err := errs.err(); err != nil {
		return newTask{}, err
	}
	if (c.Recurrence != nil || len(c.Reminders) > 0) && c.DueDate == nil {
		return newTask{}, errDueDateNeeded
	}
	in := newTask{Title: *c.Title, Priority: priorities[0], Tags: []string{}, DueDate: c.DueDate,
		Recurrence: c.Recurrence, Reminders: []string{}}
	if c.Reminders != nil {
		in.Reminders = c.Reminders
	}
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

// parseRecurrence reads {"rule", "time_zone", "from"} or null (nil); each bad
// member is reported as recurrence.<member>.
func parseRecurrence(raw json.RawMessage, errs *fieldErrors) *Recurrence {
	if isNull(raw) {
		return nil
	}
	members, err := decodeObject(raw)
	if err != nil {
		errs.add("recurrence", `must be an object {"rule", "time_zone", "from"} or null`)
		return nil
	}
	rec := Recurrence{TimeZone: "UTC", From: fromDue}
	before := len(*errs)
	var r rule
	hasRule := false
	for _, m := range members {
		field := "recurrence." + m.Name
		s, ok := jsonString(m.Value)
		switch m.Name {
		case "rule":
			if !ok {
				errs.add(field, "must be a string such as FREQ=WEEKLY;BYDAY=MO")
				continue
			}
			if len(s) >= 6 && strings.EqualFold(s[:6], "RRULE:") {
				s = s[6:]
			}
			parsed, err := parseRule(s)
			if err != nil {
				errs.add(field, err.Error())
				continue
			}
			rec.Rule, r, hasRule = s, parsed, true
		case "time_zone":
			if !ok {
				errs.add(field, "must be a string: an IANA time zone name such as Europe/Berlin")
				continue
			}
			if _, err := loadZone(s); err != nil {
				errs.add(field, err.Error())
				continue
			}
			rec.TimeZone = s
		case "from":
			if !ok || s != fromDue && s != fromCompletion {
				errs.add(field, `must be "due" or "completion"`)
				continue
			}
			rec.From = s
		default:
			errs.add(field, "is not a field of a recurrence")
		}
	}
	if !hasRule && !slices.ContainsFunc(members, func(m jsonMember) bool { return m.Name == "rule" }) {
		errs.add("recurrence.rule", "is required")
	}
	if hasRule && rec.From == fromCompletion && !r.onlyFreqAndInterval() {
		errs.add("recurrence.from", "completion needs a rule of FREQ and INTERVAL only (no BYDAY, BYMONTHDAY, BYMONTH, COUNT or UNTIL)")
	}
	if len(*errs) > before {
		return nil
	}
	return &rec
}

// parseReminders reads an array of up to maxReminders ISO 8601 durations,
// PT0S..P30D, in canonical form; exact duplicates are dropped, order kept.
func parseReminders(raw json.RawMessage, errs *fieldErrors) []string {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		errs.add("reminders", "must be an array of ISO 8601 durations such as PT15M, or null")
		return nil
	}
	if len(items) > maxReminders {
		errs.add("reminders", fmt.Sprintf("must have at most %d reminders", maxReminders))
		return nil
	}
	out := make([]string, 0, len(items))
	bad := false
	for i, item := range items {
		field := "reminders[" + strconv.Itoa(i) + "]"
		s, ok := jsonString(item)
		d, valid := parseDuration(s)
		if !ok || !valid {
			errs.add(field, "must be an ISO 8601 duration of days, hours, minutes and seconds, such as PT15M or P1D")
			bad = true
			continue
		}
		if d > maxReminder {
			errs.add(field, "must be at most P30D before the due date")
			bad = true
			continue
		}
		if c := formatDuration(d); !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	if bad {
		return nil
	}
	return out
}

// parseTags trims each tag, checks its length, drops exact duplicates (order
// kept) and allows at most maxTags.
func parseTags(raw json.RawMessage, errs *fieldErrors) []string {
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		errs.add("tags", "must be an array of strings, or null")
		return nil
	}
	tags := make([]string, 0, min(len(items), maxTags+1))
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
		if msg := checkText(s, 1, maxTagLen); msg != "" {
			errs.add(field, msg)
			bad = true
			continue
		}
		if len(tags) <= maxTags && !slices.Contains(tags, s) { // one over the limit already fails
			tags = append(tags, s)
		}
	}
	if len(tags) > maxTags {
		errs.add("tags", fmt.Sprintf("must have at most %d distinct tags", maxTags))
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
