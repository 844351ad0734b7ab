package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The search index (task_search_keys_gin) takes new keys into a pending
// list, which PostgreSQL merges into the index when the list outgrows
// gin_pending_list_limit (256 kB), inside the insert that finds it full: a
// create or rename every few hundred waited 10-50 ms for the merge of
// everyone's keys, and at a steady load that set the writes' p99. So each
// instance merges the list itself, in the background, shortly after its
// own writes: the list then rarely fills, and the merges run beside the
// requests, not in them. An instance with no writes sends nothing (a Neon
// compute may then scale to zero).

// searchIndexCleanEvery is how often an instance that wrote merges the list.
const searchIndexCleanEvery = 100 * time.Millisecond

// searchIndexCleaner merges the search index's pending list after writes.
type searchIndexCleaner struct {
	clean func(ctx context.Context) error // Store.CleanSearchIndex
	every time.Duration
	log   *slog.Logger
	dirty atomic.Bool   // a write since the last merge
	kick  chan struct{} // a write since run last waited
}

func newSearchIndexCleaner(every time.Duration, log *slog.Logger) *searchIndexCleaner {
	return &searchIndexCleaner{every: every, log: log, kick: make(chan struct{}, 1)}
}

// touched records a write; OnChange calls it for each changed user.
func (c *searchIndexCleaner) touched(string) {
	c.dirty.Store(true)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run merges the list c.every after a write, and then at most every c.every
// while writes go on, until ctx ends; with no write it waits, without a
// timer. A role that does not own the index may not merge it (42501): then
// inserts go on merging it as before, and run stops, saying so once.
func (c *searchIndexCleaner) run(ctx context.Context) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.every):
		}
		if !c.dirty.Swap(false) {
			continue
		}
		err := c.clean(ctx)
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
			c.log.Warn("the search index's pending list is left to inserts: the database role does not own the index",
				"error", err)
			return
		}
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			c.log.Warn("merging the search index's pending list failed; retrying after the next write", "error", err)
			failing = true
		case err == nil && failing:
			c.log.Info("merging the search index's pending list works again")
			failing = false
		}
	}
}
