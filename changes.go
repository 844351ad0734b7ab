package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The change feed's route (API.md "Changes (sync)"); its statements are in
// store_changes.go, its tokens in synctoken.go.

// syncFeed is what the feed's handlers need besides the database.
type syncFeed struct {
	notifier  *changeNotifier
	retention time.Duration

	mu   sync.Mutex
	key  []byte     // signs the tokens; read from the database on first use
	macs *sync.Pool // of its HMACs (synctoken.go)
}

// tokens are the token codec, once the key has been read (the schema may not
// have been migrated when the service started).
func (f *syncFeed) tokens(ctx context.Context, q Queries) (syncTokens, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key == nil {
		key, err := q.SyncTokenKey(ctx)
		if err != nil {
			return syncTokens{}, err
		}
		f.key, f.macs = key, newTokenMACs(key)
	}
	return syncTokens{key: f.key, retention: f.retention, now: time.Now, macs: f.macs}, nil
}

var changesParams = []string{"since", "limit", "wait"}

const (
	defaultChangesLimit = 500
	maxChangesLimit     = 1000
	maxChangesWait      = 30 // seconds
)

// changesQuery is a validated GET /changes query.
type changesQuery struct {
	since *syncToken // nil: a full sync from the start
	limit int
	wait  time.Duration
}

func parseChangesQuery(values map[string][]string, user string, tokens syncTokens) (changesQuery, error) {
	var errs fieldErrors
	q := changesQuery{
		limit: intParam(values, "limit", defaultChangesLimit, 1, maxChangesLimit, &errs),
		wait:  time.Duration(intParam(values, "wait", 0, 0, maxChangesWait, &errs)) * time.Second,
	}
	if v, ok := values["since"]; ok {
		t, err := tokens.decode(user, v[0])
		switch {
		case errors.Is(err, errSyncTokenExpired):
			if len(errs) == 0 {
				return q, newError(CodeGone, "The sync token is older than the sync retention; "+
					"start over with a full sync (no since) and continue with its next token.")
			}
		case err != nil:
			errs.add("since", err.Error())
		default:
			q.since = &t
		}
	}
	return q, errs.err()
}

// handleChanges answers a page of the feed: a full sync without since, the
// changes after the token with it. With wait, an incremental request that
// finds nothing waits for the user's next change, holding no database
// connection while it waits.
func handleChanges(feed *syncFeed) txHandler {
	return func(w http.ResponseWriter, r *http.Request, q Queries) error {
		values, err := parseQuery(r, changesParams...)
		if err != nil {
			return err
		}
		user := userIDFrom(r.Context())
		tokens, err := feed.tokens(r.Context(), q)
		if err != nil {
			return err
		}
		cq, err := parseChangesQuery(values, user, tokens)
		if err != nil {
			return err
		}
		if cq.since == nil || cq.since.Full {
			return fullSync(w, r, q, tokens, cq)
		}
		// The page is encoded straight into the answer, after its head.
		buf := getBuffer()
		defer putBuffer(buf)
		var page ChangesPageJSON
		var watch *watch
		waitUntil := time.Now().Add(cq.wait)
		if cq.wait > 0 {
			// The wait may outlast the server's write timeout.
			_ = http.NewResponseController(w).SetWriteDeadline(waitUntil.Add(requestDeadline))
			defer func() { feed.notifier.Unwatch(watch) }()
		}
		for {
			if cq.wait > 0 {
				if watch != nil {
					feed.notifier.Unwatch(watch)
				}
				watch = feed.notifier.Watch(user) // before the read: a change right after it still wakes us
			}
			head := append((*buf)[:0], changesHead...)
			if page, err = q.ChangesAfterJSON(r.Context(), user, cq.since.Seq, cq.limit, head); err != nil {
				return err
			}
			*buf = page.Body
			left := time.Until(waitUntil)
			if page.Count > 0 || cq.wait == 0 || left <= 0 {
				break
			}
			watch.Seen(cq.since.Seq)
			timer := time.NewTimer(left)
			select {
			case <-watch.C():
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				return r.Context().Err()
			}
			timer.Stop()
		}
		next := syncToken{Seq: cq.since.Seq, Issued: time.Now()}
		if page.Count > 0 {
			next.Seq = page.Last
		}
		*buf = appendChangesTail(*buf, tokens.encode(user, next), page.More)
		writeJSON(w, r, http.StatusOK, *buf)
		return nil
	}
}

