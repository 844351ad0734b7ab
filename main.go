// Command tasks-api is the task-management REST API behind a Next.js + Better
// Auth frontend: JWT-authenticated, multi-user, on PostgreSQL.
//
//	go run .                          serve on :8000 (embedded PostgreSQL when DATABASE_URL is unset)
//	go run . migrate [status]         apply migrations, or list applied and pending ones
//	go run . token --sub USER [--ttl 1h]   print an HS256 token for USER
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The process's own settings: here, not in run, which tests call.
	if ownLimit := tuneGC(os.Getenv); ownLimit {
		go adjustMemoryLimit(ctx, memoryLimitEvery, runtimeFootprint, debug.SetMemoryLimit)
	}
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// run is the whole program; everything that touches the process comes in as
// an argument, so tests can run it. It returns when ctx ends (after a
// graceful shutdown) or on a fatal error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	dotenv, err := readDotenv(".env")
	if err != nil {
		return err
	}
	cfg, err := loadConfig(getenv, dotenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	logs := newLogBuffer(stderr, 100*time.Millisecond)
	defer logs.Close()
	log := newLogger(cfg, logs)

	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "", "serve":
		return serve(ctx, cfg, log, stdout)
	case "migrate":
		return migrateCommand(ctx, cfg, log, args, stdout)
	case "token":
		return tokenCommand(cfg, args, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

const usage = `usage:
  tasks-api                               serve the API (PORT, default 8000)
  tasks-api migrate                       apply pending migrations
  tasks-api migrate status                list applied and pending migrations
  tasks-api token --sub USER [--ttl 1h]   print an HS256 token signed with the configured secret
The environment variables are listed in the README.
`

// tuneGC trades memory for CPU, unless GOGC or GOMEMLIMIT say otherwise. With
// Go's default (GOGC=100) the collector ran every few dozen list requests and
// took a large share of the service's CPU under load; at 400 it runs a quarter
// as often, and the soft limit keeps the heap well inside a small container
// (docs/performance.md has the measurements). It reports whether it set the
// limit, which adjustMemoryLimit then keeps above what stays live.
func tuneGC(getenv func(string) string) (ownLimit bool) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") != "" {
		return false
	}
	debug.SetMemoryLimit(baseMemoryLimit)
	return true
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	return slog.New(newLineHandler(w, cfg.LogFormat == "json", &slog.HandlerOptions{Level: cfg.LogLevel}))
}

// serve runs the API until ctx ends: the database (migrated), the background
// chores, the handler and the HTTP server, then a graceful shutdown.
func serve(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	cfg, devAuth, err := resolveAuth(cfg, log)
	if err != nil {
		return err
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.stop(log)
	migrator, err := newMigrator(log)
	if err != nil {
		return err
	}
	if cfg.MigrateOnStart {
		if err := migrateUp(ctx, migrator, db.migrationURL, log); err != nil {
			return err
		}
	}
	pool, err := openPool(ctx, db.url, poolOptions{Pooled: db.pooled}, log)
	if err != nil {
		return err
	}
	defer pool.Close()

	// Background work (JWKS refresh, sweeping) lives until the server has drained.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var jwks *jwksKeys
	if cfg.JWKSURL != "" {
		if jwks, err = newJWKSKeys(bgCtx, cfg.JWKSURL, 5*time.Minute, 10*time.Second, log); err != nil {
			return err
		}
		defer jwks.Close(context.WithoutCancel(ctx))
	}
	limiter := newRateLimiter(cfg.RateLimit, time.Now)
	if limiter != nil {
		go every(bgCtx, time.Minute, func(context.Context) { limiter.sweep() })
	}
	cleaner := newSearchIndexCleaner(searchIndexCleanEvery, log)
	store := newStore(pool, storeOptions{MaxTasksPerUser: cfg.MaxTasksPerUser,
		StatementTimeout: cfg.StatementTimeout, LockTimeout: cfg.LockTimeout, OnChange: cleaner.touched})
	cleaner.clean = store.CleanSearchIndex
	go cleaner.run(bgCtx)
	feed := startSyncFeed(bgCtx, store, db.listenURL, cfg.ChangesPollInterval, cfg.SyncRetention, log)
	events := newEventStreams(store, feed, eventOptions{MaxAge: cfg.SSEMaxAge, Heartbeat: cfg.SSEHeartbeat,
		MaxPerUser: cfg.SSEMaxStreams}, log)
	go events.keepAlive(bgCtx)
	go every(bgCtx, 10*time.Minute, func(ctx context.Context) {
		purgeIdempotencyKeys(ctx, store, log)
		purgeTrash(ctx, store, cfg.TrashRetention, cfg.SyncRetention, log)
		purgeEventRecords(ctx, store, log)
		purgeReminders(ctx, store, log)
	})
	var draining atomic.Bool
	var m *metrics
	if cfg.MetricsAddr != "" {
		m = newMetrics(pool, events)
		stopMetrics, err := serveMetrics(cfg.MetricsAddr, m, log)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		defer stopMetrics()
	}
	reminders := newReminderScheduler(store, time.Now, log)
	reminders.onFired = m.countRemindersFired
	reminders.recheck = listenOrPoll(feed.notifier)
	feed.notifier.OnAnyChange(reminders.Poke)
	go reminders.Run(bgCtx)
	if db.local != nil {
		go watchLocalPostgres(bgCtx, db, log)
	}
	handler := newHandler(deps{
		log:   log,
		store: store,
		verifier: newVerifier(verifierOptions{Secret: cfg.AuthSecret, JWKS: jwks,
			Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Leeway: cfg.JWTLeeway}),
		limiter:  limiter,
		ready:    readiness(pool, migrator),
		origins:  cfg.CORSOrigins,
		gate:     newDBGate(bgCtx, pool.Ping, log),
		feed:     feed,
		events:   events,
		draining: draining.Load,
		metrics:  m,
		mcp:      mcpOptions{PublicURL: cfg.PublicURL, AuthServer: cfg.JWTIssuer},
	})
	if cfg.DebugAddr != "" {
		stopDebug, err := serveDebug(cfg.DebugAddr, pool, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	log.Info("listening", "addr", ln.Addr().String())
	fmt.Fprintf(stdout, "Tasks API listening on http://localhost:%d (docs: http://localhost:%d/docs)\n", port, port)
	if devAuth {
		if err := printDevCurl(stdout, cfg, port); err != nil {
			return err
		}
	}
	srv := newHTTPServer(handler, defaultTimeouts, log, bgCtx)
	return runServer(ctx, srv, ln, shutdownPlan{drain: cfg.ShutdownDrain, finish: defaultTimeouts.shutdown,
		begin: func() { draining.Store(true); events.Close() }}, log)
}
