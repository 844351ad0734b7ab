package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Event streams as the bench opens them: many idle ones (-streams), or one
// per user that times each change's arrival (-fanout).

// streamClient opens event streams: one connection each, no timeout (a
// stream lives as long as the bench wants it).
func streamClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}}
}

// eventStream is one open stream, read in the background until closed.
type eventStream struct {
	cancel     context.CancelFunc
	done       chan struct{}
	heartbeats atomic.Int64
	err        error // why it ended, when it ended by itself
	ended      atomic.Bool
}

// changeArrival is a change event as a stream received it.
type changeArrival struct {
	task int64
	at   time.Time
}

// openEventStream opens u's stream on base and returns once its ready
// event has arrived; onChange, when not nil, is told of each change.
func openEventStream(ctx context.Context, c *http.Client, base string, u *user, onChange func(changeArrival)) (*eventStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, base+"/api/"+u.id+"/events", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", u.auth)
	res, err := c.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open the stream of %s: %w", u.id, err)
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		return nil, fmt.Errorf("open the stream of %s: status %d: %s", u.id, res.StatusCode, b)
	}
	s := &eventStream{cancel: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	var readyOnce sync.Once
	go func() {
		defer close(s.done)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		event, data := "", ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				switch event {
				case "ready":
					readyOnce.Do(func() { close(ready) })
				case "change":
					if onChange != nil {
						var c struct {
							Task *struct{ ID int64 } `json:"task"`
							ID   int64               `json:"id"`
						}
						if json.Unmarshal([]byte(data), &c) == nil {
							id := c.ID
							if c.Task != nil {
								id = c.Task.ID
							}
							onChange(changeArrival{task: id, at: time.Now()})
						}
					}
				}
				event, data = "", ""
			case strings.HasPrefix(line, ":"):
				s.heartbeats.Add(1)
			case strings.HasPrefix(line, "event:"):
				event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:"):
				data = strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
			}
		}
		if sctx.Err() == nil {
			s.err = sc.Err()
			if s.err == nil {
				s.err = io.EOF
			}
			s.ended.Store(true)
		}
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("the stream of %s ended before it was ready: %v", u.id, s.err)
	case <-ctx.Done():
		s.close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		s.close()
		return nil, fmt.Errorf("the stream of %s was not ready within 30s", u.id)
	}
}

func (s *eventStream) close() {
	s.cancel()
	<-s.done
}

// openEventStreams opens one stream per user, parallel at most at a time.
func openEventStreams(ctx context.Context, c *http.Client, base string, users []user, parallel int, onChange func(changeArrival)) ([]*eventStream, error) {
	streams := make([]*eventStream, len(users))
	next := atomic.Int64{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range parallel {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(users) || ctx.Err() != nil {
					return
				}
				s, err := openEventStream(ctx, c, base, &users[i], onChange)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				streams[i] = s
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		closeEventStreams(streams)
		return nil, firstErr
	}
	return streams, nil
}

func closeEventStreams(streams []*eventStream) {
	var wg sync.WaitGroup
	for _, s := range streams {
		if s != nil {
			wg.Go(s.close)
		}
	}
	wg.Wait()
}

// streamUsers are n users named prefix1..prefixN with tokens signed by secret.
func streamUsers(secret []byte, prefix string, n int) ([]user, error) {
	users := make([]user, n)
	for i := range users {
		u, err := newUser(secret, fmt.Sprintf("%s%d", prefix, i+1))
		if err != nil {
			return nil, err
		}
		users[i] = u
	}
	return users, nil
}