// fullSync answers a page of every live task, in feed order. Its token goes
// on with the next page; after the last, with the changes made since the
// first page was read (has_more says whether there are any yet).
func fullSync(w http.ResponseWriter, r *http.Request, q Queries, tokens syncTokens, cq changesQuery) error {
	user := userIDFrom(r.Context())
	started, afterSeq, afterID := int64(-1), int64(0), int64(0)
	if cq.since != nil {
		started, afterSeq, afterID = cq.since.Seq, cq.since.AfterSeq, cq.since.AfterID
	}
	page, err := q.FullSync(r.Context(), user, started, afterSeq, afterID, cq.limit)
	if err != nil {
		return err
	}
	changes := make([]Change, len(page.Tasks))
	for i := range page.Tasks {
		changes[i] = Change{Seq: page.Seqs[i], Task: &page.Tasks[i]}
	}
	next := syncToken{Seq: page.Started, Issued: time.Now()}
	if page.More {
		last := len(page.Tasks) - 1
		next.Full, next.AfterSeq, next.AfterID = true, page.Seqs[last], page.Tasks[last].ID
	}
	writeChanges(w, r, changes, tokens.encode(user, next), page.More || page.Latest > page.Started)
	return nil
}

func writeChanges(w http.ResponseWriter, r *http.Request, changes []Change, next string, more bool) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, changesHead...)
	for i, c := range changes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendChange(b, c)
	}
	*buf = appendChangesTail(b, next, more)
	writeJSON(w, r, http.StatusOK, *buf)
}

// An answer of the feed is changesHead, the changes, then appendChangesTail.
const changesHead = `{"changes":[`

func appendChangesTail(b []byte, next string, more bool) []byte {
	b = append(b, `],"next":`...)
	b = appendJSONString(b, next)
	b = append(b, `,"has_more":`...)
	b = strconv.AppendBool(b, more)
	return append(b, '}')
}

// startSyncFeed starts the change notifier (until ctx ends) and has the
// store tell it of every committed change, besides whoever the store told
// before. listenURL is a direct connection
// for LISTEN ("": poll only); poll 0 picks the default.
func startSyncFeed(ctx context.Context, store *Store, listenURL string, poll, retention time.Duration, log *slog.Logger) *syncFeed {
	if poll == 0 {
		poll = 5 * time.Second
		if listenURL == "" {
			poll = time.Second // polling is all there is: keep a change's delay under a second
		}
	}
	n := newChangeNotifier(store, listenURL, poll, log)
	if also := store.onChange; also != nil { // what the store was made to tell (the search index's cleaner)
		store.onChange = func(user string) { n.Changed(user); also(user) }
	} else {
		store.onChange = n.Changed
	}
	go n.Run(ctx)
	return &syncFeed{notifier: n, retention: retention}
}

// appendChange appends one change as the feed and the event streams send it.
func appendChange(b []byte, c Change) []byte {
	if c.JSON != nil {
		b = append(b, `{"op":"upsert","task":`...)
		b = append(b, c.JSON...)
		return append(b, '}')
	}
	if c.Task == nil {
		b = append(b, `{"op":"delete","id":`...)
		b = strconv.AppendInt(b, c.Deleted, 10)
		return append(b, '}')
	}
	b = append(b, `{"op":"upsert","task":`...)
	b = appendTask(b, c.Task)
	return append(b, '}')
}
