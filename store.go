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
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Task is a task as stored and as sent to clients.
type Task struct {
	ID          int64
	UserID      string
	Title       string
	Description string
	Completed   bool
	CompletedAt *time.Time
	Priority    string
	Tags        []string
	DueDate     *time.Time
	Version     int32
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Errors the handlers turn into responses.
var (
	errTaskNotFound    = errors.New("task not found")
	errVersionMismatch = errors.New("task version does not match If-Match")
	errQuotaExceeded   = errors.New("task quota exceeded")
)

// Store runs every query of the service. Each query names the user in its
// WHERE clause, so another user's task is simply not found.
type Store struct {
	pool     *pgxpool.Pool
	maxTasks int32 // per user
}

func newStore(pool *pgxpool.Pool, maxTasksPerUser int) *Store {
	quota := int32(math.MaxInt32)
	if maxTasksPerUser > 0 {
		quota = int32(maxTasksPerUser)
	}
	return &Store{pool: pool, maxTasks: quota}
}

// dbtx is a pool or a transaction.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type txKey struct{}

// db is the transaction the request runs in (see the idempotency middleware),
// or the pool: one statement, one round trip, no transaction.
func (s *Store) db(ctx context.Context) dbtx {
	if tx, ok := ctx.Value(txKey{}).(pgx.Tx); ok {
		return tx
	}
	return s.pool
}

// taskColumns are read back by every statement. user_id is not among them:
// every statement names the user, so the caller already knows it.
const taskColumns = `id, title, description, completed, completed_at, priority, tags, due_date, version, created_at, updated_at`

// scanTask reads taskColumns into t, which belongs to userID.
func scanTask(row pgx.Row, t *Task, userID string) error {
	t.UserID = userID
	return row.Scan(&t.ID, &t.Title, &t.Description, &t.Completed, &t.CompletedAt,
		&t.Priority, &t.Tags, &t.DueDate, &t.Version, &t.CreatedAt, &t.UpdatedAt)
}

// newTask is a validated create request.
type newTask struct {
	Title       string
	Description string
	Completed   bool
	Priority    string
	Tags        []string
	DueDate     *time.Time
}

// sqlCreateTask takes a slot in the user's quota and inserts the task in one
// statement. The upsert locks the user's count row, and its WHERE is checked
// against the latest count, so concurrent creates at the limit cannot
// overshoot it; with no slot, nothing is inserted.
const sqlCreateTask = `
WITH slot AS (
    INSERT INTO task_counts AS c (user_id, tasks) VALUES ($1, 1)
    ON CONFLICT (user_id) DO UPDATE SET tasks = c.tasks + 1
    WHERE c.tasks < $8
    RETURNING 1
)
INSERT INTO tasks (user_id, title, description, completed, completed_at, priority, tags, due_date)
SELECT $1, $2, $3, $4, CASE WHEN $4 THEN now() END, $5, $6, $7 FROM slot
RETURNING ` + taskColumns

func (s *Store) CreateTask(ctx context.Context, userID string, in newTask) (Task, error) {
	var t Task
	err := scanTask(s.db(ctx).QueryRow(ctx, sqlCreateTask,
		userID, in.Title, in.Description, in.Completed, in.Priority, in.Tags, in.DueDate, s.maxTasks), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errQuotaExceeded
	}
	if err != nil {
		return t, fmt.Errorf("create task: %w", err)
	}
	return t, nil
}

const sqlGetTask = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1 AND user_id = $2`

func (s *Store) GetTask(ctx context.Context, userID string, id int64) (Task, error) {
	var t Task
	err := scanTask(s.db(ctx).QueryRow(ctx, sqlGetTask, id, userID), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, errTaskNotFound
	}
	if err != nil {
		return t, fmt.Errorf("get task %d: %w", id, err)
	}
	return t, nil
}

// taskChanges are the fields an update gives; nil (and !DueSet) keep a value.
type taskChanges struct {
	Title       *string
	Description *string
	Completed   *bool
	Priority    *string
	Tags        []string // nil: keep; empty: clear
	DueSet      bool
	DueDate     *time.Time
}

// ifMatch is a parsed If-Match header: nil matches any version; otherwise the
// task's version must be one of these (an empty list matches none).
type ifMatch []int32

// sqlUpdateTask writes the given fields only if the version matches, in one
// statement. The tasks_before_update trigger bumps version and updated_at
// when something changed, and keeps completed_at right.
const sqlUpdateTask = `
UPDATE tasks SET
    title       = coalesce($3, title),
    description = coalesce($4, description),
    completed   = coalesce($5, completed),
    priority    = coalesce($6, priority),
    tags        = coalesce($7, tags),
    due_date    = CASE WHEN $8 THEN $9 ELSE due_date END
WHERE id = $1 AND user_id = $2 AND ($10::integer[] IS NULL OR version = ANY ($10))
RETURNING ` + taskColumns

func (s *Store) UpdateTask(ctx context.Context, userID string, id int64, c taskChanges, match ifMatch) (Task, error) {
	var t Task
	err := scanTask(s.db(ctx).QueryRow(ctx, sqlUpdateTask, id, userID,
		c.Title, c.Description, c.Completed, c.Priority, c.Tags, c.DueSet, c.DueDate, []int32(match)), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, s.whyNoRow(ctx, userID, id)
	}
	if err != nil {
		return t, fmt.Errorf("update task %d: %w", id, err)
	}
	return t, nil
}

// sqlSetCompleted sets completed, or toggles it when $3 is null.
const sqlSetCompleted = `
UPDATE tasks SET completed = coalesce($3, NOT completed)
WHERE id = $1 AND user_id = $2 AND ($4::integer[] IS NULL OR version = ANY ($4))
RETURNING ` + taskColumns

func (s *Store) SetCompleted(ctx context.Context, userID string, id int64, completed *bool, match ifMatch) (Task, error) {
	var t Task
	err := scanTask(s.db(ctx).QueryRow(ctx, sqlSetCompleted, id, userID, completed, []int32(match)), &t, userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, s.whyNoRow(ctx, userID, id)
	}
	if err != nil {
		return t, fmt.Errorf("complete task %d: %w", id, err)
	}
	return t, nil
}

// sqlDeleteTask deletes the task if the version matches and gives back its
// quota slot, in one statement.
const sqlDeleteTask = `
WITH gone AS (
    DELETE FROM tasks
    WHERE id = $1 AND user_id = $2 AND ($3::integer[] IS NULL OR version = ANY ($3))
    RETURNING user_id
), released AS (
    UPDATE task_counts SET tasks = tasks - 1
    WHERE user_id = $2 AND EXISTS (SELECT FROM gone)
)
SELECT count(*) FROM gone`

func (s *Store) DeleteTask(ctx context.Context, userID string, id int64, match ifMatch) error {
	var n int
	if err := s.db(ctx).QueryRow(ctx, sqlDeleteTask, id, userID, []int32(match)).Scan(&n); err != nil {
		return fmt.Errorf("delete task %d: %w", id, err)
	}
	if n == 0 {
		return s.whyNoRow(ctx, userID, id)
	}
	return nil
}

// whyNoRow tells a conditional write that matched no row apart: the task is
// not the user's (404) or its version did not match (412). It runs only on
// that failure path.
func (s *Store) whyNoRow(ctx context.Context, userID string, id int64) error {
	var exists bool
	if err := s.db(ctx).QueryRow(ctx, `SELECT EXISTS (SELECT FROM tasks WHERE id = $1 AND user_id = $2)`, id, userID).Scan(&exists); err != nil {
		return fmt.Errorf("check task %d: %w", id, err)
	}
	if exists {
		return errVersionMismatch
	}
	return errTaskNotFound
}

// TaskStats are the counts of GET /tasks/stats.
type TaskStats struct {
	Total, Completed, Pending, Overdue int64
}

const sqlTaskStats = `
SELECT count(*),
       count(*) FILTER (WHERE completed),
       count(*) FILTER (WHERE NOT completed AND due_date < now())
FROM tasks WHERE user_id = $1`

func (s *Store) Stats(ctx context.Context, userID string) (TaskStats, error) {
	var st TaskStats
	if err := s.db(ctx).QueryRow(ctx, sqlTaskStats, userID).Scan(&st.Total, &st.Completed, &st.Overdue); err != nil {
		return st, fmt.Errorf("task stats: %w", err)
	}
	st.Pending = st.Total - st.Completed
	return st, nil
}

// ---- listing --------------------------------------------------------------

// listQuery is a validated GET /tasks query.
type listQuery struct {
	User      string
	Completed *bool // status: nil for all
	Priority  string
	Tag       string
	Q         string
	DueBefore *time.Time
	DueAfter  *time.Time
	Sort      string
	Desc      bool
	Limit     int
	After     *cursor // the last task of the previous page
}

// sortKeys are the SQL expressions each sort orders by (then by id), chosen
// from this table only. Each matches an index of schema.sql exactly.
var sortKeys = map[string]struct{ asc, desc string }{
	"created_at": {"created_at", "created_at"},
	"updated_at": {"updated_at", "updated_at"},
	"priority":   {"priority_rank", "priority_rank"},
	"title":      {`(lower(title) COLLATE "C")`, `(lower(title) COLLATE "C")`},
	"due_date":   {"coalesce(due_date, 'infinity')", "coalesce(due_date, '-infinity')"},
}

// listSQL assembles the listing query from fixed fragments; values from the
// request only ever travel as parameters.
func listSQL(q listQuery) (string, []any) {
	var sb strings.Builder
	args := []any{}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	sb.WriteString("SELECT " + taskColumns + " FROM tasks WHERE user_id = ")
	sb.WriteString(arg(q.User))
	if q.Completed != nil {
		if *q.Completed {
			sb.WriteString(" AND completed")
		} else {
			sb.WriteString(" AND NOT completed")
		}
	}
	if q.Priority != "" {
		sb.WriteString(" AND priority = " + arg(q.Priority))
	}
	if q.Tag != "" {
		sb.WriteString(" AND tags @> ARRAY[" + arg(q.Tag) + "::text]")
	}
	if q.Q != "" {
		p := arg("%" + escapeLike(q.Q) + "%")
		sb.WriteString(" AND (title ILIKE " + p + " OR description ILIKE " + p + ")")
	}
	if q.DueBefore != nil {
		sb.WriteString(" AND due_date < " + arg(*q.DueBefore))
	}
	if q.DueAfter != nil {
		sb.WriteString(" AND due_date > " + arg(*q.DueAfter))
	}

	key, dir, cmp := sortKeys[q.Sort].asc, " ASC", " > "
	if q.Desc {
		key, dir, cmp = sortKeys[q.Sort].desc, " DESC", " < "
	}
	if c := q.After; c != nil {
		var k string
		switch q.Sort {
		case "title":
			k = `lower(` + arg(c.Title) + `::text) COLLATE "C"`
		case "priority":
			k = arg(int16(c.Rank))
		case "due_date":
			k = arg(c.dueKey(q.Desc)) + "::timestamptz"
		default:
			k = arg(c.Time)
		}
		sb.WriteString(" AND (" + key + ", id)" + cmp + "(" + k + ", " + arg(c.ID) + ")")
	}
	sb.WriteString(" ORDER BY " + key + dir + ", id" + dir + " LIMIT " + arg(q.Limit+1))
	return sb.String(), args
}

// ListTasks returns up to q.Limit tasks, and whether more follow.
func (s *Store) ListTasks(ctx context.Context, q listQuery) ([]Task, bool, error) {
	sql, args := listSQL(q)
	if q.filtered() {
		// A filter's selectivity varies wildly between users and values, but a
		// prepared statement's generic plan (PostgreSQL's choice from its sixth
		// execution on) assumes an average user of ~100 tasks: for a user with
		// 20,000 it reads them all to find a page (q=<common word>: 170 ms
		// instead of 0.5 ms; tag: 21 ms instead of 0.4 ms; bench -scale). An
		// unnamed statement is planned for its values every time, still in a
		// single round trip.
		args = append([]any{pgx.QueryExecModeCacheDescribe}, args...)
	}
	rows, err := s.db(ctx).Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	tasks := make([]Task, 0, min(q.Limit+1, 128))
	for rows.Next() {
		tasks = append(tasks, Task{})
		if err := scanTask(rows, &tasks[len(tasks)-1], q.User); err != nil {
			return nil, false, fmt.Errorf("list tasks: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list tasks: %w", err)
	}
	if len(tasks) > q.Limit {
		return tasks[:q.Limit], true, nil
	}
	return tasks, false, nil
}

// filtered reports whether the listing narrows the user's tasks by more than the page.
func (q listQuery) filtered() bool {
	return q.Completed != nil || q.Priority != "" || q.Tag != "" || q.Q != "" || q.DueBefore != nil || q.DueAfter != nil
}

// escapeLike makes q match literally inside an ILIKE pattern (escape: \).
func escapeLike(q string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q)
}

// ---- connecting -----------------------------------------------------------

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
		// pgx's default is one connection per core (at least 4). Measured on 2
		// cores, 4 per core served reads 10-35% and writes 15-25% faster (more
		// commits share an fsync; bench -pool); more than that only added
		// latency. Capped so a big machine does not exhaust a small server.
		cfg.MaxConns = int32(min(max(4*runtime.GOMAXPROCS(0), 4), 32))
	}
	if !strings.Contains(dbURL, "pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = 5 * time.Minute // Neon's pooler drops idle clients; do it first
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

// errDatabaseUnavailable is the 503 for a database that cannot be reached,
// which the client may retry shortly.
func errDatabaseUnavailable(cause error) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: problemDBUnavailable, RetryAfter: 1,
		Detail: "The database is not available right now; retry shortly.", cause: cause}
}

// classifyInternal gives a failed request's underlying error its HTTP
// meaning: an unreachable or overloaded database is a 503 the client may
// retry; anything else is a 500.
func classifyInternal(ctx context.Context, err error) *apiError {
	unavailable := errDatabaseUnavailable(err)
	var pgErr *pgconn.PgError
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return &apiError{Status: http.StatusServiceUnavailable, Detail: "The request was cancelled.", cause: err}
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		unavailable.Detail = "The database did not answer in time; retry shortly."
		return unavailable
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.SafeToRetry(err),
		errors.Is(err, pgx.ErrTxClosed), strings.Contains(err.Error(), "closed pool"),
		errors.Is(err, io.ErrUnexpectedEOF): // the server went away mid-statement (crash, immediate shutdown)
		return unavailable // whatever the server said while refusing the connection
	case errors.As(err, &pgErr):
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutting down, crashed, starting
			pgErr.Code == "53300", // too many connections
			pgErr.Code == "57014": // statement timeout
			return unavailable
		}
	}
	return &apiError{Status: http.StatusInternalServerError, Detail: "An unexpected error occurred.", cause: err}
}

// pgInfinity stands in for a missing due date in a due_date cursor.
func pgInfinity(desc bool) pgtype.Timestamptz {
	if desc {
		return pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	}
	return pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
}
