package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// feedJSON is an answer of GET /changes as a client reads it.
type feedJSON struct {
	Changes []changeJSON `json:"changes"`
	Next    string       `json:"next"`
	HasMore bool         `json:"has_more"`
}

type changeJSON struct {
	Op   string    `json:"op"`
	Task *taskJSON `json:"task"`
	ID   int64     `json:"id"`
}

func (c changeJSON) id() int64 {
	if c.Task != nil {
		return c.Task.ID
	}
	return c.ID
}

// pullChanges asks for one page of the feed after since ("": a full sync).
func pullChanges(t testing.TB, a *testAPI, tok, since string, extra ...string) feedJSON {
	t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		q.Set(k, v)
	}
	var f feedJSON
	mustStatus(t, a.do(t, "GET", "/api/me/changes?"+q.Encode(), nil, bearer(tok)), http.StatusOK).decode(t, &f)
	seen := map[int64]bool{}
	for _, c := range f.Changes {
		if seen[c.id()] {
			t.Fatalf("task %d twice in one answer: %+v", c.id(), f.Changes)
		}
		seen[c.id()] = true
		if (c.Op == "upsert") != (c.Task != nil) || (c.Op != "upsert" && c.Op != "delete") {
			t.Fatalf("malformed change %+v", c)
		}
	}
	if f.Next == "" {
		t.Fatal("no next token")
	}
	return f
}

// changesSince reads the feed after token until has_more is false.
func changesSince(t testing.TB, a *testAPI, tok, token string) []changeJSON {
	t.Helper()
	var all []changeJSON
	for {
		f := pullChanges(t, a, tok, token)
		all, token = append(all, f.Changes...), f.Next
		if !f.HasMore {
			return all
		}
	}
}

// syncAll reads the feed after token ("": from a full sync) until has_more
// is false and returns where it stands.
func syncAll(t testing.TB, a *testAPI, tok, token string) string {
	t.Helper()
	for {
		f := pullChanges(t, a, tok, token)
		token = f.Next
		if !f.HasMore {
			return token
		}
	}
}

// replica is a client's copy of a user's tasks, kept by applying the feed.
type replica struct {
	tasks map[int64]taskJSON
	token string
}

func (r *replica) apply(f feedJSON) {
	for _, c := range f.Changes {
		if c.Task != nil {
			r.tasks[c.Task.ID] = *c.Task
		} else {
			delete(r.tasks, c.ID)
		}
	}
	r.token = f.Next
}

