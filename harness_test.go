package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// The package's tests share one PostgreSQL server, found in this order:
// TEST_DATABASE_URL (its role must be able to create databases); a container
// from testcontainers-go when a Docker engine answers; else a throwaway
// cluster from the local server binaries (the launcher of `go run .`). Tests
// isolate by user on a shared migrated database, or by database when they
// need one of their own. With TEST_PGBOUNCER=1 the service under test reaches
// the server through pgbouncer in transaction pooling mode (pgbouncer_test.go).
var testPG struct {
	kind      string
	adminURL  string        // a URL on the server with the right to create databases
	template  string        // a migrated database to copy
	sharedURL string        // a migrated database shared by tests that isolate by user
	shared    *pgxpool.Pool // the service's pool on the shared database
	pooler    *pgBouncer    // in the pgbouncer pass (TEST_PGBOUNCER), between the service and the server
}

// serviceURL is the URL the service under test reaches dbURL's database by:
// through pgbouncer in the pgbouncer pass, else dbURL itself. Whatever must
// not go through a transaction-mode pooler (creating databases, migrations,
// session-level locks of the tests) uses dbURL directly.
func serviceURL(dbURL string) string {
	if testPG.pooler != nil {
		return testPG.pooler.url(dbURL)
	}
	return dbURL
}

// servicePoolOptions are the pool options of the service under test: pooled
// behind pgbouncer (or when TEST_POOLED asks for the pooled settings alone).
func servicePoolOptions() poolOptions {
	return poolOptions{Pooled: testPG.pooler != nil || os.Getenv("TEST_POOLED") != ""}
}

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		os.Exit(m.Run()) // the fuzz targets need no database; its workers start often
	}
	code, err := runTestMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test setup failed:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// fuzzing reports whether this process runs a fuzz target (go test -run '^$'
// -fuzz FuzzX), as its coordinator or as one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

func runTestMain(m *testing.M) (int, error) {
	ctx := context.Background()
	adminURL, kind, cleanup, err := provideTestPostgres(ctx)
	if err != nil {
		return 0, err
	}
	defer cleanup()
	testPG.kind, testPG.adminURL = kind, adminURL
	fmt.Fprintf(os.Stderr, "tests use PostgreSQL from %s\n", kind)
	if os.Getenv("TEST_PGBOUNCER") != "" {
		if testPG.pooler, err = startPgBouncer(ctx, adminURL); err != nil {
			return 0, err
		}
		defer testPG.pooler.stop()
		fmt.Fprintf(os.Stderr, "the service reaches it through pgbouncer (transaction pooling) on %s\n", testPG.pooler.addr)
	}

	prefix := fmt.Sprintf("tasks_test_%d", os.Getpid())
	testPG.template = prefix + "_template"
	if err := adminExec(ctx, "CREATE DATABASE "+testPG.template); err != nil {
		return 0, err
	}
	defer adminExec(context.Background(), "DROP DATABASE IF EXISTS "+testPG.template+" WITH (FORCE)")
	if err := migrateDatabase(ctx, withDatabase(adminURL, testPG.template)); err != nil {
		return 0, err
	}
	shared := prefix + "_shared"
	if err := adminExec(ctx, "CREATE DATABASE "+shared+" TEMPLATE "+testPG.template); err != nil {
		return 0, err
	}
	defer adminExec(context.Background(), "DROP DATABASE IF EXISTS "+shared+" WITH (FORCE)")
	testPG.sharedURL = withDatabase(adminURL, shared)
	testPG.shared, err = openPool(ctx, serviceURL(testPG.sharedURL), servicePoolOptions(), discardLog())
	if err != nil {
		return 0, err
	}
	defer testPG.shared.Close()
	return m.Run(), nil
}

