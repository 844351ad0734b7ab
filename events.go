package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Live events (API.md "Live events (SSE)"): a user's changes as
// Server-Sent Events. A stream is the change feed, pushed: it starts at a
// feed token (the client's Last-Event-ID, or now), replays what came after
// it, then waits on the change notifier for more, so it resumes on any
// instance without a gap or a repeat, and while idle it holds no database
// connection. Reminders that fire take feed positions too, and go out as
// reminder events in order with the changes. Its statements are in
// store_events.go.

// eventStreams serves the streams of this instance.
type eventStreams struct {
	store      *Store
	feed       *syncFeed
	log        *slog.Logger
	instance   string        // names this instance's streams in event_streams
	maxAge     time.Duration // SSE_MAX_AGE: a stream ends after this; the client resumes
	heartbeat  time.Duration // a comment at least this often keeps proxies from closing the stream
	maxPerUser int           // SSE_MAX_STREAMS_PER_USER, across instances

	closing   chan struct{} // closed when the server starts to shut down
	closeOnce sync.Once
	open      atomic.Int64 // streams open now
	sent      atomic.Int64 // events sent
}

type eventOptions struct {
	MaxAge     time.Duration
	Heartbeat  time.Duration
	MaxPerUser int
}

func newEventStreams(store *Store, feed *syncFeed, o eventOptions, log *slog.Logger) *eventStreams {
	return &eventStreams{store: store, feed: feed, log: log, instance: feed.notifier.instance,
		maxAge: o.MaxAge, heartbeat: o.Heartbeat, maxPerUser: o.MaxPerUser, closing: make(chan struct{})}
}

// Close ends every open stream at once, with a comment that tells the client
// to reconnect (to another instance, behind a balancer) and resume; streams
// opened afterwards end as soon as they have caught up.
func (es *eventStreams) Close() { es.closeOnce.Do(func() { close(es.closing) }) }

// keepAlive refreshes this instance's streams in the register until ctx
// ends, so they keep counting toward their users' limit.
func (es *eventStreams) keepAlive(ctx context.Context) {
	every(ctx, streamStale/3, func(ctx context.Context) {
		if es.open.Load() == 0 {
			return
		}
		if err := es.store.TouchStreams(ctx, es.instance); err != nil && ctx.Err() == nil {
			es.log.Warn("could not refresh the open event streams", "error", err)
		}
	})
}

// ticketTTL is how long a ticket may wait to be used.
const ticketTTL = 60 * time.Second

// handleEventTicket gives a single-use ticket for an EventSource, which
// cannot send the Authorization header: valid 60 s, bound to the user and
// to the expiry of the token that asked.
func handleEventTicket(w http.ResponseWriter, r *http.Request, q Queries) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	ticket := base64.RawURLEncoding.EncodeToString(raw[:])
	id := identityFrom(r.Context())
	if err := q.CreateTicket(r.Context(), ticket, id.Sub, id.Expires, ticketTTL); err != nil {
		return err
	}
	body := append(append([]byte(`{"ticket":`), strconv.Quote(ticket)...), `,"expires_in":60}`...)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, http.StatusCreated, body)
	return nil
}

// acceptTicket authenticates a request by its ?ticket= when it has one,
// else by its bearer token; never by a long-lived token in the URL.
func acceptTicket(store *Store, bearer func(apiHandler) apiHandler) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		withBearer := bearer(next)
		return func(w http.ResponseWriter, r *http.Request) error {
			values, err := url.ParseQuery(r.URL.RawQuery)
			if err != nil || !values.Has("ticket") {
				return withBearer(w, r)
			}
			id, err := store.RedeemTicket(r.Context(), values.Get("ticket"))
			if err != nil {
				return err
			}
			return next(w, withIdentity(r, id))
		}
	}
}

var eventsParams = []string{"since", "ticket"}

// handleEvents opens a stream: it checks where to start, counts the stream
// toward the user's limit, and streams until the client leaves, the stream
// is SSE_MAX_AGE old, the credentials expire, or the server shuts down.
func handleEvents(es *eventStreams) txHandler {
	return func(w http.ResponseWriter, r *http.Request, q Queries) error {
		values, err := parseQuery(r, eventsParams...)
		if err != nil {
			return err
		}
		id := identityFrom(r.Context())
		tokens, err := es.feed.tokens(r.Context(), q)
		if err != nil {
			return err
		}
		start, reset, err := streamStart(r, values.Get("since"), id.Sub, tokens)
		if err != nil {
			return err
		}
		var streamID int64
		err = q.InTx(r.Context(), func(q Queries) error {
			streamID, err = q.OpenStream(r.Context(), id.Sub, es.instance, es.maxPerUser)
			return err
		})
		if err != nil {
			return err
		}
		es.open.Add(1)
		defer func() {
			es.open.Add(-1)
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
			defer cancel()
			_ = q.CloseStream(ctx, streamID)
		}()
		s := &sseWriter{w: w, rc: http.NewResponseController(w)}
		s.start()
		if reset {
			s.event("reset", "", []byte(`{}`))
			s.flush()
			return nil
		}
		es.stream(r.Context(), s, q, id, tokens, start)
		return nil
	}
}

