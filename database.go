package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"tasks-api/internal/localpg"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reaching the database: the store and its transactions, the pool, the
// migrations' connection, and what a failed statement means.

// database is where the service keeps its data: DATABASE_URL, or the embedded
// cluster under DataDir, which stop shuts down.
type database struct {
	url, migrationURL string
	listenURL         string // a direct connection for LISTEN; "": none (only a pooler)
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

// watchLocalPostgres logs when the embedded PostgreSQL exits under the service.
func watchLocalPostgres(ctx context.Context, db *database, log *slog.Logger) {
	select {
	case <-db.local.Exited():
		log.Error("the local PostgreSQL exited while the service was running; see .data/postgres.log")
	case <-ctx.Done():
	}
}

func openDatabase(ctx context.Context, cfg Config, log *slog.Logger) (*database, error) {
	if cfg.DatabaseURL != "" {
		db := &database{url: cfg.DatabaseURL, migrationURL: cfg.MigrationURL(),
			pooled: isPooledURL(cfg.DatabaseURL, cfg.DatabaseURLUnpooled)}
		if !db.pooled || cfg.DatabaseURLUnpooled != "" {
			db.listenURL = cfg.MigrationURL() // a transaction-mode pooler drops LISTEN
		}
		return db, nil
	}
	pg, err := localpg.Start(ctx, filepath.Join(cfg.DataDir), localpg.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("no DATABASE_URL, so the embedded PostgreSQL was to be used, but: %w", err)
	}
	return &database{url: pg.URL(), migrationURL: pg.URL(), listenURL: pg.URL(), local: pg}, nil
}

// Store runs every query of the service. Its Queries run on the pool, one
// statement at a time; InTx runs several in one transaction. Each query names
// the user in its WHERE clause, so another user's task is simply not found.
type Store struct {
	Queries
	pool     *pgxpool.Pool
	txBounds string // the BEGIN that opens every transaction, with its timeouts
}

// Queries are the service's statements, on the pool or in a transaction.
type Queries struct {
	store    *Store // opens transactions
	inTx     bool
	db       dbtx
	maxTasks int32             // per user
	onChange func(user string) // told of a user's changed tasks once they are committed; nil: nobody
	now      func() time.Time  // the clock of the domain's time-dependent rules (next occurrences)
}

// changed tells whoever waits for the user's changes (long polls, event
// streams) that its tasks changed; in a transaction, once it commits.
func (q Queries) changed(user string) {
	if q.onChange != nil {
		q.onChange(user)
	}
}

// dbtx is a pool or a transaction.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// storeOptions bound the store's work and its users.
type storeOptions struct {
	MaxTasksPerUser  int               // 0: no quota
	OnChange         func(user string) // told of each user whose tasks changed, after the commit
	StatementTimeout time.Duration     // per statement, in every transaction; 0: the server's
	LockTimeout      time.Duration     // per lock wait, in every transaction; 0: the server's
	Now              func() time.Time  // the domain's clock; nil: time.Now
}

func newStore(pool *pgxpool.Pool, o storeOptions) *Store {
	quota := int32(math.MaxInt32)
	if o.MaxTasksPerUser > 0 {
		quota = int32(o.MaxTasksPerUser)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{Queries: Queries{maxTasks: quota, onChange: o.OnChange, now: now}, pool: pool, txBounds: beginSQL(o.StatementTimeout, o.LockTimeout)}
	if pool != nil {
		s.db = pool
	}
	s.store = s
	return s
}

// beginSQL opens a transaction and bounds its statements and lock waits with
// SET LOCAL, in the same round trip: unlike a connection setting, this holds
// behind a transaction-mode pooler too, where every transaction may run on
// another server connection.
func beginSQL(statement, lock time.Duration) string {
	sql := "BEGIN"
	if statement > 0 {
		sql += fmt.Sprintf("; SET LOCAL statement_timeout = %d", statement.Milliseconds())
	}
	if lock > 0 {
		sql += fmt.Sprintf("; SET LOCAL lock_timeout = %d", lock.Milliseconds())
	}
	return sql
}

// rollbackTimeout bounds a rollback. It runs even when the request's context
// has ended (the reason to roll back may be that it ended), so it cannot take
// that context's bound; and without one, a rollback sent to a database that
// fell silent waited for TCP to give up (minutes), holding its request and a
// pooled connection, which pool.Close then waited for at shutdown.
const rollbackTimeout = 5 * time.Second

// rollback ends tx within rollbackTimeout; on a timeout pgx closes the
// connection, and the pool drops it.
func rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx) // a failed rollback closes the connection: nothing is left to undo
}

// InTx runs fn in a transaction, which commits when fn returns nil and rolls
// back otherwise. Queries already in a transaction run fn in it.
func (s *Store) InTx(ctx context.Context, fn func(Queries) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: s.txBounds})
	if err != nil {
		return dbFail("begin", err)
	}
	committing := false
	defer func() {
		if !committing {
			rollback(ctx, tx)
		}
	}()
	q := s.Queries
	q.db, q.inTx = tx, true
	var changedUsers []string
	q.onChange = func(user string) { changedUsers = append(changedUsers, user) }
	if err := fn(q); err != nil {
		return err
	}
	committing = true // Commit ends the transaction, failed or not
	if err := tx.Commit(ctx); err != nil {
		return dbFail("commit", err)
	}
	for _, user := range changedUsers {
		s.changed(user)
	}
	return nil
}

// InTx runs fn in a transaction: the one q is in, or a new one.
func (q Queries) InTx(ctx context.Context, fn func(Queries) error) error {
	if q.inTx {
		return fn(q)
	}
	return q.store.InTx(ctx, fn)
}

