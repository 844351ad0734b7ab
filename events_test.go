package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseEvent is one event, or comment, of a stream as a client reads it.
type sseEvent struct {
	Event, ID, Data string
	Comment         string // a comment line's text; the other fields empty
	Retry           string
}

// sseStream is an open stream, read in the background.
type sseStream struct {
	Status int
	Header http.Header
	events chan sseEvent
	cancel context.CancelFunc
	body   string // a refused stream's body
}

// openStream opens GET path on a's server with the given headers, outside
// the contract checker (it would wait for the body's end).
func openStream(t *testing.T, a *testAPI, path string, headers map[string]string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", a.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sseStream{Status: res.StatusCode, Header: res.Header, events: make(chan sseEvent, 1000), cancel: cancel}
	t.Cleanup(s.close)
	if res.StatusCode != http.StatusOK {
		var b strings.Builder
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			b.WriteString(sc.Text())
		}
		res.Body.Close()
		s.body = b.String()
		close(s.events)
		return s
	}
	go func() {
		defer close(s.events)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.events <- sseEvent{Comment: strings.TrimSpace(line[1:])}
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "event":
					ev.Event = value
				case "id":
					ev.ID = value
				case "data":
					ev.Data = value
				case "retry":
					ev.Retry = value
				}
			}
		}
	}()
	return s
}

func (s *sseStream) close() { s.cancel() }

// next is the next event (comments skipped unless wantComments), or fails
// after timeout. ok is false when the stream ended.
func (s *sseStream) next(t *testing.T, timeout time.Duration, wantComments bool) (sseEvent, bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return sseEvent{}, false
			}
			if ev.Comment != "" && !wantComments || ev.Retry != "" {
				continue
			}
			return ev, true
		case <-deadline:
			t.Fatalf("no event within %s", timeout)
			return sseEvent{}, false
		}
	}
}

// nextChange is the next change event, decoded.
func (s *sseStream) nextChange(t *testing.T) (sseEvent, changeJSON) {
	t.Helper()
	ev, ok := s.next(t, 5*time.Second, false)
	if !ok || ev.Event != "change" || ev.ID == "" {
		t.Fatalf("want a change event, got %+v (open: %v)", ev, ok)
	}
	var c changeJSON
	if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
		t.Fatalf("change data %q: %v", ev.Data, err)
	}
	return ev, c
}

func bearerHeader(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// A stream starts with retry and ready, sends each change made through any
// instance as it happens, in feed order, with heartbeats while idle; a
// client that reconnects with Last-Event-ID gets exactly what it missed.
func TestEventStream(t *testing.T) {
	ev := eventOptions{Heartbeat: 200 * time.Millisecond}
	a := startAPI(t, func(o *apiOptions) { o.events = ev })
	b := startAPI(t, func(o *apiOptions) { o.events = ev })
	_, tok := a.newUser(t)
	before := a.createTask(t, tok, `{"title":"before"}`)

	s := openStream(t, a, "/api/me/events", bearerHeader(tok))
	if s.Status != http.StatusOK || !strings.HasPrefix(s.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, Content-Type %q", s.Status, s.Header.Get("Content-Type"))
	}
	first := <-s.events
	if first.Retry != "2000" {
		t.Fatalf("the stream starts with %+v, want retry: 2000", first)
	}
	ready, _ := s.next(t, 5*time.Second, false)
	if ready.Event != "ready" || ready.ID == "" {
		t.Fatalf("want ready with an id, got %+v", ready)
	}
	if ev, _ := s.next(t, 2*time.Second, true); ev.Comment == "" {
		t.Fatalf("no heartbeat while idle: %+v", ev)
	}

	var made []int64
	for i := range 6 {
		via := []*testAPI{a, b}[i%2]
		made = append(made, via.createTask(t, tok, fmt.Sprintf(`{"title":"live %d"}`, i)).ID)
	}
	mustStatus(t, b.do(t, "DELETE", taskURL(before.ID), nil, bearer(tok)), http.StatusNoContent)
	var lastID string
	for i := range 7 {
		ev, c := s.nextChange(t)
		want := int64(0)
		if i < 6 {
			want = made[i]
		} else {
			want = before.ID
		}
		if c.id() != want || (i == 6) != (c.Op == "delete") {
			t.Fatalf("change %d: %+v, want task %d", i, c, want)
		}
		lastID = ev.ID
	}
	s.close()

	// Missed while away: replayed, then live, nothing repeated.
	missed := b.createTask(t, tok, `{"title":"missed"}`)
	mustStatus(t, a.do(t, "PUT", taskURL(made[0]), `{"title":"renamed while away"}`, bearer(tok)), http.StatusOK)
	resumed := openStream(t, b, "/api/me/events", map[string]string{"Authorization": "Bearer " + tok, "Last-Event-ID": lastID})
	if ready, _ := resumed.next(t, 5*time.Second, false); ready.Event != "ready" {
		t.Fatalf("want ready, got %+v", ready)
	}
	if _, c := resumed.nextChange(t); c.id() != missed.ID {
		t.Fatalf("replay: %+v", c)
	}
	if _, c := resumed.nextChange(t); c.id() != made[0] || c.Task.Title != "renamed while away" {
		t.Fatalf("replay: %+v", c)
	}
	live := a.createTask(t, tok, `{"title":"live again"}`)
	if _, c := resumed.nextChange(t); c.id() != live.ID {
		t.Fatalf("live after the replay: %+v", c)
	}

	// ?since= resumes too.
	since := openStream(t, a, "/api/me/events?since="+lastID, bearerHeader(tok))
	since.next(t, 5*time.Second, false)
	if _, c := since.nextChange(t); c.id() != missed.ID {
		t.Fatalf("since: %+v", c)
	}
}

// A token too old for the feed gets one reset event, then the stream ends;
// a token that does not decode is 422 before any stream.
func TestEventStreamReset(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.syncKeep = time.Hour })
	user, tok := a.newUser(t)
	tokens, err := a.feed.tokens(t.Context(), a.store.Queries)
	if err != nil {
		t.Fatal(err)
	}
	stale := tokens.encode(user, syncToken{Seq: 1, Issued: time.Now().Add(-2 * time.Hour)})
	s := openStream(t, a, "/api/me/events", map[string]string{"Authorization": "Bearer " + tok, "Last-Event-ID": stale})
	if ev, _ := s.next(t, 5*time.Second, false); ev.Event != "reset" {
		t.Fatalf("want reset, got %+v", ev)
	}
	if ev, ok := s.next(t, 5*time.Second, true); ok {
		t.Fatalf("the stream goes on after reset: %+v", ev)
	}
	bad := openStream(t, a, "/api/me/events?since=garbage", bearerHeader(tok))
	if bad.Status != http.StatusUnprocessableEntity || !strings.Contains(bad.body, `"field":"since"`) {
		t.Fatalf("%d %s", bad.Status, bad.body)
	}
}

