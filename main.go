// Command tasks-api is the task-management REST API behind a Next.js + Better
// Auth frontend: JWT-authenticated, multi-user, on PostgreSQL.
//
//	go run .                          serve on :8000 (embedded PostgreSQL when DATABASE_URL is unset)
//	go run . migrate [status]         apply migrations, or list applied and pending ones
//	go run . token --sub USER [--ttl 1h]   print an HS256 token for USER
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tasks-api/internal/localpg"
)

func main() {
	tuneGC(os.Getenv) // the process's own settings: here, not in run, which tests call
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
// took about a third of the service's CPU under load; at 400 it runs a quarter
// as often, and the soft limit keeps the heap well inside a small container.
// Measured in the README: peak RSS stays under 64 MB.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// database is where the service keeps its data: DATABASE_URL, or the embedded
// cluster under DataDir, which stop shuts down.
type database struct {
	url, migrationURL string
	pooled            bool
	local             *localpg.Server
}

func (d *database) stop(log *slog.Logger) {
	if d.local == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.local.Stop(ctx); err != nil {
		log.Error("stopping the local PostgreSQL", "error", err)
		return
	}
	log.Info("local PostgreSQL stopped")
}

func openDatabase(ctx context.Context, cfg Config, log *slog.Logger) (*database, error) {
	if cfg.DatabaseURL != "" {
		return &database{url: cfg.DatabaseURL, migrationURL: cfg.MigrationURL(),
			pooled: isPooledURL(cfg.DatabaseURL, cfg.DatabaseURLUnpooled)}, nil
	}
	pg, err := localpg.Start(ctx, filepath.Join(cfg.DataDir), localpg.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("no DATABASE_URL, so the embedded PostgreSQL was to be used, but: %w", err)
	}
	return &database{url: pg.URL(), migrationURL: pg.URL(), local: pg}, nil
}

func serve(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) error {
	devAuth := false
	if !cfg.AuthConfigured() {
		if cfg.DatabaseURL != "" {
			return errors.New("no way to verify tokens: set BETTER_AUTH_SECRET (the shared secret, for HS256 tokens) " +
				"and/or JWKS_URL (Better Auth's JWKS, e.g. https://app.example.com/api/auth/jwks). " +
				"With DATABASE_URL set the service will not start with a generated development secret")
		}
		secret, err := loadOrCreateDevSecret(cfg.DataDir)
		if err != nil {
			return err
		}
		cfg.AuthSecret, devAuth = secret, true
	}
	if len(cfg.AuthSecret) > 0 && len(cfg.AuthSecret) < 32 {
		log.Warn("BETTER_AUTH_SECRET is shorter than 32 bytes; use a long random secret in production")
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
	}
	limiter := newRateLimiter(cfg.RateLimit, time.Now)
	if limiter != nil {
		go every(bgCtx, time.Minute, func(context.Context) { limiter.sweep() })
	}
	store := newStore(pool, cfg.MaxTasksPerUser)
	go every(bgCtx, 10*time.Minute, func(ctx context.Context) { store.purgeExpiredKeys(ctx, log) })
	handler := newHandler(deps{
		log:      log,
		store:    store,
		verifier: newVerifier(verifierOptions{Secret: cfg.AuthSecret, JWKS: jwks, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, Leeway: cfg.JWTLeeway}),
		limiter:  limiter,
		ready:    readiness(pool, migrator),
		origins:  cfg.CORSOrigins,
		gate:     newDBGate(bgCtx, pool.Ping, log),
	})

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	srv := newHTTPServer(handler, defaultTimeouts, log, bgCtx)
	if cfg.DebugAddr != "" {
		stopDebug, err := serveDebug(cfg.DebugAddr, pool, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	port := ln.Addr().(*net.TCPAddr).Port
	log.Info("listening", "addr", ln.Addr().String())
	fmt.Fprintf(stdout, "Tasks API listening on http://localhost:%d (docs: http://localhost:%d/docs)\n", port, port)
	if devAuth {
		if err := printDevCurl(stdout, cfg, port); err != nil {
			return err
		}
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if db.local != nil {
		go func() {
			select {
			case <-db.local.Exited():
				log.Error("the local PostgreSQL exited while the service was running; see .data/postgres.log")
			case <-bgCtx.Done():
			}
		}()
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests")
	drainCtx, cancel := context.WithTimeout(context.Background(), defaultTimeouts.shutdown)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn("requests still running at the end of the drain were cut off", "error", err)
	}
	stopBackground()
	if jwks != nil {
		_ = jwks.Close(drainCtx)
	}
	log.Info("stopped serving")
	return nil
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

func migrateUp(ctx context.Context, m *Migrator, url string, log *slog.Logger) error {
	conn, err := connectMigrations(ctx, url, log)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n, err := m.Up(ctx, conn)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	log.Info("schema is current", "applied_now", n)
	return nil
}

func migrateCommand(ctx context.Context, cfg Config, log *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) > 1 || (len(args) == 1 && args[0] != "status") {
		return fmt.Errorf("usage: migrate [status]")
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.stop(log)
	m, err := newMigrator(log)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		if err := migrateUp(ctx, m, db.migrationURL, log); err != nil {
			return err
		}
	}
	conn, err := connectMigrations(ctx, db.migrationURL, log)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := m.Status(ctx, conn)
	if err != nil {
		return err
	}
	return printMigrationStatus(stdout, st)
}

func tokenCommand(cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "the user id (the token's sub)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" || len(*sub) > 255 {
		return errors.New("token: --sub USER is required (1..255 characters)")
	}
	if *ttl <= 0 {
		return errors.New("token: --ttl must be positive")
	}
	secret := cfg.AuthSecret
	if len(secret) == 0 {
		if cfg.DatabaseURL != "" {
			return errors.New("token: BETTER_AUTH_SECRET is not set, so there is no secret to sign with")
		}
		var err error
		if secret, err = loadOrCreateDevSecret(cfg.DataDir); err != nil {
			return err
		}
	}
	tok, err := mintToken(secret, *sub, cfg.JWTIssuer, cfg.JWTAudience, *ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// loadOrCreateDevSecret is the development signing secret of the embedded
// mode: created once, random, readable by this user only, reused afterwards.
func loadOrCreateDevSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "dev-secret")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the dev secret: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := []byte(hex.EncodeToString(raw))
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write the dev secret: %w", err)
	}
	return secret, nil
}

func printDevCurl(w io.Writer, cfg Config, port int) error {
	tok, err := mintToken(cfg.AuthSecret, "dev", cfg.JWTIssuer, cfg.JWTAudience, 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	base := fmt.Sprintf("http://localhost:%d", port)
	fmt.Fprintf(w, `
Development mode: embedded PostgreSQL in %s, tokens signed with the secret in %s.
A token for user "dev", valid for 24 hours. Try:

  curl -H 'Authorization: Bearer %s' %s/api/me/tasks

  curl -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"title":"Buy milk"}' %s/api/me/tasks

More tokens: go run . token --sub USER

`, filepath.Join(cfg.DataDir, "postgres"), filepath.Join(cfg.DataDir, "dev-secret"), tok, base, tok, base)
	return nil
}