// dbFail wraps a failed statement's error with what was being done, and says
// what it means for the client: a database that cannot be reached, is
// overloaded or timed out is CodeUnavailable (retry shortly); a cancelled
// context is CodeCanceled; anything else stays an internal error.
func dbFail(op string, err error) error {
	wrapped := fmt.Errorf("%s: %w", op, err)
	if _, ok := errors.AsType[*Error](err); ok {
		return wrapped
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCanceled, Message: "The request was cancelled.", Err: wrapped}
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		e := errDatabaseUnavailable(wrapped)
		e.Message = "The database did not answer in time; retry shortly."
		return e
	case unreachable(err):
		return errDatabaseUnavailable(wrapped)
	}
	return wrapped
}

// unreachable reports whether err says the database cannot serve now: no
// connection, a lost one, a server shutting down or starting, too many
// connections, or a statement or lock wait over its timeout.
func unreachable(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	if pgconn.SafeToRetry(err) || errors.Is(err, pgx.ErrTxClosed) || strings.Contains(err.Error(), "closed pool") ||
		errors.Is(err, io.ErrUnexpectedEOF) { // the server went away mid-statement (crash, immediate shutdown)
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutting down, crashed, starting
			pgErr.Code == "53300", // too many connections
			pgErr.Code == "57014", // statement timeout
			pgErr.Code == "55P03": // lock timeout
			return true
		}
	}
	return false
}

// poolOptions say how to reach the database.
type poolOptions struct {
	// Pooled: DATABASE_URL goes through a transaction-mode pooler (PgBouncer,
	// Neon's -pooler host), where a named prepared statement may not exist on
	// the next transaction's server connection.
	Pooled bool
}

// isPooledURL guesses whether url goes through a transaction-mode pooler: a
// Neon "-pooler" host, or a URL given together with a different unpooled one.
func isPooledURL(dbURL, unpooled string) bool {
	if unpooled != "" && unpooled != dbURL {
		return true
	}
	if u, err := url.Parse(dbURL); err == nil {
		return strings.Contains(u.Hostname(), "-pooler")
	}
	return false
}

// openPool creates the pool and waits until the database answers, retrying
// for up to 30s (a suspended Neon compute takes a few seconds to wake).
func openPool(ctx context.Context, dbURL string, o poolOptions, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	explicitMode := strings.Contains(dbURL, "default_query_exec_mode")
	if o.Pooled && !explicitMode {
		// Statement descriptions are cached per connection, but every query is
		// sent as an unnamed statement: one round trip, and nothing that a
		// pooler could route to a server connection that never saw it.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
	if !o.Pooled {
		// Bound every statement's work on the server, whatever the client does.
		// A pooler would refuse this startup parameter; there the request's
		// deadline bounds it instead: when a query's context ends, pgx closes
		// the connection, and closing sends the server a cancel request first,
		// so a statement waiting for a lock does not linger
		// (TestAbandonedRequestsAreCancelledOnTheServer).
		if _, ok := cfg.ConnConfig.RuntimeParams["statement_timeout"]; !ok {
			cfg.ConnConfig.RuntimeParams["statement_timeout"] = "10s"
		}
	}
	if !strings.Contains(dbURL, "pool_max_conns") {
		// pgx's default is one connection per core (at least 4). 4 per core
		// served reads and writes faster (more commits share an fsync; bench
		// -pool, docs/performance.md); more than that only added latency.
		// Capped so a big machine does not exhaust a small server.
		cfg.MaxConns = int32(min(max(4*runtime.GOMAXPROCS(0), 4), 32))
	}
	if !strings.Contains(dbURL, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = 5 * time.Minute // Neon's pooler drops idle clients; do it first
	}
	if !strings.Contains(dbURL, "pool_ping_timeout") {
		// pgxpool pings a connection idle for a second before handing it out,
		// with the acquirer's deadline, or none: a background chore's ping
		// through a pooler whose server is gone then held its connection for
		// a minute, and pool.Close with it (seen in CI behind pgbouncer, a
		// shutdown that did not return).
		cfg.PingTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	if err := retryConnect(ctx, "database", log, pool.Ping); err != nil {
		pool.Close()
		return nil, err
	}
	log.Info("connected to the database", "host", cfg.ConnConfig.Host, "database", cfg.ConnConfig.Database,
		"max_conns", cfg.MaxConns, "exec_mode", cfg.ConnConfig.DefaultQueryExecMode.String())
	return pool, nil
}

// connectMigrations opens a single connection for migrations, over the
// unpooled URL when there is one.
func connectMigrations(ctx context.Context, dbURL string, log *slog.Logger) (*pgx.Conn, error) {
	// pgxpool's parser takes the pool_* parameters out of the URL; pgx's own
	// would send them to the server as settings, which it refuses (FATAL:
	// unrecognized configuration parameter "pool_max_conns").
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	var conn *pgx.Conn
	err = retryConnect(ctx, "database (migrations)", log, func(ctx context.Context) error {
		c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
		if err == nil {
			conn = c
		}
		return err
	})
	return conn, err
}

// retryConnect calls connect until it succeeds, backing off exponentially with
// jitter, for at most 30 seconds, logging every failed attempt.
func retryConnect(ctx context.Context, what string, log *slog.Logger, connect func(context.Context) error) error {
	const total = 30 * time.Second
	deadline := time.Now().Add(total)
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := connect(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("%s did not answer within %s: %w", what, total, err)
		}
		jittered := delay/2 + rand.N(delay)
		log.Warn("could not connect; retrying", "to", what, "attempt", attempt, "retry_in", jittered.Round(time.Millisecond), "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jittered):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