// liveTasks is the server's truth: the user's live tasks, read directly.
func liveTasks(t testing.TB, a *testAPI, user string) map[int64]int {
	t.Helper()
	rows, err := a.pool.Query(context.Background(), `SELECT id, version FROM tasks WHERE user_id = $1 AND deleted_at IS NULL`, user)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int{}
	var id int64
	var version int
	if _, err := pgx.ForEachRow(rows, []any{&id, &version}, func() error { out[id] = version; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameAsServer(t testing.TB, a *testAPI, user string, r *replica) {
	t.Helper()
	want := liveTasks(t, a, user)
	got := map[int64]int{}
	for id, task := range r.tasks {
		got[id] = task.Version
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the replica (id: version) %v\ndiffers from the server's live tasks %v", got, want)
	}
}

// A full sync, then the changes after it: creates and updates as upserts in
// their latest state, trash and delete-for-good as deletes, a restore as an
// upsert, each task at most once per answer, oldest first.
func TestChangeFeed(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	var ids []int64
	for i := range 5 {
		ids = append(ids, a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i)).ID)
	}
	r := &replica{tasks: map[int64]taskJSON{}}
	pages := 0
	for f := pullChanges(t, a, tok, "", "limit=2"); ; f = pullChanges(t, a, tok, r.token, "limit=2") {
		r.apply(f)
		pages++
		if !f.HasMore {
			break
		}
	}
	if pages != 3 || len(r.tasks) != 5 {
		t.Fatalf("full sync: %d pages, %d tasks", pages, len(r.tasks))
	}
	sameAsServer(t, a, user, r)

	if f := pullChanges(t, a, tok, r.token); len(f.Changes) != 0 || f.HasMore {
		t.Fatalf("changes with nothing changed: %+v", f)
	}
	mustStatus(t, a.do(t, "PUT", taskURL(ids[0]), `{"title":"renamed"}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PUT", taskURL(ids[0]), `{"title":"renamed again"}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PATCH", taskURL(ids[1])+"/complete", nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "DELETE", taskURL(ids[2]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", taskURL(ids[3]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", ids[3]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", taskURL(ids[4]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", ids[4]), nil, bearer(tok)), http.StatusOK)
	created := a.createTask(t, tok, `{"title":"new"}`)

	f := pullChanges(t, a, tok, r.token)
	var got []string
	for _, c := range f.Changes {
		got = append(got, fmt.Sprintf("%s %d", c.Op, c.id()))
	}
	want := []string{
		fmt.Sprintf("upsert %d", ids[0]), fmt.Sprintf("upsert %d", ids[1]), fmt.Sprintf("delete %d", ids[2]),
		fmt.Sprintf("delete %d", ids[3]), fmt.Sprintf("upsert %d", ids[4]), fmt.Sprintf("upsert %d", created.ID),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes %v\nwant %v", got, want)
	}
	if f.Changes[0].Task.Title != "renamed again" || !f.Changes[1].Task.Completed {
		t.Fatalf("not the latest state: %+v %+v", f.Changes[0].Task, f.Changes[1].Task)
	}
	r.apply(f)
	sameAsServer(t, a, user, r)

	// An update that changes nothing is not a change.
	mustStatus(t, a.do(t, "PUT", taskURL(ids[0]), `{"title":"renamed again"}`, bearer(tok)), http.StatusOK)
	if f := pullChanges(t, a, tok, r.token); len(f.Changes) != 0 {
		t.Fatalf("a no-op update is in the feed: %+v", f.Changes)
	}
	// Small pages of an incremental sync.
	for i := range 3 {
		mustStatus(t, a.do(t, "PUT", taskURL(ids[i%2]), fmt.Sprintf(`{"title":"p%d"}`, i), bearer(tok)), http.StatusOK)
		a.createTask(t, tok, fmt.Sprintf(`{"title":"more %d"}`, i))
	}
	for {
		f := pullChanges(t, a, tok, r.token, "limit=1")
		if len(f.Changes) > 1 {
			t.Fatalf("limit=1 gave %d", len(f.Changes))
		}
		r.apply(f)
		if !f.HasMore {
			break
		}
	}
	sameAsServer(t, a, user, r)
}

// The guarantee (API.md "Changes (sync)"): 16 writers on one user, through
// two instances, create, update, toggle, trash and restore at random while a
// client syncs (a full sync in small pages, then incremental ones, from
// either instance). Once the writes stop and the client has caught up, its
// copy is exactly the server's live tasks. 50 rounds, each with its own
// user and random seed.
func TestChangeFeedNeverMissesAChange(t *testing.T) {
	instances := []*testAPI{startAPI(t), startAPI(t)}
	const rounds, writers, opsPerWriter = 50, 16, 8
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for round := range rounds {
		user, tok := instances[0].newUser(t)
		rng := rand.New(rand.NewPCG(seed, uint64(round)))
		for i := range 1 + rng.IntN(6) {
			instances[0].createTask(t, tok, fmt.Sprintf(`{"title":"seed %d"}`, i))
		}
		var mu sync.Mutex
		var known []int64 // task ids any writer has seen
		for _, id := range slices.Collect(mapKeys(liveTasks(t, instances[0], user))) {
			known = append(known, id)
		}
		var done atomic.Bool
		var writes sync.WaitGroup
		for w := range writers {
			writes.Go(func() {
				wrng := rand.New(rand.NewPCG(seed, uint64(round*writers+w+1)))
				for op := range opsPerWriter {
					a := instances[wrng.IntN(2)]
					mu.Lock()
					id := int64(0)
					if len(known) > 0 {
						id = known[wrng.IntN(len(known))]
					}
					mu.Unlock()
					switch k := wrng.IntN(10); {
					case k < 3 || id == 0:
						r := a.do(t, "POST", "/api/me/tasks", fmt.Sprintf(`{"title":"w%d-%d"}`, w, op), bearer(tok))
						if r.Status == http.StatusCreated {
							mu.Lock()
							known = append(known, r.task(t).ID)
							mu.Unlock()
						}
					case k < 5:
						a.do(t, "PUT", taskURL(id), fmt.Sprintf(`{"title":"u%d-%d","priority":"high"}`, w, op), bearer(tok))
					case k < 7:
						a.do(t, "PATCH", taskURL(id)+"/complete", nil, bearer(tok))
					case k < 9:
						a.do(t, "DELETE", taskURL(id), nil, bearer(tok))
					default:
						a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", id), nil, bearer(tok))
					}
				}
			})
		}
		go func() { writes.Wait(); done.Store(true) }()

		r := &replica{tasks: map[int64]taskJSON{}}
		limit := fmt.Sprintf("limit=%d", 1+rng.IntN(7))
		for {
			finished := done.Load()
			f := pullChanges(t, instances[rng.IntN(2)], tok, r.token, limit)
			r.apply(f)
			if finished && !f.HasMore {
				break
			}
		}
		writes.Wait()
		sameAsServer(t, instances[0], user, r)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// A transaction that changed a task and has not committed holds the user's
// next feed position, so later writes of that user wait for it to commit:
// the feed can never hand out a position past a change that is still to
// come. Writes of other users do not wait.
func TestChangeFeedWaitsForAHeldTransaction(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	otherUser, otherTok := a.newUser(t)
	held := a.createTask(t, tok, `{"title":"before"}`)
	r := &replica{tasks: map[int64]taskJSON{}}
	r.apply(pullChanges(t, a, tok, ""))

	conn, err := pgx.Connect(t.Context(), a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `UPDATE tasks SET title = 'held' WHERE id = $1`, held.ID); err != nil {
		t.Fatal(err)
	}

	var later sync.WaitGroup
	var committed atomic.Int32
	for i := range 4 {
		later.Go(func() {
			mustStatus(t, a.do(t, "POST", "/api/me/tasks", fmt.Sprintf(`{"title":"later %d"}`, i), bearer(tok)), http.StatusCreated)
			committed.Add(1)
		})
	}
	// Another user's writes go on.
	a.createTask(t, otherTok, `{"title":"elsewhere"}`)
	if f := pullChanges(t, a, otherTok, ""); len(f.Changes) != 1 {
		t.Fatalf("the other user's feed: %+v", f)
	}
	time.Sleep(300 * time.Millisecond)
	if n := committed.Load(); n != 0 {
		t.Fatalf("%d later writes committed while an earlier change was held", n)
	}
	f := pullChanges(t, a, tok, r.token)
	if len(f.Changes) != 0 {
		t.Fatalf("the feed moved past a held change: %+v", f.Changes)
	}
	r.apply(f)

	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	later.Wait()
	changes := changesSince(t, a, tok, r.token)
	if len(changes) != 5 || changes[0].id() != held.ID || changes[0].Task.Title != "held" {
		t.Fatalf("after the commit: %+v", changes)
	}
	r.apply(feedJSON{Changes: changes, Next: r.token})
	sameAsServer(t, a, user, r)
	_ = otherUser
}

// Tokens that are garbage, too long, forged or another user's are 422 naming
// since; one older than SYNC_RETENTION is 410; limit and wait out of range,
// and unknown parameters, are 422.
func TestChangeFeedRefusesBadRequests(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.syncKeep = time.Hour })
	_, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	a.createTask(t, tok, `{"title":"x"}`)
	mine := syncAll(t, a, tok, "")
	theirs := syncAll(t, a, otherTok, "")
	forged := []byte(mine)
	forged[len(forged)/2] ^= 1
	if forged[len(forged)/2] == '-'^1 || forged[len(forged)/2] == '_'^1 {
		forged[len(forged)/2] = 'A'
	}
	for name, since := range map[string]string{
		"garbage": "not-a-token", "too long": strings.Repeat("A", 129), "another user's": theirs,
		"forged": string(forged), "not base64": "!!!!", "empty-ish": "A",
	} {
		t.Run(name, func(t *testing.T) {
			r := mustStatus(t, a.do(t, "GET", "/api/me/changes?since="+url.QueryEscape(since), nil, bearer(tok)), http.StatusUnprocessableEntity)
			if p := r.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "since" {
				t.Fatalf("errors %+v", p.Errors)
			}
		})
	}
	tokens, err := a.feed.tokens(t.Context(), a.store.Queries)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := tokens.decode(a.userOf(t, tok), mine)
	stale := tokens.encode(a.userOf(t, tok), syncToken{Seq: user.Seq, Issued: time.Now().Add(-2 * time.Hour)})
	mustStatus(t, a.do(t, "GET", "/api/me/changes?since="+stale, nil, bearer(tok)), http.StatusGone).problem(t)
	for _, q := range []string{"limit=0", "limit=1001", "limit=-1", "limit=x", "wait=31", "wait=-1", "wait=1.5", "x=1", "since=" + mine + "&since=" + mine} {
		mustStatus(t, a.do(t, "GET", "/api/me/changes?"+q, nil, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
	}
}

// userOf is the subject of tok, as the service reads it.
func (a *testAPI) userOf(t testing.TB, tok string) string {
	t.Helper()
	sub, err := newVerifier(a.opts.verifier).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// A long poll answers within a second of a change made through another
// instance, with LISTEN or by polling alone, and after wait seconds with
// nothing when nothing changes; while it waits it holds no connection.
func TestChangeFeedLongPoll(t *testing.T) {
	db := newDatabase(t, true)
	a := startAPI(t, func(o *apiOptions) { o.dbURL = db })
	b := startAPI(t, func(o *apiOptions) { o.dbURL = db })
	polling := startAPI(t, func(o *apiOptions) { o.dbURL = db; o.noListen = true; o.poll = 200 * time.Millisecond })
	_, tok := a.newUser(t)
	a.createTask(t, tok, `{"title":"x"}`)
	token := syncAll(t, a, tok, "")
	waitFor(t, "the LISTEN connections", func() bool {
		return a.feed.notifier.listening.Load() && b.feed.notifier.listening.Load()
	})

	for name, waiter := range map[string]*testAPI{"LISTEN": a, "polling": polling, "same instance": b} {
		t.Run(name, func(t *testing.T) {
			var madeAt atomic.Int64
			go func() {
				time.Sleep(300 * time.Millisecond)
				madeAt.Store(time.Now().UnixNano())
				b.createTask(t, tok, `{"title":"while waiting"}`)
			}()
			f := pullChanges(t, waiter, tok, token, "wait=10")
			lag := time.Since(time.Unix(0, madeAt.Load()))
			if len(f.Changes) != 1 || f.Changes[0].Task.Title != "while waiting" {
				t.Fatalf("%+v", f)
			}
			if lag > time.Second {
				t.Fatalf("answered %s after the change", lag)
			}
			token = f.Next
		})
	}

	start := time.Now()
	var acquired atomic.Int32
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				acquired.Store(max(acquired.Load(), a.pool.Stat().AcquiredConns()))
			}
		}
	}()
	f := pullChanges(t, a, tok, token, "wait=1")
	close(stop)
	if took := time.Since(start); len(f.Changes) != 0 || took < time.Second || took > 3*time.Second {
		t.Fatalf("an idle wait=1 answered after %s with %+v", took, f)
	}
	if n := acquired.Load(); n != 0 {
		t.Fatalf("a waiting request held %d connections", n)
	}
	if f.Next == "" {
		t.Fatal("no next token")
	}
}

// Emptying the trash never shortens a token's life: a client whose token
// predates the delete still hears of it.
func TestEmptyingTheTrashKeepsTokensValid(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, `{"title":"x"}`)
	token := syncAll(t, a, tok, "")
	mustStatus(t, a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", "/api/me/trash", nil, bearer(tok)), http.StatusNoContent)
	changes := changesSince(t, a, tok, token)
	if len(changes) != 1 || changes[0].Op != "delete" || changes[0].ID != task.ID {
		t.Fatalf("%+v", changes)
	}
}

// A task deleted for good while the feed is read is in the answer exactly
// once: as the trashed task before the purge, as its tombstone after, never
// both and never neither. The feed's statement reads the tasks and the
// tombstones in one snapshot; read one after the other, a purge in between
// would show the task twice (or, tombstones first, not at all).
func TestChangeFeedSeesAPurgeOnce(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	const n = 100
	var ids []int64
	for i := range n {
		ids = append(ids, a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i)).ID)
	}
	q := a.store.Queries
	if _, err := q.db.Exec(t.Context(), `UPDATE tasks SET deleted_at = now() WHERE user_id = $1`, user); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)

	stop, purged := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-purged }()
	go func() {
		defer close(purged)
		for _, id := range ids {
			select {
			case <-stop:
				return
			default:
			}
			if err := q.DeleteForGood(context.Background(), user, id); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-purged:
			if reads == 0 {
				t.Fatal("the purges ended before the first read")
			}
			return
		default:
		}
		changes, more, err := q.ChangesAfter(t.Context(), user, 0, 2*n)
		if err != nil {
			t.Fatal(err)
		}
		if reads%2 == 1 {
			// The handler's read: straight from the tasks' rows while no
			// tombstone falls within the page, merged once one does.
			page, err := q.ChangesAfterJSON(t.Context(), user, 0, 2*n, nil)
			if err != nil {
				t.Fatal(err)
			}
			var decoded []changeJSON
			if err := json.Unmarshal(append(append([]byte("["), page.Body...), ']'), &decoded); err != nil {
				t.Fatalf("read %d: %v: %s", reads, err, page.Body)
			}
			if len(decoded) != page.Count {
				t.Fatalf("read %d: %d changes, count %d", reads, len(decoded), page.Count)
			}
			changes, more = changes[:0], page.More
			for _, c := range decoded {
				if c.Op != "delete" {
					t.Fatalf("read %d: %+v", reads, c)
				}
				changes = append(changes, Change{Seq: int64(len(changes) + 1), Deleted: c.ID})
			}
		}
		var got []int64
		for i, c := range changes {
			if c.Deleted == 0 || (i > 0 && c.Seq <= changes[i-1].Seq) {
				t.Fatalf("read %d: change %d is %+v (after %+v)", reads, i, c, changes[max(i-1, 0)])
			}
			got = append(got, c.Deleted)
		}
		slices.Sort(got)
		if more || !slices.Equal(got, ids) {
			t.Fatalf("read %d: deletes of %v (more %v), want each of the %d trashed tasks once", reads, got, more, n)
		}
	}
}

// A token signed with the feed's pooled HMACs is the one a fresh HMAC signs,
// from any number of goroutines at once, and still checks the user.
func TestSyncTokenPooledMACs(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	fresh := syncTokens{key: key, retention: time.Hour, now: time.Now}
	pooled := fresh
	pooled.macs = newTokenMACs(key)
	issued := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				user := fmt.Sprintf("user-%d", g)
				tok := syncToken{Seq: int64(i), Issued: issued}
				text := pooled.encode(user, tok)
				if want := fresh.encode(user, tok); text != want {
					t.Errorf("pooled %s, fresh %s", text, want)
					return
				}
				if got, err := pooled.decode(user, text); err != nil || got.Seq != tok.Seq {
					t.Errorf("decode %s: %+v, %v", text, got, err)
					return
				}
				if _, err := pooled.decode(user+"x", text); err != errSyncTokenInvalid {
					t.Errorf("another user's token: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// The feed's answer is byte for byte what writeChanges writes for
// ChangesAfter's page: encoded straight from the tasks' rows when no
// tombstone falls within the page, merged with the tombstones when some do, with
// has_more true and false, and through the scanned path when the rows come
// in text.
func TestChangesAnswerEncoding(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	ctx := t.Context()
	q := a.store.Queries
	key, err := a.store.SyncTokenKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokens := syncTokens{key: key, retention: time.Hour, now: time.Now}
	var ids []int64
	for i := range 7 {
		body := fmt.Sprintf(`{"title":"t%d \"q\" é","description":"d\n%d","priority":"high","tags":["a","b%d"],"due_date":"2030-01-0%dT10:00:00Z"}`, i, i, i, i+1)
		ids = append(ids, a.createTask(t, tok, body).ID)
	}
	// A trashed task is a delete read from the tasks' rows.
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/tasks/%d", ids[1]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", ids[0]), `{"completed":true}`, bearer(tok)), http.StatusOK)

	// Text rows: a pool that speaks the simple protocol.
	cfg, err := pgxpool.ParseConfig(a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	textPool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer textPool.Close()
	textQ := q
	textQ.db = textPool

	type pathCase struct{ tombstones, more bool }
	seen := map[pathCase]bool{}
	check := func(since int64, limit int) {
		t.Helper()
		changes, more, err := q.ChangesAfter(ctx, user, since, limit)
		if err != nil {
			t.Fatal(err)
		}
		var tombstones int
		if err := q.db.QueryRow(ctx, `SELECT count(*) FROM task_tombstones WHERE user_id = $1 AND seq > $2`, user, since).Scan(&tombstones); err != nil {
			t.Fatal(err)
		}
		seen[pathCase{tombstones > 0, more}] = true
		name := fmt.Sprintf("since %d limit %d (%d tombstones after)", since, limit, tombstones)

		path := fmt.Sprintf("/api/me/changes?limit=%d&since=%s", limit, url.QueryEscape(tokens.encode(user, syncToken{Seq: since, Issued: time.Now()})))
		got := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK).Body
		var f feedJSON
		if err := json.Unmarshal(got, &f); err != nil {
			t.Fatalf("%s: %v: %s", name, err, got)
		}
		next, err := tokens.decode(user, f.Next)
		if err != nil {
			t.Fatalf("%s: next %v", name, err)
		}
		wantSeq := since
		if len(changes) > 0 {
			wantSeq = changes[len(changes)-1].Seq
		}
		if next.Seq != wantSeq || next.Full {
			t.Fatalf("%s: next is %+v, want position %d", name, next, wantSeq)
		}
		rec := httptest.NewRecorder()
		writeChanges(rec, httptest.NewRequest("GET", path, nil), changes, f.Next, more)
		if want := rec.Body.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("%s:\ngot  %s\nwant %s", name, got, want)
		}

		for _, dq := range []Queries{q, textQ} {
			page, err := dq.ChangesAfterJSON(ctx, user, since, limit, []byte("head:"))
			if err != nil {
				t.Fatal(err)
			}
			want := []byte("head:")
			for i, c := range changes {
				if i > 0 {
					want = append(want, ',')
				}
				want = appendChange(want, c)
			}
			if !bytes.Equal(page.Body, want) || page.Count != len(changes) || page.More != more || (len(changes) > 0 && page.Last != wantSeq) {
				t.Fatalf("%s, text %v:\ngot  %s (count %d, more %v, last %d)\nwant %s", name, dq.db == textPool, page.Body, page.Count, page.More, page.Last, want)
			}
		}
	}
	positions := func() []int64 {
		all, _, err := q.ChangesAfter(ctx, user, 0, maxChangesLimit)
		if err != nil {
			t.Fatal(err)
		}
		seqs := []int64{0}
		for _, c := range all {
			seqs = append(seqs, c.Seq)
		}
		return seqs
	}
	run := func() {
		seqs := positions()
		for _, since := range seqs {
			for limit := 1; limit <= len(seqs)+1; limit++ {
				check(since, limit)
			}
		}
	}
	run() // no tombstone anywhere
	if len(seen) != 2 || !seen[pathCase{false, true}] || !seen[pathCase{false, false}] {
		t.Fatalf("cases %v", seen)
	}
	// Tasks deleted for good, one of them first trashed earlier, then a
	// later change: tombstones before, between and after the tasks' rows.
	for _, i := range []int{1, 3, 5} {
		if i != 1 {
			mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/tasks/%d", ids[i]), nil, bearer(tok)), http.StatusNoContent)
		}
		mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", ids[i]), nil, bearer(tok)), http.StatusNoContent)
	}
	mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", ids[2]), `{"title":"later"}`, bearer(tok)), http.StatusOK)
	run()
	if len(seen) != 4 {
		t.Fatalf("cases %v", seen)
	}
}

