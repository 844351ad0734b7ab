package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// request is what one iteration of a worker sends, and the status it expects.
type request struct {
	method      string
	path        string
	body        []byte
	ifNoneMatch string // "": none
	mcp         bool   // a JSON-RPC call to /mcp: the headers an MCP client sends
	want        int
}

// load sends a scenario's requests from concurrent workers, each one
// request at a time over its kept-alive connection, for a random user each.
type load struct {
	client *http.Client
	base   string
	users  []user
	conns  int
}

// run loads the service with s until the deadline and returns what the
// workers saw.
func (l *load) run(ctx context.Context, s scenario, d time.Duration) stats {
	rec := l.start(ctx, s, time.Now().Add(d))
	rec.wait()
	return rec.drain()
}

// start launches the workers; they stop at until (or when ctx ends).
func (l *load) start(ctx context.Context, s scenario, until time.Time) *recorder {
	rec := &recorder{shards: make([]shard, l.conns), since: time.Now()}
	for i := range l.conns {
		rec.wg.Add(1)
		go func() {
			defer rec.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			l.work(ctx, s, until, &rec.shards[i], rng)
		}()
	}
	return rec
}

func (l *load) work(ctx context.Context, s scenario, until time.Time, sh *shard, rng *rand.Rand) {
	for ctx.Err() == nil && time.Now().Before(until) {
		u := &l.users[rng.IntN(len(l.users))]
		r := s.pick(rng).build(rng, u)
		start := time.Now()
		status, err := l.send(ctx, u, r)
		sh.record(time.Since(start), status, r, err)
	}
}

// send makes one request and reads the whole response, so the connection
// goes back to the pool for the next one.
func (l *load) send(ctx context.Context, u *user, r request) (int, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, l.base+r.path, body)
	if err != nil {
		return 0, err
	}
	for _, h := range requestHeaders(u, r) {
		req.Header.Set(h[0], h[1])
	}
	res, err := l.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, err
}

// requestHeaders are the headers every load generator sends with r for u:
// its token, and what the request's kind needs.
func requestHeaders(u *user, r request) [][2]string {
	h := [][2]string{{"Authorization", u.auth}}
	if r.ifNoneMatch != "" {
		h = append(h, [2]string{"If-None-Match", r.ifNoneMatch})
	}
	if r.body != nil {
		h = append(h, [2]string{"Content-Type", "application/json"})
	}
	if r.mcp {
		h = append(h, [2]string{"Accept", "application/json, text/event-stream"}, [2]string{"Mcp-Protocol-Version", "2025-11-25"})
	}
	return h
}

// recorder collects what the workers see, one shard per worker, so that
// recording takes an uncontended lock; drain may run while they work.
type recorder struct {
	wg     sync.WaitGroup
	shards []shard
	since  time.Time // the start of what the next drain covers
}

type shard struct {
	mu         sync.Mutex
	latencies  []time.Duration
	counts     errorCounts
	firstError string
}

// errorCounts are the requests that did not get the expected answer.
type errorCounts struct {
	transport  int // no response at all
	server     int // 5xx
	unexpected int // any other status than the one expected
}

func (c errorCounts) total() int { return c.transport + c.server + c.unexpected }

func (c *errorCounts) add(o errorCounts) {
	c.transport += o.transport
	c.server += o.server
	c.unexpected += o.unexpected
}

func (s *shard) record(d time.Duration, status int, r request, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latencies = append(s.latencies, d)
	switch {
	case err != nil:
		s.counts.transport++
		if s.firstError == "" {
			s.firstError = fmt.Sprintf("%s %s: %v", r.method, r.path, err)
		}
	case status != r.want:
		if status >= 500 {
			s.counts.server++
		} else {
			s.counts.unexpected++
		}
		if s.firstError == "" {
			s.firstError = fmt.Sprintf("%s %s: status %d, want %d", r.method, r.path, status, r.want)
		}
	}
}

func (r *recorder) wait() { r.wg.Wait() }

// drain returns what was recorded since the last drain, and forgets it.
func (r *recorder) drain() stats {
	now := time.Now()
	st := stats{elapsed: now.Sub(r.since)}
	r.since = now
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		st.latencies = append(st.latencies, sh.latencies...)
		st.failed.add(sh.counts)
		if st.firstError == "" {
			st.firstError = sh.firstError
		}
		sh.latencies, sh.counts, sh.firstError = sh.latencies[:0], errorCounts{}, ""
		sh.mu.Unlock()
	}
	slices.Sort(st.latencies)
	return st
}

// stats are the requests of one measurement.
type stats struct {
	elapsed    time.Duration
	latencies  []time.Duration // sorted
	failed     errorCounts
	firstError string
}

func (s stats) errors() int { return s.failed.total() }

// merge puts measurements together.
func merge(parts ...stats) stats {
	var m stats
	for _, p := range parts {
		m.elapsed += p.elapsed
		m.latencies = append(m.latencies, p.latencies...)
		m.failed.add(p.failed)
		if m.firstError == "" {
			m.firstError = p.firstError
		}
	}
	slices.Sort(m.latencies)
	return m
}

func (s stats) requests() int { return len(s.latencies) }

func (s stats) rate() float64 { return float64(len(s.latencies)) / s.elapsed.Seconds() }

// percentile is the nearest-rank percentile p (0..100) of the latencies.
func (s stats) percentile(p float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s.latencies)))) - 1
	return s.latencies[max(0, min(i, len(s.latencies)-1))]
}
