package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A second load generator: wrk (C, one event loop per thread) sends the
// requests the Go client would send, for a fraction of the Go client's CPU,
// which on a 2-core machine is CPU taken from the service and PostgreSQL.
// The requests are built ahead in Go, by the code the Go client runs, and
// written into a Lua script that wrk cycles through; wrk's done() prints the
// counts and the latency histogram, which run reads back into stats.

// wrkRequests is how many requests are built ahead of a run; each wrk
// thread cycles through them from a random offset.
const wrkRequests = 4096

// wrkTimeout is wrk's --timeout: a response slower than this counts as a
// timeout (and as a response), without its latency. A request never
// answered counts nowhere: wrk 4.1.0 does not time requests out.
const wrkTimeout = 10 * time.Second

// wrkLoad drives a scenario's requests with wrk instead of the Go client.
type wrkLoad struct {
	wrk string // the executable
	dir string // where the Lua scripts go
	l   *load  // base URL, users, conns (its client is not used)
}

// newWrkLoad finds wrk on PATH. dir is a directory it may write its Lua
// scripts into; l supplies the base URL, the users and the connections.
func newWrkLoad(dir string, l *load) (*wrkLoad, error) {
	path, err := exec.LookPath("wrk")
	if err != nil {
		return nil, fmt.Errorf("wrk is not installed (Debian: apt-get install wrk): %w", err)
	}
	return &wrkLoad{wrk: path, dir: dir, l: l}, nil
}

// supports reports whether wrk can run s: every scenario whose requests can
// be built in advance. Not delete and purge: each of their requests takes a
// task of a pool (user.doomed.take()), which must not be taken ahead of the
// run nor deleted twice when wrk cycles.
func (w *wrkLoad) supports(s scenario) bool {
	for _, o := range s.ops {
		if o.takes {
			return false
		}
	}
	return true
}

