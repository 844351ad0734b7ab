package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// lineHandler is slog's TextHandler or JSONHandler with a shortcut for the
// line the service writes most: the access log's, one per request. slog's
// handlers format any record (groups, LogValuers, ReplaceAttr) through
// per-attribute machinery that was two thirds of the access log's CPU, and
// 6 % of the service's on a get (docs/performance.md, seventh pass). A record
// of only strings, integers, booleans and durations whose strings are plain
// ASCII is written here, byte for byte as slog's handler writes it
// (loghandler_test.go compares the two on random records); any other record
// goes to slog's handler. Both write under one lock, a line per Write.
type lineHandler struct {
	slog.Handler // slog's own: Enabled, WithAttrs, WithGroup and what the shortcut declines
	json         bool
	out          *lockedWriter
}

// newLineHandler is slog's handler for format ("text" or "json") on w, with
// the shortcut. Derived handlers (WithAttrs, WithGroup) are slog's alone.
func newLineHandler(w io.Writer, json bool, opts *slog.HandlerOptions) *lineHandler {
	out := &lockedWriter{w: w}
	h := &lineHandler{json: json, out: out}
	if json {
		h.Handler = slog.NewJSONHandler(out, opts)
	} else {
		h.Handler = slog.NewTextHandler(out, opts)
	}
	return h
}

func (h *lineHandler) Handle(ctx context.Context, r slog.Record) error {
	var buf [16]slog.Attr
	attrs := buf[:0]
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	return h.write(r.Time, r.Level, r.Message, attrs, func() error { return h.Handler.Handle(ctx, r) })
}

// handleAttrs is Handle of the record (t, level, msg, attrs), without making
// the record unless slog's handler is to write it: a record of more than five
// attributes allocates.
func (h *lineHandler) handleAttrs(ctx context.Context, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) error {
	return h.write(t, level, msg, attrs, func() error { return h.Handler.Handle(ctx, newRecord(t, level, msg, attrs)) })
}

// newRecord is the record (t, level, msg, attrs), with no program counter:
// the service's handlers never add the source.
func newRecord(t time.Time, level slog.Level, msg string, attrs []slog.Attr) slog.Record {
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	return r
}

// write writes the line through the shortcut, or calls bySlog.
func (h *lineHandler) write(t time.Time, level slog.Level, msg string, attrs []slog.Attr, bySlog func() error) error {
	buf := lineBuffers.Get().(*[]byte)
	defer lineBuffers.Put(buf)
	line, ok := appendLine((*buf)[:0], t, level, msg, attrs, h.json)
	*buf = line
	if !ok {
		return bySlog()
	}
	_, err := h.out.Write(line)
	return err
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// lockedWriter serialises the writes of slog's handler and the shortcut.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// appendLine appends the record (t, level, msg, attrs) as slog's text (or
// JSON) handler without options writes it; ok is false, and b is to be
// dropped, for a record it leaves to slog.
func appendLine(b []byte, t time.Time, level slog.Level, msg string, attrs []slog.Attr, json bool) (_ []byte, ok bool) {
	if t.IsZero() {
		return b, false
	}
	t = t.Round(0)
	if json {
		if y := t.Year(); y < 0 || y >= 10000 {
			return b, false // slog writes an error in the line
		}
		b = append(b, `{"time":"`...)
		b = t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	} else {
		b = appendRFC3339Millis(append(b, "time="...), t)
	}
	if b, ok = appendPair(b, "level", slog.StringValue(level.String()), json); !ok {
		return b, false
	}
	if b, ok = appendPair(b, "msg", slog.StringValue(msg), json); !ok {
		return b, false
	}
	for _, a := range attrs {
		if b, ok = appendPair(b, a.Key, a.Value, json); !ok {
			return b, false
		}
	}
	if json {
		b = append(b, '}')
	}
	return append(b, '\n'), true
}

// appendPair appends a separator and key=value (or "key":value); false for
// what only slog's handler writes right.
func appendPair(b []byte, key string, v slog.Value, json bool) ([]byte, bool) {
	if key == "" || !plainASCII(key) {
		return b, false
	}
	if json {
		b = append(append(append(b, `,"`...), key...), `":`...)
	} else {
		b = append(appendTextString(append(b, ' '), key), '=')
	}
	switch v.Kind() {
	case slog.KindString:
		s := v.String()
		if !plainASCII(s) {
			return b, false
		}
		if json {
			return append(append(append(b, '"'), s...), '"'), true
		}
		return appendTextString(b, s), true
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		if json {
			return strconv.AppendInt(b, int64(v.Duration()), 10), true
		}
		return append(b, v.Duration().String()...), true
	}
	return b, false
}

// appendTextString is a plain string as the text handler writes it: quoted
// when empty or holding a space or '=' (strconv.Quote of printable ASCII
// without '"' or '\' only adds the quotes).
func appendTextString(b []byte, s string) []byte {
	if s == "" || asciiClasses(s)&needsQuotes != 0 {
		return append(append(append(b, '"'), s...), '"')
	}
	return append(b, s...)
}

// plainASCII: printable ASCII other than '"' and '\', the strings that both
// of slog's handlers write as they are, quoted or not.
func plainASCII(s string) bool { return asciiClasses(s)&notPlain == 0 }

const (
	notPlain    = 1 << iota // not printable ASCII, or '"' or '\'
	needsQuotes             // ' ' or '=': quoted by the text handler
)

// asciiClasses is the union of the classes of s's bytes.
func asciiClasses(s string) uint8 {
	var c uint8
	for i := 0; i < len(s); i++ {
		c |= byteClass[s[i]]
	}
	return c
}

var byteClass = func() (t [256]uint8) {
	for c := range t {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			t[c] = notPlain
		}
	}
	t[' '], t['='] = needsQuotes, needsQuotes
	return t
}()

// appendRFC3339Millis is the text handler's time: RFC 3339 with exactly three
// digits of the second's fraction (slog's own trick: RFC3339Nano trims
// trailing zeros, so add a tenth of a millisecond and drop the fourth digit).
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
