package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostileRequest is one request as it goes on the wire. Requests are written
// by hand on a raw connection, so that the test can send what net/http's
// client refuses to (control characters in the request-target, a malformed
// Content-Length) and a body larger than the server reads.
type hostileRequest struct {
	name    string
	method  string
	target  string      // the request-target, sent as is
	header  [][2]string // in order, duplicates kept
	body    []byte      // nil: no body
	chunked bool        // send the body with Transfer-Encoding: chunked, no Content-Length
	badSize bool        // send a chunked body whose chunk size is not hexadecimal
	wire    string      // when set, the whole request, sent instead of the fields above

	status int
	// plain: net/http answers before any handler runs, in text/plain. It
	// does so for what is not HTTP at all (a control character in the
	// request-target, a malformed Content-Length, an invalid header byte)
	// and for headers over its own 1 MiB limit; the service's own limits
	// (32 KiB headers, 8 KiB request-target, 64 KiB body) are below those
	// and answer in problem+json.
	plain bool
}

func (h hostileRequest) bytes(host string) []byte {
	if h.wire != "" {
		return []byte(h.wire)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", h.method, h.target, host)
	for _, kv := range h.header {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	switch {
	case h.badSize:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
	case h.chunked:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := h.body; len(rest) > 0; {
			n := min(len(rest), 32<<10)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
	case h.body != nil:
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(h.body))
		b.Write(h.body)
	default:
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// send writes the request on a new connection while reading the answer: the
// server may answer (413, 431) and close long before the request is written.
func send(addr string, wire []byte) (testResponse, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return testResponse{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = conn.Write(wire) }() // fails once the server has answered and closed
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return testResponse{}, fmt.Errorf("no response: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return testResponse{}, fmt.Errorf("reading the response: %w", err)
	}
	return testResponse{Status: res.StatusCode, Header: res.Header, Body: body}, nil
}

// check says what is wrong with r as the clear refusal h expects, if anything.
func (h hostileRequest) check(r testResponse) error {
	if r.Status != h.status {
		return fmt.Errorf("status %d, want %d: %.300s", r.Status, h.status, r.Body)
	}
	ct := r.Header.Get("Content-Type")
	if h.plain {
		if !strings.HasPrefix(ct, "text/plain") {
			return fmt.Errorf("Content-Type %q from net/http, want text/plain", ct)
		}
		return nil
	}
	var p problem
	if ct != "application/problem+json" || json.Unmarshal(r.Body, &p) != nil {
		return fmt.Errorf("not problem+json: %s %.300s", ct, r.Body)
	}
	switch {
	case p.Status != r.Status || p.Type == "" || p.Title == "" || p.Detail == "":
		return fmt.Errorf("incomplete problem %s", r.Body)
	case r.Status == http.StatusUnprocessableEntity && (len(p.Errors) == 0 || len(p.Errors) > maxFieldErrors):
		return fmt.Errorf("%d field errors, want 1..%d", len(p.Errors), maxFieldErrors)
	case len(r.Body) > 16<<10:
		return fmt.Errorf("a %d-byte problem: the answer to a hostile request must stay small", len(r.Body))
	}
	return nil
}

// TestHostileInput sends what a broken or malicious client might, over real
// HTTP: each is refused with a clear 4xx, nothing is stored or changed, and
// sending each 200 times (20 with -short or -race) leaves the heap (the
// server runs in this process) where it was.
func TestHostileInput(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": "the target"})
	addr := strings.TrimPrefix(a.URL, "http://")
	unchanged := func() {
		t.Helper()
		if n := a.countTasks(t, user); n != 1 {
			t.Fatalf("the user has %d tasks, want only the target", n)
		}
		var keys int
		if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE user_id = $1`, user).Scan(&keys); err != nil || keys != 0 {
			t.Fatalf("%d idempotency keys stored (%v)", keys, err)
		}
		got := mustStatus(t, a.do(t, "GET", fmt.Sprintf("/api/me/tasks/%d", task.ID), nil, bearer(tok)), http.StatusOK).task(t)
		if got.Version != 1 || got.Title != "the target" || got.Completed {
			t.Fatalf("the target changed: %+v", got)
		}
	}

	cases := hostileRequests(tok, fmt.Sprintf("/api/me/tasks/%d", task.ID))
	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			r, err := send(addr, h.bytes(addr))
			if err == nil {
				err = h.check(r)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	unchanged()
	if t.Failed() {
		return
	}

	// Memory, measured once the first round has brought pools, caches and
	// the connection machinery to their steady size. The test's log buffer
	// keeps every line the server writes (in production they go to stdout):
	// its growth is not the server's.
	rounds := 200 // half a minute; with the race detector, several minutes
	if testing.Short() || raceDetector() {
		rounds = 20
	}
	before, logsBefore := settledHeap(), logBytes(a)
	start := time.Now()
	jobs := make(chan hostileRequest)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range jobs {
				wire := h.bytes(addr)
				for range rounds {
					r, err := send(addr, wire)
					if err == nil {
						err = h.check(r)
					}
					if err != nil {
						t.Errorf("%s, sent again: %v", h.name, err)
						break
					}
				}
			}
		}()
	}
	for _, h := range cases {
		jobs <- h
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	after, logsAfter := settledHeap(), logBytes(a)
	runtime.KeepAlive(cases) // their bodies (12 MiB) are in both measurements
	growth := int64(after) - int64(before) - int64(logsAfter-logsBefore)
	t.Logf("%d hostile requests in %v; heap %.1f MiB before, %.1f MiB after, of which %.1f MiB more of logs",
		rounds*len(cases), elapsed.Round(time.Millisecond), mib(before), mib(after), mib(logsAfter-logsBefore))
	if growth > 4<<20 {
		t.Errorf("the heap grew by %.1f MiB over %d hostile requests", float64(growth)/(1<<20), rounds*len(cases))
	}
	unchanged()
}

// settledHeap is the live heap once the connections of earlier requests are
// gone: one that the server closed with unread input lingers for net/http's
// RST-avoidance delay (500ms) first.
func settledHeap() uint64 {
	time.Sleep(time.Second)
	return heapAfterGC()
}

// logBytes is the memory the test's log buffer holds.
func logBytes(a *testAPI) uint64 {
	a.logs.mu.Lock()
	defer a.logs.mu.Unlock()
	return uint64(a.logs.buf.Cap())
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// raceDetector reports whether the test binary was built with -race.
func raceDetector() bool {
	bi, ok := debug.ReadBuildInfo()
	return ok && slices.Contains(bi.Settings, debug.BuildSetting{Key: "-race", Value: "true"})
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC() // the second cycle frees what the first one's finalizers released
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// hostileRequests are the requests of TestHostileInput, for the user of
// token; taskPath is one of that user's tasks, which none may change.
func hostileRequests(token, taskPath string) []hostileRequest {
	auth := [2]string{"Authorization", "Bearer " + token}
	jsonCT := [2]string{"Content-Type", "application/json"}
	post := func(name string, status int, body string) hostileRequest {
		return hostileRequest{name: "POST " + name, method: "POST", target: "/api/me/tasks",
			header: [][2]string{auth, jsonCT}, body: []byte(body), status: status}
	}
	put := func(name string, status int, body string) hostileRequest {
		return hostileRequest{name: "PUT " + name, method: "PUT", target: taskPath,
			header: [][2]string{auth, jsonCT}, body: []byte(body), status: status}
	}
	complete := func(name string, status int, body string) hostileRequest {
		return hostileRequest{name: "PATCH complete " + name, method: "PATCH", target: taskPath + "/complete",
			header: [][2]string{auth, jsonCT}, body: []byte(body), status: status}
	}
	get := func(name string, status int, target string, header ...[2]string) hostileRequest {
		return hostileRequest{name: "GET " + name, method: "GET", target: target,
			header: append([][2]string{auth}, header...), status: status}
	}
	nested := func(depth int) string { return strings.Repeat("[", depth) + strings.Repeat("]", depth) }

	cases := []hostileRequest{
		// Nesting. encoding/json refuses more than 10 000 levels (400); within
		// that, a nested value where a string belongs is a field error (422).
		post("100k levels of nesting (200 KB: over the body limit)", 413, nested(100_000)),
		post("30k levels of nesting (60 KB)", 400, nested(30_000)),
		post("20k levels of nesting inside a valid object", 400, `{"title":"x","tags":`+nested(20_000)+`}`),
		post("5k levels of nesting as tags", 422, `{"title":"x","tags":`+nested(5_000)+`}`),
		post("3k levels of objects in an unknown field", 422,
			`{"title":"x","extra":`+strings.Repeat(`{"a":`, 3000)+"1"+strings.Repeat("}", 3000)+`}`),
		put("20k levels of nesting inside a valid object", 400, `{"title":"x","tags":`+nested(20_000)+`}`),

		// Sizes.
		post("a 60 KiB title", 422, `{"title":"`+strings.Repeat("a", 60<<10)+`"}`),
		post("a 60 KiB title of 4-byte characters", 422, `{"title":"`+strings.Repeat("🎉", 15<<10)+`"}`),
		put("a 60 KiB title", 422, `{"title":"`+strings.Repeat("a", 60<<10)+`"}`),
		post("a 60 KiB description", 422, `{"title":"x","description":"`+strings.Repeat("d", 60<<10)+`"}`),
		post("10 000 distinct tags", 422, `{"title":"x","tags":[`+distinctTags(10_000)+`]}`),
		post("10 000 empty tags (errors are capped)", 422, `{"title":"x","tags":[`+strings.Repeat(`"",`, 9_999)+`""]}`),
		post("8 000 distinct unknown fields", 422, `{"title":"x",`+unknownFields(8_000)+`}`),
		// A body over the limit is refused before it is read, by its
		// Content-Length, or once 64 KiB of it have arrived.
		post("a 2 MiB body with Content-Length", 413, `{"title":"`+strings.Repeat("a", 2<<20)+`"}`),
		chunked(post("a 2 MiB body", 413, `{"title":"`+strings.Repeat("a", 2<<20)+`"}`)),
		chunked(put("a 2 MiB body", 413, `{"title":"`+strings.Repeat("a", 2<<20)+`"}`)),
		chunked(post("a body of 64 KiB + 1", 413, `{"title":"`+strings.Repeat("a", maxBodyBytes+1-len(`{"title":""}`))+`"}`)),
		{name: "POST a 60 KiB body as text/plain", method: "POST", target: "/api/me/tasks", status: 415,
			header: [][2]string{auth, {"Content-Type", "text/plain"}}, body: []byte(`{"title":"` + strings.Repeat("a", 60<<10) + `"}`)},
		malformedChunks(post("a malformed chunk size", 400, "")),
		malformedChunks(withHeader(post("a malformed chunk size, with an Idempotency-Key", 400, ""), "Idempotency-Key", "k1")),

		// Huge numbers in every field position, and as the body. (A huge number
		// in a read-only field, such as "id", is ignored, as API.md says.)
		post("1e999999 as the body", 422, "1e999999"),
		post("a 100-digit integer as the body", 422, strings.Repeat("9", 100)),
		complete("1e999999 as completed", 422, `{"completed":1e999999}`),
		complete("a 100-digit integer as completed", 422, `{"completed":`+strings.Repeat("1", 100)+`}`),
	}
	for _, field := range []string{"title", "description", "completed", "priority", "tags", "due_date"} {
		for _, n := range []string{"1e999999", "-" + strings.Repeat("9", 100), "0." + strings.Repeat("0", 100) + "1E-999999"} {
			body := `{"title":"x","` + field + `":` + n + `}`
			if field == "title" {
				body = `{"title":` + n + `}`
			}
			cases = append(cases, post(fmt.Sprintf("%.20s as %s", n, field), 422, body))
		}
	}
	cases = append(cases,
		post("1e999999 as a tag", 422, `{"title":"x","tags":["a",1e999999]}`),
		put("1e999999 as due_date", 422, `{"due_date":1e999999}`),

		// Invalid UTF-8 anywhere in the body is 400, before any field is read.
		post("invalid UTF-8 in a value", 400, "{\"title\":\"\xff\xfe\"}"),
		post("invalid UTF-8 in a key", 400, "{\"ti\xc3tle\":\"x\"}"),
		post("UTF-16 surrogate bytes", 400, "{\"title\":\"\xed\xa0\x80\"}"),
		post("an overlong encoding of /", 400, "{\"title\":\"\xc0\xaf\"}"),
		put("invalid UTF-8 in a tag", 400, "{\"tags\":[\"\x80\"]}"),
	)
	// NUL: raw, it is not JSON (400); escaped, PostgreSQL cannot store it (422).
	for _, field := range []string{"title", "description", "priority", "tags", "due_date"} {
		value := func(s string) string {
			if field == "tags" {
				return `["` + s + `"]`
			}
			return `"` + s + `"`
		}
		body := func(s string) string {
			if field == "title" {
				return `{"title":` + value(s) + `}`
			}
			return `{"title":"x","` + field + `":` + value(s) + `}`
		}
		cases = append(cases,
			post("a raw NUL in "+field, 400, body("a\x00b")),
			post(`\u0000 in `+field, 422, body(`a\u0000b`)),
			put(`\u0000 in `+field, 422, body(`\u0000`)),
		)
	}
	cases = append(cases,
		post(`\u0000 in a key`, 422, `{"title":"x","ti\u0000tle":"y"}`),

		// Duplicate keys, however spelled.
		post("a duplicate key", 422, `{"title":"x","title":"y"}`),
		post("a duplicate key spelled with an escape", 422, `{"title":"x","\u0074itle":"y"}`),
		put("a duplicate read-only key", 422, `{"id":1,"id":2}`),
		complete("a duplicate completed", 422, `{"completed":true,"completed":false}`),

		// A /complete body that is not empty and not JSON is malformed, not a
		// toggle: only JSON's own whitespace counts as an empty body.
		complete("a no-break space", 400, "\u00a0"),
		complete("a vertical tab", 400, "\v"),

		// Headers. Up to net/http's 1 MiB the service's own limit (32 KiB)
		// answers, in problem+json; over it, net/http answers 431 in text/plain.
		get("a 100 KiB header", 431, "/api/me/tasks", [2]string{"X-Padding", strings.Repeat("a", 100<<10)}),
		hostileRequest{name: "GET a 100 KiB Authorization header", method: "GET", target: "/api/me/tasks",
			header: [][2]string{{"Authorization", "Bearer " + strings.Repeat("a", 100<<10)}}, status: 431},
		hostileRequest{name: "GET 2 000 headers", method: "GET", target: "/api/me/tasks",
			header: append([][2]string{auth}, manyHeaders(2000)...), status: 431},
		hostileRequest{name: "GET a header over net/http's 1 MiB limit", method: "GET", target: "/api/me/tasks",
			header: [][2]string{auth, {"X-Padding", strings.Repeat("a", 1<<20+8<<10)}}, status: 431, plain: true},
		hostileRequest{name: "GET a 10 KiB bearer token", method: "GET", target: "/api/me/tasks",
			header: [][2]string{{"Authorization", "Bearer " + strings.Repeat("a.", 5<<10)}}, status: 401},
		withHeader(post("an Idempotency-Key of 256 characters", 400, `{"title":"x"}`), "Idempotency-Key", strings.Repeat("k", 256)),
		withHeader(post("an Idempotency-Key of 20 KiB", 400, `{"title":"x"}`), "Idempotency-Key", strings.Repeat("k", 20<<10)),
		withHeader(post("an Idempotency-Key that is not ASCII", 400, `{"title":"x"}`), "Idempotency-Key", "ключ"),
		withHeader(withHeader(post("two Idempotency-Keys", 400, `{"title":"x"}`), "Idempotency-Key", "a"), "Idempotency-Key", "b"),
		withHeader(post("an Idempotency-Key with DEL (not a valid header value)", 400, `{"title":"x"}`),
			"Idempotency-Key", "a\x7fb").plainText(),

		// Query strings.
		get("2 000 unknown query parameters", 422, "/api/me/tasks?"+manyParams(2000)),
		get("2 000 copies of one parameter", 422, "/api/me/tasks?"+strings.Repeat("q&", 1999)+"q"),
		get("20 000 query parameters (over the 8 KiB request-target)", 414, "/api/me/tasks?"+manyParams(20_000)),
		get("a 1 MiB request-target", 414, "/api/me/tasks?q="+strings.Repeat("a", 1<<20)),
		hostileRequest{name: "GET a request-target over net/http's 1 MiB limit", method: "GET",
			target: "/api/me/tasks?q=" + strings.Repeat("a", 1<<20+8<<10), header: [][2]string{auth}, status: 431, plain: true},
		get("q of 201 characters", 422, "/api/me/tasks?q="+strings.Repeat("%C3%A9", 201)),
		get("q with NUL", 422, "/api/me/tasks?q=a%00b"),
		get("q with encoded invalid UTF-8", 422, "/api/me/tasks?q=%FF%FE"),
		get("q with raw invalid UTF-8", 422, "/api/me/tasks?q=\xff\xfe"),
		get("a malformed escape", 400, "/api/me/tasks?q=%zz"),
		get("a semicolon", 400, "/api/me/tasks?status=all;limit=1"),
		get("a 2 KiB cursor", 422, "/api/me/tasks?cursor="+strings.Repeat("A", 2<<10)),
		get("a huge limit", 422, "/api/me/tasks?limit="+strings.Repeat("9", 100)),
		get("raw invalid UTF-8 as a task id", 404, "/api/me/tasks/\xff"),
		get("a task id over 64 bits", 404, "/api/me/tasks/"+strings.Repeat("9", 100)),

		// Not HTTP: net/http refuses these before any handler, in text/plain.
		rawRequest("a control character in the request-target", "GET /api/me/tasks?q=\x01 HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawRequest("NUL in the request-target", "GET /api/me/tasks/\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawRequest("DEL in the request-target", "GET /api/me/tasks?q=\x7f HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawRequest("a tab in the request-target", "GET /api/me/tasks?q=a\tb HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawRequest("a space in the request-target", "GET /api/me/tasks?q=a b HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawRequest("a 100-digit Content-Length", "POST /api/me/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: "+
			strings.Repeat("9", 100)+"\r\n\r\n{}"),
		rawRequest("a negative Content-Length", "POST /api/me/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}"),
		rawRequest("two different Content-Lengths", "POST /api/me/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
	)
	return cases
}

func chunked(h hostileRequest) hostileRequest {
	h.chunked = true
	h.name += " (chunked)"
	return h
}

func withHeader(h hostileRequest, name, value string) hostileRequest {
	h.header = append(h.header[:len(h.header):len(h.header)], [2]string{name, value})
	return h
}

func (h hostileRequest) plainText() hostileRequest {
	h.plain = true
	return h
}

// malformedChunks sends a chunked body whose chunk size is not hexadecimal:
// the body cannot be read, which the service answers itself (400, not 413).
func malformedChunks(h hostileRequest) hostileRequest {
	h.badSize = true
	return h
}

func rawRequest(name, wire string) hostileRequest {
	return hostileRequest{name: name, wire: wire, status: http.StatusBadRequest, plain: true}
}

// distinctTags is n different short tags, as JSON array items.
func distinctTags(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = strconv.Quote(strconv.FormatInt(int64(i), 36))
	}
	return strings.Join(items, ",")
}

func unknownFields(n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = strconv.Quote(strconv.FormatInt(int64(i), 36)) + ":0"
	}
	return strings.Join(items, ",")
}

func manyHeaders(n int) [][2]string {
	h := make([][2]string, n)
	for i := range h {
		h[i] = [2]string{"X-H" + strconv.Itoa(i), "some value"}
	}
	return h
}

func manyParams(n int) string {
	v := make([]string, n)
	for i := range v {
		v[i] = strconv.FormatInt(int64(i), 36) // a bare name: "a&b" is a=""&b=""
	}
	return strings.Join(v, "&")
}

// Thousands of member names cost time in proportion to their number: a 64 KiB
// body must not buy a quadratic amount of work. (The duplicate-name check once
// compared every name with every other: 200ms for the 8 000 names of one
// hostile request.) The same number of names is decoded in 128 small bodies
// and in one large one, which must take about as long: linear code measures
// 1-2 times, even on a busy machine; the quadratic check measured 30-80.
func TestHostileManyMemberNames(t *testing.T) {
	timed := func(n, times int) time.Duration {
		body := []byte("{" + unknownFields(n) + "}")
		best := time.Duration(math.MaxInt64)
		for range 3 {
			start := time.Now()
			for range times {
				if _, err := decodeObject(body); err != nil {
					t.Fatal(err)
				}
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	small, large := timed(250, 128), timed(32_000, 1)
	if ratio := float64(large) / float64(small); ratio > 10 {
		t.Errorf("32 000 names in one body take %.1f times as long as in 128 bodies (%v, %v)", ratio, large, small)
	}
}