func provideTestPostgres(ctx context.Context) (url, kind string, cleanup func(), err error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u, "TEST_DATABASE_URL", func() {}, nil
	}
	if dockerAvailable(ctx) {
		ctr, err := tcpostgres.Run(ctx, "postgres:17-alpine",
			tcpostgres.WithDatabase("tasks"), tcpostgres.WithUsername("tasks"), tcpostgres.WithPassword("tasks"),
			tcpostgres.BasicWaitStrategies())
		if err != nil {
			return "", "", nil, fmt.Errorf("start a PostgreSQL container: %w", err)
		}
		u, err := ctr.ConnectionString(ctx, "sslmode=disable")
		if err != nil {
			_ = testcontainers.TerminateContainer(ctr)
			return "", "", nil, err
		}
		return u, "testcontainers (postgres:17-alpine)", func() { _ = testcontainers.TerminateContainer(ctr) }, nil
	}
	dir, err := os.MkdirTemp("", "tasks-test-pg-")
	if err != nil {
		return "", "", nil, err
	}
	pg, err := startLocalPostgres(ctx, dir, localPGOptions{Ephemeral: true})
	if err != nil {
		os.RemoveAll(dir)
		return "", "", nil, fmt.Errorf("no TEST_DATABASE_URL, no Docker engine, and the local binaries failed: %w", err)
	}
	return pg.URL(), "local server binaries (" + dir + ")", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pg.Stop(ctx)
		os.RemoveAll(dir)
	}, nil
}

// dockerAvailable asks testcontainers whether a Docker engine answers, quickly.
func dockerAvailable(ctx context.Context) (ok bool) {
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			return false
		}
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return false
	}
	defer provider.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return provider.Health(ctx) == nil
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, testPG.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func migrateDatabase(ctx context.Context, url string) error {
	m, err := newMigrator(discardLog())
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = m.Up(ctx, conn)
	return err
}

// withDatabase is url with its database name replaced.
func withDatabase(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + db
	return u.String()
}

// databaseName is the database a URL names.
func databaseName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

var dbSeq atomic.Int64