// streamStart reads where the stream starts: Last-Event-ID (what an
// EventSource sends when it reconnects) or ?since=; nil for now. A token too
// old for the feed, or one from the middle of a full sync, asks for a reset;
// one that does not decode is 422.
func streamStart(r *http.Request, since, user string, tokens syncTokens) (start *syncToken, reset bool, err error) {
	field := "since"
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		since, field = last, "Last-Event-ID"
	}
	if since == "" {
		return nil, false, nil
	}
	t, err := tokens.decode(user, since)
	switch {
	case errors.Is(err, errSyncTokenExpired):
		return nil, true, nil
	case err != nil:
		return nil, false, invalid(FieldError{Field: field, Message: err.Error()})
	case t.Full:
		return nil, true, nil
	}
	return &t, false, nil
}

// stream sends the changes after start (now, when nil), then each new one as
// it comes, until the stream must end.
func (es *eventStreams) stream(ctx context.Context, s *sseWriter, q Queries, id identity, tokens syncTokens, start *syncToken) {
	end := time.Now().Add(es.maxAge)
	if !id.Expires.IsZero() && id.Expires.Before(end) {
		end = id.Expires
	}
	endTimer := time.NewTimer(time.Until(end))
	defer endTimer.Stop()
	heartbeat := time.NewTicker(es.heartbeat)
	defer heartbeat.Stop()

	watch := es.feed.notifier.Watch(id.Sub) // before the first read: nothing slips between
	defer func() { es.feed.notifier.Unwatch(watch) }()
	var pos int64
	if start != nil {
		pos = start.Seq
	} else {
		readCtx, cancel := context.WithTimeout(ctx, requestDeadline)
		var err error
		pos, err = q.FeedPosition(readCtx, id.Sub)
		cancel()
		if err != nil {
			s.comment("the database is not available; reconnect")
			s.flush()
			return
		}
	}
	s.event("ready", tokens.encode(id.Sub, syncToken{Seq: pos, Issued: time.Now()}), []byte(`{}`))
	for {
		more := true
		for more {
			var events []streamEvent
			var err error
			readCtx, cancel := context.WithTimeout(ctx, requestDeadline)
			events, more, err = q.StreamEventsAfter(readCtx, id.Sub, pos, defaultChangesLimit)
			cancel()
			if err != nil {
				s.comment("the database is not available; reconnect")
				s.flush()
				return
			}
			for _, e := range events {
				token := tokens.encode(id.Sub, syncToken{Seq: e.Seq, Issued: time.Now()})
				if e.Reminder != nil {
					s.event("reminder", token, appendReminder(nil, e.Reminder, false))
				} else {
					s.event("change", token, appendChange(nil, *e.Change))
				}
				pos = e.Seq
			}
			es.sent.Add(int64(len(events)))
		}
		if s.flush() != nil {
			return
		}
		watch.Seen(pos)
		if !es.waitForChange(ctx, s, watch, heartbeat.C, endTimer.C) {
			return
		}
		es.feed.notifier.Unwatch(watch)
		watch = es.feed.notifier.Watch(id.Sub)
	}
}

// waitForChange keeps the stream alive with heartbeats until the user's tasks
// may have changed (true), or the stream must end (false).
func (es *eventStreams) waitForChange(ctx context.Context, s *sseWriter, watch *watch, heartbeat <-chan time.Time, end <-chan time.Time) bool {
	for {
		select {
		case <-watch.C():
			return true
		case <-heartbeat:
			s.comment("ping")
			if s.flush() != nil {
				return false
			}
		case <-end:
			s.comment("this stream has reached its end of life; reconnect with Last-Event-ID")
			s.flush()
			return false
		case <-es.closing:
			s.comment("the server is shutting down; reconnect with Last-Event-ID")
			s.flush()
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// sseWriter writes the text/event-stream format; after a failed write (the
// client left) it writes nothing more.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
	buf []byte
}

// start sends the headers, and the reconnection delay, and lifts the
// server's write timeout: a stream lives longer than any request.
func (s *sseWriter) start() {
	_ = s.rc.SetWriteDeadline(time.Time{})
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	s.w.WriteHeader(http.StatusOK)
	s.write([]byte("retry: 2000\n\n"))
	s.flush()
}

func (s *sseWriter) event(name, id string, data []byte) {
	b := append(s.buf[:0], "event: "...)
	b = append(append(b, name...), '\n')
	if id != "" {
		b = append(append(append(b, "id: "...), id...), '\n')
	}
	b = append(append(append(b, "data: "...), data...), "\n\n"...)
	s.buf = b
	s.write(b)
}

func (s *sseWriter) comment(text string) { s.write([]byte(": " + text + "\n\n")) }

func (s *sseWriter) write(b []byte) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
}

func (s *sseWriter) flush() error {
	if s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err
}
