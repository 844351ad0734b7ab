package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// slogLine is what slog's own handler writes for r.
func slogLine(t testing.TB, r slog.Record, json bool) string {
	t.Helper()
	var out bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&out, nil)
	if json {
		h = slog.NewJSONHandler(&out, nil)
	}
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatalf("slog's handler: %v", err)
	}
	return out.String()
}

// lineOf is what lineHandler writes for r, and whether it took the shortcut.
func lineOf(t testing.TB, r slog.Record, json bool) (string, bool) {
	t.Helper()
	var out bytes.Buffer
	if err := newLineHandler(&out, json, nil).Handle(context.Background(), r); err != nil {
		t.Fatalf("lineHandler: %v", err)
	}
	var attrs []slog.Attr
	r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
	_, short := appendLine(nil, r.Time, r.Level, r.Message, attrs, json)
	return out.String(), short
}

// The access line of a request takes the shortcut, and reads as slog writes it.
func TestAccessLineTakesTheShortcut(t *testing.T) {
	r := httptest.NewRequest("GET", "/api/me/tasks/42", nil)
	ri := requestInfo{id: newRequestID(), pattern: "GET /api/{user_id}/tasks/{id}", user: identity{Sub: "user-1"}}
	failed := ri
	failed.user, failed.err = identity{}, errDatabaseUnavailable(errors.New("connection refused"))
	failed.cause = errors.New("get task 42: dial tcp 127.0.0.1:5432: connect: connection refused")
	missing := ri
	missing.err = newError(CodeNotFound, "no")
	for _, c := range []struct {
		name string
		rec  statusRecorder
		ri   requestInfo
	}{
		{"200", statusRecorder{status: 200, bytes: 312}, ri},
		{"404 with its code", statusRecorder{status: 404, bytes: 120}, missing},
		{"503 with its cause", statusRecorder{status: 503, bytes: 90}, failed},
	} {
		for _, json := range []bool{false, true} {
			now := time.Now()
			attrs := accessAttrs(nil, r, &c.ri, &c.rec, 1500*time.Microsecond)
			var got bytes.Buffer
			if err := handleAttrs(context.Background(), newLineHandler(&got, json, nil), now, slog.LevelWarn, "request", attrs...); err != nil {
				t.Fatal(err)
			}
			if _, short := appendLine(nil, now, slog.LevelWarn, "request", attrs, json); !short {
				t.Errorf("%s (json %v): the access line went to slog's handler", c.name, json)
			}
			rec := slog.NewRecord(now, slog.LevelWarn, "request", 0)
			rec.AddAttrs(attrs...)
			if want := slogLine(t, rec, json); got.String() != want {
				t.Errorf("%s (json %v):\n got %q\nwant %q", c.name, json, got.String(), want)
			}
		}
	}
}

// A line the shortcut declines, given as attributes, is slog's.
func TestHandleAttrsFallsBackToSlog(t *testing.T) {
	now := time.Now()
	attrs := []slog.Attr{slog.String("path", "/api/me/t\u00e2ches"), slog.Int("a", 1), slog.Int("b", 2), slog.Int("c", 3), slog.Int("d", 4), slog.Int("e", 5), slog.Any("f", []int{6})}
	rec := slog.NewRecord(now, slog.LevelInfo, "request", 0)
	rec.AddAttrs(attrs...)
	for _, json := range []bool{false, true} {
		var got bytes.Buffer
		if err := handleAttrs(context.Background(), newLineHandler(&got, json, nil), now, slog.LevelInfo, "request", attrs...); err != nil {
			t.Fatal(err)
		}
		if want := slogLine(t, rec, json); got.String() != want {
			t.Errorf("json %v:\n got %q\nwant %q", json, got.String(), want)
		}
	}
	// And any other handler gets the record.
	var out bytes.Buffer
	if err := handleAttrs(context.Background(), slog.NewTextHandler(&out, nil), now, slog.LevelInfo, "request", attrs...); err != nil {
		t.Fatal(err)
	}
	if want := slogLine(t, rec, false); out.String() != want {
		t.Errorf("slog's handler:\n got %q\nwant %q", out.String(), want)
	}
}

// Whatever the record, lineHandler writes what slog's handler writes: the
// shortcut's own lines byte for byte, and every other record through slog.
func TestLineHandlerWritesWhatSlogWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	short := 0
	const n = 20000
	for i := range n {
		r := randomRecord(rng)
		json := i%2 == 1
		got, s := lineOf(t, r, json)
		if s {
			short++
		}
		if want := slogLine(t, r, json); got != want {
			t.Fatalf("record %d (json %v):\n got %q\nwant %q", i, json, got, want)
		}
	}
	// Both paths must have been exercised for the comparison to mean anything.
	if short < n/10 || short > n*9/10 {
		t.Fatalf("%d of %d records took the shortcut; the generator no longer covers both paths", short, n)
	}
}

