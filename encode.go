package main

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The task encoder appends JSON by hand: a list of 100 tasks is the hottest
// response, and this is several times faster than reflection, with the exact
// timestamp format the contract wants. FuzzAppendJSONString checks it against
// encoding/json.

// timeLayout: UTC, always six fractional digits, as stored (microseconds).
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendTime appends t as a JSON string in timeLayout, by hand: it is on every
// task four times, and time.AppendFormat's generality showed in profiles.
// Years are 0001..9999 (parseTimestamp's range), so four digits always suffice.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, minute, second := t.Clock()
	b = append(b, '"')
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, second, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1000, 6)
	return append(b, 'Z', '"')
}

// appendDigits appends n (≥ 0) zero-padded to width digits.
func appendDigits(b []byte, n, width int) []byte {
	var d [8]byte
	for i := width - 1; i >= 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[:width]...)
}

// bufferPool recycles response buffers: a page of 100 tasks is ~40 KB.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuffer() *[]byte { return bufferPool.Get().(*[]byte) }

func putBuffer(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // an unusually large one: let it go
	}
	*b = (*b)[:0]
	bufferPool.Put(b)
}

func appendTimePtr(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendTime(b, *t)
}

func appendTask(b []byte, t *Task) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, t.ID, 10)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, t.UserID)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, t.Title)
	b = append(b, `,"description":`...)
	b = appendJSONString(b, t.Description)
	b = append(b, `,"completed":`...)
	b = strconv.AppendBool(b, t.Completed)
	b = append(b, `,"completed_at":`...)
	b = appendTimePtr(b, t.CompletedAt)
	b = append(b, `,"priority":`...)
	b = appendJSONString(b, t.Priority)
	b = append(b, `,"tags":[`...)
	for i, tag := range t.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, tag)
	}
	b = append(b, `],"due_date":`...)
	b = appendTimePtr(b, t.DueDate)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(t.Version), 10)
	b = append(b, `,"created_at":`...)
	b = appendTime(b, t.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = appendTime(b, t.UpdatedAt)
	b = append(b, `,"recurrence":`...)
	if r := t.Recurrence; r != nil {
		b = append(b, `{"rule":`...)
		b = appendJSONString(b, r.Rule)
		b = append(b, `,"time_zone":`...)
		b = appendJSONString(b, r.TimeZone)
		b = append(b, `,"from":`...)
		b = appendJSONString(b, r.From)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"reminders":[`...)
	for i, d := range t.Reminders {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, d)
	}
	b = append(b, `],"series_id":`...)
	if t.SeriesID != nil {
		b = strconv.AppendInt(b, *t.SeriesID, 10)
	} else {
		b = append(b, "null"...)
	}
	if t.DeletedAt != nil { // only trashed tasks carry it
		b = append(b, `,"deleted_at":`...)
		b = appendTime(b, *t.DeletedAt)
	}
	return append(b, '}')
}

func appendTasks(b []byte, tasks []Task) []byte {
	b = append(b, '[')
	for i := range tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTask(b, &tasks[i])
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// jsonEscapes marks the ASCII bytes a JSON string cannot hold as they are.
var jsonEscapes = func() (t [utf8.RuneSelf]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// appendJSONString appends s as a JSON string (RFC 8259): quotes, backslashes
// and control characters escaped, invalid UTF-8 replaced by U+FFFD, and
// U+2028/U+2029 escaped so the output is also valid JavaScript.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !jsonEscapes[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))])) // at most 4 bytes: no allocation
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
