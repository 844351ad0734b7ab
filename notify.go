package main

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// changeNotifier wakes the requests that wait for a user's changes (long
// polls of the feed, event streams) when the user's tasks change: at once for
// a change made on this instance, and through PostgreSQL's LISTEN/NOTIFY for
// one made on any other. A notification only says "re-read the feed", never
// carries the change, so a lost one costs a delay, not a change: a periodic
// re-read of the watched users' feed positions bounds that delay.
//
// NOTIFY is not sent from the writing transaction: PostgreSQL serialises the
// commits of notifying transactions on one lock, which would cost every write
// its group commit. Instead the instance announces the users it changed in a
// batch, shortly after their commits. LISTEN needs a connection of its own
// that no transaction-mode pooler sits in front of (DATABASE_URL_UNPOOLED);
// without one, the notifier only polls.
type changeNotifier struct {
	log      *slog.Logger
	store    *Store
	instance string        // tells this instance's own notifications apart
	listen   string        // the direct URL to LISTEN on; "": poll only
	poll     time.Duration // how often the watched users' positions are re-read

	mu       sync.Mutex
	watchers map[string]map[*watch]struct{} // by user
	pending  map[string]struct{}            // users to announce to the other instances
	kick     chan struct{}                  // pending has users

	listening atomic.Bool // a LISTEN connection is up
	polls     atomic.Int64
	anyChange atomic.Pointer[func()] // told of every change it learns of (OnAnyChange); nil: nobody
}

// notifyChannel is the PostgreSQL channel the instances announce changes on.
const notifyChannel = "tasks_changed"

func newChangeNotifier(store *Store, listenURL string, poll time.Duration, log *slog.Logger) *changeNotifier {
	var id [8]byte
	_, _ = crand.Read(id[:])
	return &changeNotifier{
		log: log, store: store, instance: hex.EncodeToString(id[:]), listen: listenURL, poll: poll,
		watchers: map[string]map[*watch]struct{}{}, pending: map[string]struct{}{}, kick: make(chan struct{}, 1),
	}
}

// watch is one waiter's interest in a user's changes. Make it before reading
// the feed, so a change committed between the read and the wait still wakes
// it, and tell it (Seen) the position the read reached.
type watch struct {
	user string
	c    chan struct{} // closed on the first wake-up
	seen atomic.Int64  // the feed position the waiter has read; MaxInt64 until known
	once sync.Once
}

// C is closed when the user's tasks may have changed.
func (w *watch) C() <-chan struct{} { return w.c }

// Seen records the feed position the waiter has read up to.
func (w *watch) Seen(seq int64) { w.seen.Store(seq) }

func (w *watch) fire() { w.once.Do(func() { close(w.c) }) }

// Watch registers a waiter for user; Unwatch it when done.
func (n *changeNotifier) Watch(user string) *watch {
	w := &watch{user: user, c: make(chan struct{})}
	w.seen.Store(math.MaxInt64)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.watchers[user] == nil {
		n.watchers[user] = map[*watch]struct{}{}
	}
	n.watchers[user][w] = struct{}{}
	return w
}

func (n *changeNotifier) Unwatch(w *watch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.watchers[w.user], w)
	if len(n.watchers[w.user]) == 0 {
		delete(n.watchers, w.user)
	}
}

// OnAnyChange has f told of every change the notifier learns of: this
// instance's at once, the other instances' as their notifications arrive
// (not by polling), and when the LISTEN connection is lost (notifications
// may then be missed). f must not block.
func (n *changeNotifier) OnAnyChange(f func()) { n.anyChange.Store(&f) }

func (n *changeNotifier) changedAnywhere() {
	if f := n.anyChange.Load(); f != nil {
		(*f)()
	}
}

// Changed is told, after the commit, that user's tasks changed on this
// instance: its waiters here wake at once, the other instances shortly.
func (n *changeNotifier) Changed(user string) {
	n.wake(user)
	n.changedAnywhere()
	n.mu.Lock()
	n.pending[user] = struct{}{}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *changeNotifier) wake(user string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for w := range n.watchers[user] {
		w.fire()
	}
}