// roundTrips counts the statements and batches a pool sends.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A page of the feed is one round trip unless a task deleted for good has
// its tombstone within the page: one past a full page is the next page's.
// A client catching up on a long feed with a purge near its end reads every
// page before it in one round trip, not two.
func TestChangesPageRereadsOnlyForTombstonesWithinIt(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	var ids []int64
	for i := range 6 {
		ids = append(ids, a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i)).ID)
	}
	// The first task goes to the trash and is purged: its tombstone takes the
	// position after the six creates (7); then two more changes (8, 9).
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/tasks/%d", ids[0]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", ids[0]), nil, bearer(tok)), http.StatusNoContent)
	for _, id := range ids[1:3] {
		mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", id), `{"title":"later"}`, bearer(tok)), http.StatusOK)
	}
	all, _, err := a.store.Queries.ChangesAfter(t.Context(), user, 0, maxChangesLimit)
	if err != nil {
		t.Fatal(err)
	}
	tombstone := int64(-1)
	for _, c := range all {
		if c.Deleted == ids[0] && c.Task == nil && c.JSON == nil {
			tombstone = c.Seq
		}
	}
	if tombstone < 0 {
		t.Fatalf("no tombstone for task %d in %+v", ids[0], all)
	}

	cfg, err := pgxpool.ParseConfig(a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	cfg.ConnConfig.Tracer = trips
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	q := a.store.Queries
	q.db = pool

	for _, c := range []struct {
		name  string
		limit int
		want  int64
	}{
		{"a full page that ends before the tombstone", 2, 1},
		{"a full page whose last change is just before the tombstone", 3, 1},
		{"a full page that holds the tombstone", 4, 2},
		{"the feed's last page, the tombstone in it", maxChangesLimit, 2},
	} {
		trips.n.Store(0)
		page, err := q.ChangesAfterJSON(t.Context(), user, 0, c.limit, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := trips.n.Load(); got != c.want {
			t.Errorf("%s (limit %d, tombstone at %d, page to %d): %d round trips, want %d", c.name, c.limit, tombstone, page.Last, got, c.want)
		}
		want := min(c.limit, len(all))
		if page.Count != want || page.More != (c.limit < len(all)) {
			t.Errorf("%s: %d changes (more %v), want %d of %d", c.name, page.Count, page.More, want, len(all))
		}
	}
}
