package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// serverTimeouts bound what a client may take; tests shorten them.
type serverTimeouts struct {
	readHeader time.Duration // slowloris: headers must arrive promptly
	read       time.Duration // a slow body is cut off
	write      time.Duration
	idle       time.Duration
	shutdown   time.Duration // how long in-flight requests may finish
}

var defaultTimeouts = serverTimeouts{
	readHeader: 5 * time.Second,
	read:       15 * time.Second,
	write:      30 * time.Second,
	idle:       2 * time.Minute,
	shutdown:   15 * time.Second,
}

// newHTTPServer is the server every request goes through. Requests run under
// baseCtx, not the shutdown signal's context, so a shutdown lets them finish.
func newHTTPServer(h http.Handler, t serverTimeouts, log *slog.Logger, baseCtx context.Context) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.read,
		WriteTimeout:      t.write,
		IdleTimeout:       t.idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
}

// readiness: the database answers and every migration is applied.
func readiness(pool *pgxpool.Pool, m *Migrator) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("the database does not answer: %w", err)
		}
		current, err := m.Current(ctx, pool)
		if err != nil {
			return fmt.Errorf("could not read the schema version: %w", err)
		}
		if !current {
			return notReady("The database schema is not current: migrations are pending.")
		}
		return nil
	}
}

// every calls fn each interval until ctx ends: the background chores.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// shutdownPlan is how the server stops: begin (readiness fails, event
// streams end so their clients resume elsewhere), then drain (still serving,
// while a balancer notices), then stop accepting and let the requests in
// flight finish for at most finish.
type shutdownPlan struct {
	begin  func()
	drain  time.Duration
	finish time.Duration
}

// runServer serves on ln until ctx ends, then shuts down as plan says.
func runServer(ctx context.Context, srv *http.Server, ln net.Listener, plan shutdownPlan, log *slog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if plan.begin != nil {
		plan.begin()
	}
	if plan.drain > 0 {
		log.Info("shutting down: not ready any more, still serving", "for", plan.drain)
		time.Sleep(plan.drain)
	}
	log.Info("shutting down: draining in-flight requests")
	drainCtx, cancel := context.WithTimeout(context.Background(), plan.finish)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn("requests still running at the end of the drain were cut off", "error", err)
	}
	log.Info("stopped serving")
	return nil
}

// purgeTrash deletes for good what the trash may no longer keep, logging what it did.
func purgeTrash(ctx context.Context, store *Store, trashRetention, syncRetention time.Duration, log *slog.Logger) {
	if n, err := store.PurgeTrash(ctx, trashRetention, syncRetention); err != nil {
		log.Warn("purging the trash", "error", err)
	} else if n > 0 {
		log.Info("purged the trash", "tasks", n)
	}
}

// purgeEventRecords forgets expired tickets and dead instances' streams.
func purgeEventRecords(ctx context.Context, store *Store, log *slog.Logger) {
	if err := store.PurgeEventRecords(ctx); err != nil {
		log.Warn("purging event tickets and streams", "error", err)
	}
}

// purgeIdempotencyKeys is the periodic purge of expired keys, logging what it did.
func purgeIdempotencyKeys(ctx context.Context, store *Store, log *slog.Logger) {
	if n, err := store.PurgeIdempotencyKeys(ctx); err != nil {
		log.Warn("purging expired idempotency keys", "error", err)
	} else if n > 0 {
		log.Info("purged expired idempotency keys", "count", n)
	}
}
