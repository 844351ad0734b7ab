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
func appendTime(b []byte, t time.Time) []byte { return appendUnixMicro(b, t.UnixMicro()) }

// appendUnixMicro appends the instant us (microseconds since 1970, UTC) as
// a JSON string in timeLayout. The date comes from the day number by
// Hinnant's days-to-civil arithmetic and the digits two at a time from a
// table, into one fixed array: 28 ns where time.Time's Date, Clock and a
// digit loop took 88 (a page has up to 400 timestamps). Instants outside
// years 0001..9999 (parseTimestamp's range; none is stored) take
// AppendFormat.
func appendUnixMicro(b []byte, us int64) []byte {
	if us < minTimestampMicros || us > maxTimestampMicros {
		b = append(b, '"')
		return append(time.UnixMicro(us).UTC().AppendFormat(b, timeLayout), '"')
	}
	// From 0001-01-01 on, every quotient below is of non-negative numbers.
	us -= minTimestampMicros
	secs, micro := us/1e6, int(us%1e6)
	days, sod := secs/86400, int(secs%86400)
	// Days since 0000-03-01, in 400-year eras of 146097 days.
	z := days + 306
	era, doe := z/146097, int(z%146097)
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day, month, year := doy-(153*mp+2)/5+1, mp+3, int(era)*400+yoe
	if month > 12 {
		month, year = month-12, year+1
	}
	var d [29]byte
	d[0], d[5], d[8], d[11], d[14], d[17], d[20], d[27], d[28] = '"', '-', '-', 'T', ':', ':', '.', 'Z', '"'
	putPair(d[1:], year/100)
	putPair(d[3:], year%100)
	putPair(d[6:], month)
	putPair(d[9:], day)
	putPair(d[12:], sod/3600)
	putPair(d[15:], sod/60%60)
	putPair(d[18:], sod%60)
	putPair(d[21:], micro/10000)
	putPair(d[23:], micro/100%100)
	putPair(d[25:], micro%100)
	return append(b, d[:]...)
}

var minTimestampMicros, maxTimestampMicros = minTimestamp.UnixMicro(), maxTimestamp.UnixMicro()

const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// putPair writes n (0..99) as two digits at d[0:2].
func putPair(d []byte, n int) {
	d[0], d[1] = digitPairs[2*n], digitPairs[2*n+1]
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
