package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pendingKeys is how many keys wait in the search index's pending list
// (pgstattuple's pgstatginindex).
func pendingKeys(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(t.Context(), `SELECT pending_tuples FROM pgstatginindex('task_search_keys_gin')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// newSearchCleanDB is a migrated database with pgstattuple, to count the
// pending keys, and a store whose writes touch cleaner.
func newSearchCleanDB(t *testing.T, cleaner *searchIndexCleaner) (*pgxpool.Pool, *Store) {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), newDatabase(t, true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(t.Context(), `CREATE EXTENSION IF NOT EXISTS pgstattuple`); err != nil {
		t.Skipf("pgstattuple, to count the pending keys: %v", err)
	}
	return pool, newStore(pool, storeOptions{MaxTasksPerUser: 1000, OnChange: cleaner.touched})
}

// An instance that writes merges the search index's pending list soon
// after, in the background, so that no insert meets a full list and waits
// for the merge; an instance that does not write sends nothing.
func TestSearchIndexPendingListMergedAfterWrites(t *testing.T) {
	cleaner := newSearchIndexCleaner(20*time.Millisecond, discardLog())
	pool, store := newSearchCleanDB(t, cleaner)
	cleaner.clean = store.CleanSearchIndex
	ctx := t.Context()
	for i := range 30 {
		if _, err := store.CreateTask(ctx, "u1", newTask{Title: fmt.Sprintf("Prepare the quarterly report %d", i), Priority: "none", Tags: []string{}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := pendingKeys(t, pool); n == 0 {
		t.Fatal("no key pending after 30 creates; the test shows nothing")
	}
	cleaner.dirty.Store(false) // as if merged: no write since
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { cleaner.run(runCtx); close(done) }()
	defer func() { stop(); <-done }()

	time.Sleep(10 * cleaner.every)
	if n := pendingKeys(t, pool); n == 0 {
		t.Fatal("the list was merged with no write since the last merge")
	}
	if _, err := store.CreateTask(ctx, "u2", newTask{Title: "Water the plants", Priority: "none", Tags: []string{}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pendingKeys(t, pool) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still pending 5 s after a write", pendingKeys(t, pool))
		}
		time.Sleep(cleaner.every)
	}
	// What was merged is still found.
	page, err := store.ListTasks(ctx, listQuery{User: "u1", Q: "quarterly", Limit: 100, Sort: "created_at", Desc: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Tasks) != 30 {
		t.Fatalf("search after the merge found %d tasks, want 30", len(page.Tasks))
	}
}

// PostgreSQL lets only the index's owner merge its list: a service whose
// role does not own it leaves the merges to inserts, as before, and says so
// once, instead of failing every 100 ms.
func TestSearchIndexCleanerStopsWithoutOwnership(t *testing.T) {
	cleaner := newSearchIndexCleaner(20*time.Millisecond, nil)
	pool, store := newSearchCleanDB(t, cleaner)
	role := fmt.Sprintf("tasks_reader_%d", os.Getpid())
	for _, sql := range []string{
		"CREATE ROLE " + role + " LOGIN PASSWORD 'reader'",
		"GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + role,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Skipf("a second role: %v", err)
		}
	}
	t.Cleanup(func() {
		pool.Exec(context.Background(), "DROP OWNED BY "+role)
		pool.Exec(context.Background(), "DROP ROLE "+role)
	})
	u, err := url.Parse(pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "reader")
	params := u.Query() // a socket URL names its user here
	params.Del("user")
	params.Del("password")
	u.RawQuery = params.Encode()
	readerPool, err := pgxpool.New(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer readerPool.Close()
	reader := newStore(readerPool, storeOptions{})
	var logs bytes.Buffer
	cleaner.log = slog.New(slog.NewTextHandler(&logs, nil))
	cleaner.clean = reader.CleanSearchIndex

	if _, err := store.CreateTask(t.Context(), "u1", newTask{Title: "Call the plumber", Priority: "none", Tags: []string{}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cleaner.run(t.Context()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the cleaner goes on without the right to merge; log: %s", logs.String())
	}
	if got := logs.String(); strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, "does not own the index") {
		t.Fatalf("log: %s", got)
	}
	if pendingKeys(t, pool) == 0 {
		t.Fatal("the list was merged by a role that may not")
	}
}

// As serve wires them: the store is made to tell the cleaner of each change,
// then the sync feed is started on it. The feed must add itself, not take
// the cleaner's place (it did, and the service never merged in the
// background).
func TestSyncFeedKeepsWhomTheStoreTold(t *testing.T) {
	pool, err := openPool(t.Context(), newDatabase(t, true), poolOptions{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	told := make(chan string, 1)
	store := newStore(pool, storeOptions{OnChange: func(user string) { told <- user }})
	feed := startSyncFeed(t.Context(), store, "", time.Hour, time.Hour, discardLog())
	w := feed.notifier.Watch("alice")
	defer feed.notifier.Unwatch(w)
	store.changed("alice")
	select {
	case <-w.C():
	default:
		t.Fatal("the feed's waiter was not woken")
	}
	select {
	case u := <-told:
		if u != "alice" {
			t.Fatalf("told of %q", u)
		}
	default:
		t.Fatal("the store's own OnChange was not told: the feed replaced it")
	}
}