func (n *changeNotifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ws := range n.watchers {
		for w := range ws {
			w.fire()
		}
	}
}

// Listening says whether a LISTEN connection is up: other instances' changes
// then arrive as notifications.
func (n *changeNotifier) Listening() bool { return n.listening.Load() }

// Run announces, listens and polls until ctx ends.
func (n *changeNotifier) Run(ctx context.Context) {
	if n.listen == "" {
		n.log.Warn("no direct database connection for LISTEN (set DATABASE_URL_UNPOOLED): " +
			"waiting requests learn of other instances' changes by polling only")
	} else {
		go n.listenLoop(ctx)
	}
	go n.announceLoop(ctx)
	n.pollLoop(ctx)
}

// notice is the payload of a notification: the users whose tasks changed.
type notice struct {
	From  string   `json:"from"`
	Users []string `json:"users"`
}

// maxNoticeBytes keeps a payload under PostgreSQL's 8000-byte limit.
const maxNoticeBytes = 7000

// announceLoop sends the pending users in batches, a few milliseconds after
// the first of them, so a burst of writes costs a few notifications.
func (n *changeNotifier) announceLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		n.mu.Lock()
		users := make([]string, 0, len(n.pending))
		for u := range n.pending {
			users = append(users, u)
		}
		clear(n.pending)
		n.mu.Unlock()
		for _, payload := range n.payloads(users) {
			if _, err := n.store.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, payload); err != nil && ctx.Err() == nil {
				n.log.Warn("could not announce changes to the other instances; they will poll", "error", err)
			}
		}
	}
}

// payloads splits users into notices that each fit a notification.
func (n *changeNotifier) payloads(users []string) []string {
	var out []string
	for len(users) > 0 {
		size, i := 64, 0
		for i < len(users) && (i == 0 || size+len(users[i])*2+3 < maxNoticeBytes) {
			size += len(users[i])*2 + 3 // JSON-escaped at worst, quoted, comma
			i++
		}
		b, _ := json.Marshal(notice{From: n.instance, Users: users[:i]})
		out, users = append(out, string(b)), users[i:]
	}
	return out
}

// listenLoop keeps a LISTEN connection, reconnecting with backoff. After a
// reconnect every waiter re-reads: notifications may have been lost.
func (n *changeNotifier) listenLoop(ctx context.Context) {
	delay := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := n.listenOnce(ctx)
		n.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		n.wakeAll()
		n.changedAnywhere() // what was announced while the connection was down is not sent again
		jittered := delay/2 + rand.N(delay)
		n.log.Warn("LISTEN connection lost; reconnecting", "retry_in", jittered.Round(time.Millisecond), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(jittered):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (n *changeNotifier) listenOnce(ctx context.Context) error {
	// pgxpool's parser takes pool_* parameters out of the URL, which the
	// server would refuse as settings.
	cfg, err := pgxpool.ParseConfig(n.listen)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	n.listening.Store(true)
	for {
		msg, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var nt notice
		if json.Unmarshal([]byte(msg.Payload), &nt) != nil || nt.From == n.instance {
			continue
		}
		for _, u := range nt.Users {
			n.wake(u)
		}
		n.changedAnywhere()
	}
}

// pollLoop re-reads the watched users' feed positions and wakes the waiters
// whose position moved: it bounds the delay of a lost notification, and is
// the only way changes of other instances arrive without LISTEN. With nobody
// waiting it asks the database nothing.
func (n *changeNotifier) pollLoop(ctx context.Context) { every(ctx, n.poll, n.pollOnce) }

func (n *changeNotifier) pollOnce(ctx context.Context) {
	n.mu.Lock()
	users := make([]string, 0, len(n.watchers))
	for u := range n.watchers {
		users = append(users, u)
	}
	n.mu.Unlock()
	if len(users) == 0 {
		return
	}
	n.polls.Add(1)
	positions, err := n.store.WatchedPositions(ctx, users)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("could not re-read the feed positions of waiting users", "error", err)
		}
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for user, seq := range positions {
		for w := range n.watchers[user] {
			if seq > w.seen.Load() {
				w.fire()
			}
		}
	}
}