// An EventSource authenticates with a ticket: made on one instance, it
// works once, on any instance, for its own user only; a token in the URL is
// never accepted.
func TestEventTickets(t *testing.T) {
	a := startAPI(t)
	b := startAPI(t)
	user, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	ticket := func() string {
		var v struct {
			Ticket    string `json:"ticket"`
			ExpiresIn int    `json:"expires_in"`
		}
		mustStatus(t, a.do(t, "POST", "/api/me/events/tickets", nil, bearer(tok)), http.StatusCreated).decode(t, &v)
		if v.Ticket == "" || v.ExpiresIn != 60 {
			t.Fatalf("ticket %+v", v)
		}
		return v.Ticket
	}
	tk := ticket()
	s := openStream(t, b, "/api/me/events?ticket="+tk, nil)
	if ev, _ := s.next(t, 5*time.Second, false); s.Status != http.StatusOK || ev.Event != "ready" {
		t.Fatalf("status %d, first event %+v", s.Status, ev)
	}
	if again := openStream(t, a, "/api/me/events?ticket="+tk, nil); again.Status != http.StatusUnauthorized {
		t.Fatalf("a used ticket: %d", again.Status)
	}
	tk = ticket()
	if other := openStream(t, a, "/api/someone-else/events?ticket="+tk, nil); other.Status != http.StatusForbidden {
		t.Fatalf("another user's path: %d", other.Status)
	}
	if own := openStream(t, a, "/api/"+user+"/events?ticket="+ticket(), nil); own.Status != http.StatusOK {
		t.Fatalf("own path: %d", own.Status)
	}
	tk = ticket()
	if _, err := a.pool.Exec(t.Context(), `UPDATE event_tickets SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if expired := openStream(t, a, "/api/me/events?ticket="+tk, nil); expired.Status != http.StatusUnauthorized {
		t.Fatalf("an expired ticket: %d", expired.Status)
	}
	for _, q := range []string{"access_token=" + tok, "token=" + tok, "ticket=" + otherTok} {
		if s := openStream(t, a, "/api/me/events?"+q, nil); s.Status != http.StatusUnauthorized {
			t.Fatalf("?%s…: %d", q[:6], s.Status)
		}
	}
}

// At most SSE_MAX_STREAMS_PER_USER streams per user, across instances; a
// closed stream frees its place.
func TestEventStreamLimit(t *testing.T) {
	ev := eventOptions{MaxPerUser: 2}
	a := startAPI(t, func(o *apiOptions) { o.events = ev })
	b := startAPI(t, func(o *apiOptions) { o.events = ev })
	_, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	first := openStream(t, a, "/api/me/events", bearerHeader(tok))
	openStream(t, b, "/api/me/events", bearerHeader(tok))
	if third := openStream(t, a, "/api/me/events", bearerHeader(tok)); third.Status != http.StatusTooManyRequests {
		t.Fatalf("a third stream: %d", third.Status)
	}
	if other := openStream(t, b, "/api/me/events", bearerHeader(otherTok)); other.Status != http.StatusOK {
		t.Fatalf("another user's stream: %d", other.Status)
	}
	first.close()
	waitFor(t, "the closed stream to free its place", func() bool {
		s := openStream(t, b, "/api/me/events", bearerHeader(tok))
		defer s.close()
		return s.Status == http.StatusOK
	})
}

// A stream ends after SSE_MAX_AGE, and when its token expires, each time
// with a comment; the server's write timeout does not cut it before.
func TestEventStreamEnds(t *testing.T) {
	timeouts := serverTimeouts{readHeader: time.Second, read: time.Second, write: 300 * time.Millisecond, idle: time.Second, shutdown: time.Second}
	a := startAPI(t, func(o *apiOptions) {
		o.events = eventOptions{MaxAge: 1500 * time.Millisecond, Heartbeat: 100 * time.Millisecond}
		o.server = &timeouts
		o.verifier.Leeway = 0
	})
	user, tok := a.newUser(t)
	start := time.Now()
	s := openStream(t, a, "/api/me/events", bearerHeader(tok))
	last := ""
	for {
		ev, ok := s.next(t, 5*time.Second, true)
		if !ok {
			break
		}
		last = ev.Comment
	}
	if took := time.Since(start); took < 1400*time.Millisecond || took > 4*time.Second || !strings.Contains(last, "reconnect") {
		t.Fatalf("ended after %s, last comment %q", took, last)
	}

	// Minted once the second service runs (starting it can take a second
	// under -race), and timed from before the mint: exp is whole seconds, so
	// a 2-second token lives between 1 and 2 seconds from then.
	b := startAPI(t, func(o *apiOptions) { o.verifier.Leeway = 0; o.events = eventOptions{Heartbeat: 100 * time.Millisecond} })
	start = time.Now()
	short, err := mintToken([]byte(testSecret), user, "", "", 2*time.Second, start)
	if err != nil {
		t.Fatal(err)
	}
	s = openStream(t, b, "/api/me/events", bearerHeader(short))
	for {
		if _, ok := s.next(t, 5*time.Second, true); !ok {
			break
		}
	}
	if took := time.Since(start); took < time.Second || took > 4*time.Second {
		t.Fatalf("a stream outlived its token: ended after %s", took)
	}
}

// When the server shuts down, open streams end at once with a comment, so
// their clients resume elsewhere; nothing waits for SSE_MAX_AGE.
func TestEventStreamsEndOnShutdown(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	var streams []*sseStream
	for range 3 {
		s := openStream(t, a, "/api/me/events", bearerHeader(tok))
		s.next(t, 5*time.Second, false)
		streams = append(streams, s)
	}
	start := time.Now()
	a.events.Close()
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() {
			last := ""
			for {
				ev, ok := s.next(t, 5*time.Second, true)
				if !ok {
					break
				}
				last = ev.Comment
			}
			if !strings.Contains(last, "shutting down") {
				t.Errorf("last comment %q", last)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("streams ended %s after the shutdown began", took)
	}
}

// An idle stream holds no database connection.
func TestIdleStreamsHoldNoConnection(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.dbURL = newDatabase(t, true) })
	_, tok := a.newUser(t)
	for range 5 {
		s := openStream(t, a, "/api/me/events", bearerHeader(tok))
		s.next(t, 5*time.Second, false)
	}
	time.Sleep(100 * time.Millisecond)
	if n := a.pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("5 idle streams hold %d connections", n)
	}
}

// CORS works for both ways of opening a stream from the frontend's origin,
// errors included.
func TestEventStreamCORS(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	origin := map[string]string{"Origin": "http://localhost:3000"}
	s := openStream(t, a, "/api/me/events?ticket=nope", origin)
	if s.Status != http.StatusUnauthorized || s.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("a refused EventSource: %d, ACAO %q", s.Status, s.Header.Get("Access-Control-Allow-Origin"))
	}
	s = openStream(t, a, "/api/me/events", map[string]string{"Origin": "http://localhost:3000", "Authorization": "Bearer " + tok})
	if s.Status != http.StatusOK || s.Header.Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("a fetch stream: %d, ACAO %q", s.Status, s.Header.Get("Access-Control-Allow-Origin"))
	}
	r := a.do(t, "OPTIONS", "/api/me/events", nil, header("Origin", "http://localhost:3000"),
		header("Access-Control-Request-Method", "GET"), header("Access-Control-Request-Headers", "authorization, last-event-id"))
	if r.Status != http.StatusNoContent || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight %d %v", r.Status, r.Header)
	}
}