// newDatabase creates a database for t alone, migrated or empty, dropped at the end.
func newDatabase(t testing.TB, migrated bool) string {
	t.Helper()
	name := fmt.Sprintf("tasks_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	template := "template0"
	if migrated {
		template = testPG.template
	}
	ctx := context.Background()
	if err := adminExec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+template); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := adminExec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(testPG.adminURL, name)
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// syncBuffer is a log destination tests can read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ---- a running API --------------------------------------------------------

const testSecret = "test-secret-that-is-at-least-32-bytes-long"

type apiOptions struct {
	dbURL     string // empty: the shared database
	rateLimit float64
	clock     func() time.Time // the rate limiter's; nil: time.Now
	now       func() time.Time // the store's (next occurrences); nil: time.Now
	maxTasks  int
	verifier  verifierOptions
	origins   []string
	timeout   time.Duration   // deps.timeout; 0: requestDeadline
	lockTime  time.Duration   // DB_LOCK_TIMEOUT of every transaction; 0: 5s
	noListen  bool            // the change notifier polls only, as behind a pooler without DATABASE_URL_UNPOOLED
	poll      time.Duration   // CHANGES_POLL_INTERVAL; 0: the default
	syncKeep  time.Duration   // SYNC_RETENTION; 0: 720h
	events    eventOptions    // SSE_*; zero fields: the defaults
	server    *serverTimeouts // serve with newHTTPServer and these; nil: httptest's plain server
}

// testAPI is the real handler, over real HTTP, on a real database.
type testAPI struct {
	URL    string
	client *http.Client
	store  *Store
	pool   *pgxpool.Pool // the service's pool (through pgbouncer in the pgbouncer pass)
	dbURL  string        // the database, directly
	logs   *syncBuffer
	opts   apiOptions
	feed   *syncFeed
	events *eventStreams

	reminders *reminderScheduler
}

var userSeq atomic.Int64

func startAPI(t testing.TB, configure ...func(*apiOptions)) *testAPI {
	t.Helper()
	o := apiOptions{maxTasks: 10000, origins: []string{"http://localhost:3000"},
		verifier: verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}}
	for _, c := range configure {
		c(&o)
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	pool, dbURL := testPG.shared, testPG.sharedURL
	if o.dbURL != "" {
		dbURL = o.dbURL
		var err error
		pool, err = openPool(context.Background(), serviceURL(o.dbURL), servicePoolOptions(), discardLog())
		if err != nil {
			t.Fatalf("open pool: %v", err)
		}
		t.Cleanup(pool.Close)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	migrator, err := newMigrator(log)
	if err != nil {
		t.Fatal(err)
	}
	lockTimeout := o.lockTime
	if lockTimeout == 0 {
		lockTimeout = 5 * time.Second
	}
	store := newStore(pool, storeOptions{MaxTasksPerUser: o.maxTasks, StatementTimeout: 10 * time.Second, LockTimeout: lockTimeout, Now: o.now})
	gateCtx, stopGate := context.WithCancel(context.Background())
	t.Cleanup(stopGate)
	listenURL := dbURL // directly, never through pgbouncer
	if o.noListen {
		listenURL = ""
	}
	if o.syncKeep == 0 {
		o.syncKeep = 720 * time.Hour
	}
	feed := startSyncFeed(gateCtx, store, listenURL, o.poll, o.syncKeep, log)
	ev := eventOptions{MaxAge: 15 * time.Minute, Heartbeat: 15 * time.Second, MaxPerUser: 10}
	if o.events.MaxAge > 0 {
		ev.MaxAge = o.events.MaxAge
	}
	if o.events.Heartbeat > 0 {
		ev.Heartbeat = o.events.Heartbeat
	}
	if o.events.MaxPerUser > 0 {
		ev.MaxPerUser = o.events.MaxPerUser
	}
	events := newEventStreams(store, feed, ev, log)
	go events.keepAlive(gateCtx)
	reminders := newReminderScheduler(store, time.Now, log) // on real time; tests call fireDue with theirs
	go reminders.Run(gateCtx)
	h := newHandler(deps{
		log:      log,
		store:    store,
		verifier: newVerifier(o.verifier),
		limiter:  newRateLimiter(o.rateLimit, o.clock),
		ready:    readiness(pool, migrator),
		origins:  o.origins,
		timeout:  o.timeout,
		gate:     newDBGate(gateCtx, pool.Ping, log),
		feed:     feed,
		events:   events,
	})
	srv := httptest.NewUnstartedServer(h)
	if o.server != nil {
		srv.Config = newHTTPServer(h, *o.server, log, context.Background())
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testAPI{URL: srv.URL, client: &http.Client{Transport: contractTransport(t, srv.Client().Transport)},
		store: store, pool: pool, dbURL: dbURL, logs: logs, opts: o, feed: feed, events: events, reminders: reminders}
}

// newUser returns a user id no other test uses, and a valid token for it.
func (a *testAPI) newUser(t testing.TB) (string, string) {
	t.Helper()
	id := fmt.Sprintf("user-%d-%d", os.Getpid(), userSeq.Add(1))
	return id, a.token(t, id)
}

func (a *testAPI) token(t testing.TB, sub string) string {
	t.Helper()
	tok, err := mintToken([]byte(testSecret), sub, a.opts.verifier.Issuer, a.opts.verifier.Audience, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testResponse is a response read whole.
type testResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r testResponse) String() string {
	return fmt.Sprintf("%d %s", r.Status, r.Body)
}

// decode unmarshals the body into v, failing the test if it cannot.
func (r testResponse) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

func (r testResponse) task(t testing.TB) taskJSON {
	t.Helper()
	var v taskJSON
	r.decode(t, &v)
	return v
}

func (r testResponse) problem(t testing.TB) problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json (%s)", ct, r)
	}
	var p problem
	r.decode(t, &p)
	if p.Status != r.Status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Fatalf("incomplete problem %+v for %s", p, r)
	}
	return p
}

// taskJSON is a task as a client sees it.
type taskJSON struct {
	ID          int64    `json:"id"`
	UserID      string   `json:"user_id"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Completed   bool     `json:"completed"`
	CompletedAt *string  `json:"completed_at"`
	Priority    string   `json:"priority"`
	Tags        []string `json:"tags"`
	DueDate     *string  `json:"due_date"`
	Version     int      `json:"version"`
	CreatedAt   string   `json:"created_at"`
	UpdatedAt   string   `json:"updated_at"`
	DeletedAt   *string  `json:"deleted_at"`
}

type reqOption func(*http.Request)

func bearer(token string) reqOption {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

func header(k, v string) reqOption { return func(r *http.Request) { r.Header.Set(k, v) } }

// do sends one request; body, when not nil, is sent as application/json
// (a string or []byte as is, anything else marshalled).
func (a *testAPI) do(t testing.TB, method, path string, body any, opts ...reqOption) testResponse {
	t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		case []byte:
			rd = bytes.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, a.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	res, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return testResponse{Status: res.StatusCode, Header: res.Header, Body: b}
}

// mustStatus fails the test unless r has the status.
func mustStatus(t testing.TB, r testResponse, status int) testResponse {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	return r
}

// createTask creates a task for the token's user and returns it.
func (a *testAPI) createTask(t testing.TB, token string, body any) taskJSON {
	t.Helper()
	return mustStatus(t, a.do(t, "POST", "/api/me/tasks", body, bearer(token)), http.StatusCreated).task(t)
}