// run loads the service with s for d (in whole seconds, rounded up) and
// returns what wrk saw, and the CPU time (user + system) wrk spent, its
// start and the printing of its results included. Unlike load.run, the
// stats hold a latency for each response only: a request that got none
// (a socket error or a timeout) counts in failed.transport alone.
func (w *wrkLoad) run(ctx context.Context, s scenario, d time.Duration) (stats, time.Duration, error) {
	if !w.supports(s) {
		return stats{}, 0, fmt.Errorf("wrk: scenario %s builds its requests as they are sent", s.name)
	}
	if w.l.conns < 1 {
		return stats{}, 0, fmt.Errorf("wrk: %d connections", w.l.conns)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	script := filepath.Join(w.dir, "wrk-"+s.name+".lua")
	if err := os.WriteFile(script, wrkScript(w.requests(s, rng), rng.Uint32()), 0o644); err != nil {
		return stats{}, 0, fmt.Errorf("wrk script: %w", err)
	}
	res, cpu, err := w.exec(ctx, script, d)
	if err != nil {
		return stats{}, cpu, fmt.Errorf("wrk %s: %w", s.name, err)
	}
	st, err := res.stats(w.l.conns)
	if err != nil {
		return stats{}, cpu, fmt.Errorf("wrk %s: %w", s.name, err)
	}
	return st, cpu, nil
}

// exec runs wrk with script for d and reads what its done() printed.
func (w *wrkLoad) exec(ctx context.Context, script string, d time.Duration) (wrkResult, time.Duration, error) {
	secs := max(1, int((d+time.Second-1)/time.Second))
	cmd := exec.CommandContext(ctx, w.wrk, "-t", strconv.Itoa(wrkThreads(w.l.conns)), "-c", strconv.Itoa(w.l.conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", strconv.Itoa(int(wrkTimeout/time.Second))+"s", "-s", script, w.l.base)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return wrkResult{}, cpu, fmt.Errorf("%w: %s", err, wrkOutput(&stdout, &stderr))
	}
	res, err := parseWrkResult(stdout.Bytes())
	if err != nil {
		return wrkResult{}, cpu, fmt.Errorf("%w: %s", err, wrkOutput(&stdout, &stderr))
	}
	return res, cpu, nil
}

// wrkThreads is wrk's -t for conns connections: one per core of the 2-core
// machine, but wrk gives each thread conns/threads connections, so an odd
// number of connections gets one thread, which opens them all.
func wrkThreads(conns int) int {
	if conns%2 == 0 {
		return 2
	}
	return 1
}

// wrkRequest is a request as wrk sends it: the Go client's request and the
// headers load.send would set for its user.
type wrkRequest struct {
	request
	headers [][2]string
}

// requests builds wrkRequests requests of s as load.work would: a random
// user each, and the scenario's pick for it.
func (w *wrkLoad) requests(s scenario, rng *rand.Rand) []wrkRequest {
	rs := make([]wrkRequest, wrkRequests)
	for i := range rs {
		u := &w.l.users[rng.IntN(len(w.l.users))]
		r := s.pick(rng).build(rng, u)
		rs[i] = wrkRequest{request: r, headers: requestHeaders(u, r)}
	}
	return rs
}

// wrkScript is the Lua script that sends rs: each thread formats them all
// in init, and request() hands out the next, from an offset drawn from
// seed and the thread's number. There is no response(): wrk would pass
// every response's headers and body to Lua. The header sets are written
// once each (a user's token is most of a request).
func wrkScript(rs []wrkRequest, seed uint32) []byte {
	var b bytes.Buffer
	b.WriteString("-- Written by bench/wrk.go: the requests, then the code that sends them.\n")
	b.WriteString("local headers = {\n")
	sets := map[string]int{}
	keys := make([]string, len(rs))
	for i, r := range rs {
		var key strings.Builder
		for _, h := range r.headers {
			key.WriteString("[" + luaQuote(h[0]) + "]=" + luaQuote(h[1]) + ",")
		}
		keys[i] = key.String()
		if _, ok := sets[keys[i]]; !ok {
			sets[keys[i]] = len(sets) + 1
			b.WriteString("{" + keys[i] + "},\n")
		}
	}
	b.WriteString("}\n-- method, path, header set, body (nil: none); the status the Go client expects\nlocal reqs = {\n")
	for i, r := range rs {
		body := "nil"
		if r.body != nil {
			body = luaQuote(string(r.body))
		}
		fmt.Fprintf(&b, "{%s,%s,%d,%s}, -- want %d\n", luaQuote(r.method), luaQuote(r.path), sets[keys[i]], body, r.want)
	}
	fmt.Fprintf(&b, "}\nlocal seed = %d\nlocal limit = %d\n", seed, wrkTimeout/time.Microsecond+1)
	b.WriteString(wrkLua)
	return b.Bytes()
}

// wrkLua sends the requests and reports. done() prints the counts and the
// latency histogram as wrk has it (see wrkResult.stats). wrk's documented
// latency(i), the i-th value (µs) that occurred and its count, looks each
// one up from the smallest value: O(distinct values × range), 0.7 to 1.5 s
// of CPU after 2 s at 50,000 to 64,000 req/s with a tail to 60 ms, seconds
// to minutes with a longer tail. So done() reads the histogram's array
// through LuaJIT's FFI, in one pass (1 ms there), when the header of wrk's
// stats (count, limit, min, max) matches what wrk reports (limit: --timeout
// in µs + 1) and the counts add up to count, and falls back to latency(i)
// otherwise; both give the same lines.
const wrkLua = `
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local formatted, n, pos = {}, 0, 0
function init(args)
  for i, r in ipairs(reqs) do
    local h = {}
    for k, v in pairs(headers[r[3]]) do h[k] = v end
    formatted[i] = wrk.format(r[1], r[2], h, r[4])
  end
  n = #formatted
  math.randomseed(seed + 7919 * (thread_number or 0))
  pos = math.random(n) - 1
end

function request()
  pos = pos + 1
  if pos > n then pos = 1 end
  return formatted[pos]
end

-- histogram returns the lines "latency <µs> <count>" and how it read them.
local function histogram(latency)
  local lines, ok, ffi = {}, pcall(require, "ffi")
  if ok then
    local s = ffi.cast("uint64_t **", latency)[0] -- count, limit, min, max, data[limit]
    if tonumber(s[1]) == limit and tonumber(s[2]) == latency.min and tonumber(s[3]) == latency.max then
      local total = 0
      for v = tonumber(s[2]), tonumber(s[3]) do
        local c = tonumber(s[4 + v])
        if c ~= 0 then
          lines[#lines + 1] = string.format("latency %.0f %.0f", v, c)
          total = total + c
        end
      end
      if total == tonumber(s[0]) then return lines, "ffi" end
      lines = {}
    end
  end
  for i = 1, #latency do
    local v, c = latency(i)
    lines[#lines + 1] = string.format("latency %.0f %.0f", v, c)
  end
  return lines, "latency(i)"
end

function done(summary, latency, requests)
  local e = summary.errors
  local lines, how = histogram(latency)
  io.write(table.concat({"@wrk-result",
    string.format("duration %.0f", summary.duration),
    string.format("requests %.0f", summary.requests),
    string.format("errors %.0f %.0f %.0f %.0f %.0f", e.connect, e.read, e.write, e.status, e.timeout),
    "histogram " .. how,
    table.concat(lines, "\n"),
    "@wrk-end\n"}, "\n"))
end
`

// luaQuote is s as a Lua string literal: printable ASCII as it is, but for
// the quote and the backslash, and every other byte as a decimal escape,
// which every Lua reads.
func luaQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\%03d", c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// wrkResult is what done() printed.
type wrkResult struct {
	duration  time.Duration
	requests  int64           // responses
	histogram map[int64]int64 // µs: count
	source    string          // how done() read the histogram: "ffi" or "latency(i)"

	// errors: socket errors, timeouts, and responses with a status > 399
	connect, read, write, timeout, status int64
}

// parseWrkResult reads done()'s block from wrk's output.
func parseWrkResult(out []byte) (wrkResult, error) {
	r := wrkResult{histogram: map[int64]int64{}}
	in, ended := false, false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() && !ended {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "@wrk-result":
			in = true
			continue
		case !in || len(f) == 0:
			continue
		case len(f) == 1 && f[0] == "@wrk-end":
			ended = true
			continue
		}
		if len(f) == 2 && f[0] == "histogram" {
			r.source = f[1]
			continue
		}
		n := make([]int64, len(f)-1)
		for i := range n {
			var err error
			if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return r, fmt.Errorf("wrk's result: line %q: %w", sc.Text(), err)
			}
		}
		switch {
		case f[0] == "duration" && len(n) == 1:
			r.duration = time.Duration(n[0]) * time.Microsecond
		case f[0] == "requests" && len(n) == 1:
			r.requests = n[0]
		case f[0] == "errors" && len(n) == 5:
			r.connect, r.read, r.write, r.status, r.timeout = n[0], n[1], n[2], n[3], n[4]
		case f[0] == "latency" && len(n) == 2:
			r.histogram[n[0]] += n[1]
		default:
			return r, fmt.Errorf("wrk's result: unexpected line %q", sc.Text())
		}
	}
	if !ended {
		return r, errors.New("no result from the script's done()")
	}
	return r, nil
}