// FuzzLineHandler: any strings in any record are written as slog writes them.
func FuzzLineHandler(f *testing.F) {
	for _, s := range []string{"", "plain", "a b", "a=b", `"q"`, `back\slash`, "tab\t", "é", "\u2028", "<&>", "\x7f", "\xff", "INFO+2"} {
		f.Add(s, s, int64(len(s)), false)
		f.Add("request", s, int64(-1), true)
	}
	f.Fuzz(func(t *testing.T, msg, val string, n int64, json bool) {
		r := slog.NewRecord(time.Unix(n, n*7919).UTC(), slog.Level(n%13), msg, 0)
		r.AddAttrs(slog.String("k", val), slog.String(val, "v"), slog.Int64("n", n), slog.Duration("d", time.Duration(n)))
		got, _ := lineOf(t, r, json)
		if want := slogLine(t, r, json); got != want {
			t.Fatalf("\n got %q\nwant %q", got, want)
		}
	})
}

// Lines written at once through the shortcut and through slog stay whole.
func TestLineHandlerKeepsConcurrentLinesWhole(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newLineHandler(&out, false, nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 200 {
				if g%2 == 0 {
					log.Info("request", "path", "/api/me/tasks") // the shortcut
				} else {
					log.Info("request", "path", "/api/me/t\u00e2ches") // slog's handler
				}
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") || !strings.HasSuffix(l, " path=/api/me/tasks") && !strings.HasSuffix(l, " path=/api/me/t\u00e2ches") {
			t.Fatalf("a broken line: %q", l)
		}
	}
}

// A handler derived with attributes writes them: it is slog's, without the shortcut.
func TestLineHandlerDerivedKeepsItsAttrs(t *testing.T) {
	var out bytes.Buffer
	slog.New(newLineHandler(&out, false, nil)).With("instance", "a").Info("started", "port", 8000)
	if got := out.String(); !strings.Contains(got, " instance=a port=8000\n") {
		t.Fatalf("line %q lacks the derived attribute", got)
	}
}

// randomRecord draws a record whose parts are often plain, sometimes not.
func randomRecord(rng *rand.Rand) slog.Record {
	times := []time.Time{
		time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 2, 8, 0, 0, 999_999_999, time.FixedZone("", 5*3600+1800)),
		time.Date(1999, 1, 1, 0, 0, 0, 1_000_000, time.FixedZone("X", -3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
		time.Now(),
	}
	tm := times[rng.IntN(len(times))]
	if rng.IntN(4) > 0 {
		tm = times[0].Add(time.Duration(rng.Int64N(int64(1000 * time.Hour))))
	}
	r := slog.NewRecord(tm, slog.Level(rng.IntN(20)-6), randomString(rng), 0)
	for range rng.IntN(9) {
		key := randomString(rng)
		if rng.IntN(3) > 0 {
			key = []string{"method", "route", "path", "status", "request_id"}[rng.IntN(5)]
		}
		switch rng.IntN(10) {
		case 0:
			r.AddAttrs(slog.Int64(key, rng.Int64()-rng.Int64()))
		case 1:
			r.AddAttrs(slog.Uint64(key, rng.Uint64()))
		case 2:
			r.AddAttrs(slog.Bool(key, rng.IntN(2) == 0))
		case 3:
			r.AddAttrs(slog.Duration(key, time.Duration(rng.Int64N(int64(time.Hour)))-time.Second))
		case 4:
			r.AddAttrs(slog.Float64(key, rng.Float64()))
		case 5:
			r.AddAttrs(slog.Time(key, tm))
		case 6:
			r.AddAttrs(slog.Group(key, slog.String("x", "y")))
		case 7:
			r.AddAttrs(slog.Any(key, []int{1, 2}))
		default:
			r.AddAttrs(slog.String(key, randomString(rng)))
		}
	}
	return r
}

func randomString(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return []string{"request", "GET", "GET /api/{user_id}/tasks/{id}", "/api/me/tasks/7", "k2v9x0", ""}[rng.IntN(6)]
	}
	pieces := []string{"a", "Z", "0", "-", "_", ".", "/", ":", "{", "}", "+", " ", "=", `"`, `\`, "\t", "\n", "\x00", "\x7f", "<", ">", "&", "é", "\u2028", "€", "\xff", "\U0001F600"}
	var b strings.Builder
	for range rng.IntN(12) {
		if rng.IntN(5) == 0 {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		} else {
			b.WriteString(pieces[rng.IntN(9)])
		}
	}
	return b.String()
}