// stats are the result as load.run reports it, conns being wrk's -c.
//
// wrk (4.0 and later; TestWrkHistogramReaders checks the one installed)
// "corrects" its histogram for coordinated omission before done() and
// before it prints its own percentiles: with e = duration / (requests /
// conns) in µs, the mean interval between a connection's requests, each
// latency n ≥ 2e adds a sample at n-e, n-2e, ... while above e
// (stats_correct). Those samples were never measured, and they would count
// as requests, so stats undoes that, exactly: for m > e the histogram holds
// c[m] = d[m] + d[m+e] + d[m+2e] + ..., so d[m] = c[m] - c[m+e]. It checks
// that what comes out is one latency per response (responses slower than
// --timeout have none).
func (r wrkResult) stats(conns int) (stats, error) {
	st := stats{elapsed: r.duration}
	var e int64
	if k := r.requests / int64(conns); k > 0 {
		e = int64(r.duration/time.Microsecond) / k
	}
	for m, c := range r.histogram {
		if e > 0 && m > e {
			c -= r.histogram[m+e]
		}
		if c < 0 {
			return stats{}, fmt.Errorf("wrk's latency histogram: %d at %d µs after undoing its correction (interval %d µs)", c, m, e)
		}
		for range c {
			st.latencies = append(st.latencies, time.Duration(m)*time.Microsecond)
		}
	}
	if n := int64(len(st.latencies)); n > r.requests || n < r.requests-r.timeout {
		return stats{}, fmt.Errorf("wrk's latency histogram holds %d latencies after undoing its correction, for %d responses (%d timeouts)",
			n, r.requests, r.timeout)
	}
	slices.Sort(st.latencies)
	// wrk counts a status > 399 without telling a 5xx from a 4xx, and
	// without knowing the status expected (a 200 for a 201 passes): both
	// count as unexpected.
	st.failed = errorCounts{transport: int(r.connect + r.read + r.write + r.timeout), unexpected: int(r.status)}
	var msgs []string
	if r.status > 0 {
		msgs = append(msgs, fmt.Sprintf("wrk: %d responses with status > 399", r.status))
	}
	if st.failed.transport > 0 {
		msgs = append(msgs, fmt.Sprintf("wrk: socket errors: connect %d, read %d, write %d, timeout %d", r.connect, r.read, r.write, r.timeout))
	}
	st.firstError = strings.Join(msgs, "; ")
	if r.requests == 0 {
		// wrk reconnects silently when the server closes a connection
		// without a response: no response at all is a failed run.
		return stats{}, fmt.Errorf("no responses in %s (%s)", r.duration, cmp.Or(st.firstError, "no errors counted"))
	}
	return st, nil
}

// wrkOutput is what wrk printed, for an error message: its start.
func wrkOutput(stdout, stderr *bytes.Buffer) string {
	out := strings.TrimSpace(strings.TrimSpace(stderr.String()) + "\n" + strings.TrimSpace(stdout.String()))
	if len(out) > 2000 {
		out = out[:2000] + " …"
	}
	return out
}
