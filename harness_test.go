package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tasks-api/internal/pgtest"
)

// The package's tests share one PostgreSQL server (pgtest.Start says which),
// set up by the first test that needs it and stopped by TestMain, so tests
// without a database run without one: under -short, every test that needs it
// is skipped and no PostgreSQL starts. Tests isolate by user on a shared
// migrated database, or by database when they need one of their own. With
// TEST_PGBOUNCER=1 the service under test reaches the server through
// pgbouncer in transaction pooling mode (pgbouncer_test.go).
type testDatabase struct {
	kind      string
	adminURL  string            // a URL on the server with the right to create databases
	template  string            // a migrated database to copy
	sharedURL string            // a migrated database shared by tests that isolate by user
	shared    *pgxpool.Pool     // the service's pool on the shared database
	pooler    *pgtest.PgBouncer // in the pgbouncer pass (TEST_PGBOUNCER), between the service and the server
}

var (
	testPGOnce     sync.Once
	testPGState    *testDatabase
	testPGErr      error
	testPGTeardown []func() // run by TestMain, last first
)

// testPG is the suite's database, set up on the first call; under -short it
// skips t instead.
func testPG(t testing.TB) *testDatabase {
	t.Helper()
	pgtest.SkipShort(t)
	testPGOnce.Do(func() { testPGState, testPGErr = setUpTestPG(context.Background()) })
	if testPGErr != nil {
		t.Fatalf("test database: %v", testPGErr)
	}
	return testPGState
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range slices.Backward(testPGTeardown) {
		f()
	}
	os.Exit(code)
}

func setUpTestPG(ctx context.Context) (*testDatabase, error) {
	server, err := pgtest.Start(ctx)
	if err != nil {
		return nil, err
	}
	testPGTeardown = append(testPGTeardown, server.Stop)
	db := &testDatabase{kind: server.Kind, adminURL: server.AdminURL}
	fmt.Fprintf(os.Stderr, "tests use PostgreSQL from %s\n", db.kind)
	if pgbouncerPass() {
		if db.pooler, err = pgtest.StartPgBouncer(ctx, db.adminURL); err != nil {
			return nil, err
		}
		testPGTeardown = append(testPGTeardown, db.pooler.Stop)
		fmt.Fprintf(os.Stderr, "the service reaches it through pgbouncer (transaction pooling) on %s\n", db.pooler.Addr)
	}

	prefix := fmt.Sprintf("tasks_test_%d", os.Getpid())
	db.template = prefix + "_template"
	if err := adminExec(ctx, db.adminURL, "CREATE DATABASE "+db.template); err != nil {
		return nil, err
	}
	testPGTeardown = append(testPGTeardown, dropDatabaseFunc(db.adminURL, db.template))
	if err := migrateDatabase(ctx, withDatabase(db.adminURL, db.template)); err != nil {
		return nil, err
	}
	shared := prefix + "_shared"
	if err := adminExec(ctx, db.adminURL, "CREATE DATABASE "+shared+" TEMPLATE "+db.template); err != nil {
		return nil, err
	}
	testPGTeardown = append(testPGTeardown, dropDatabaseFunc(db.adminURL, shared))
	db.sharedURL = withDatabase(db.adminURL, shared)
	db.shared, err = openPool(ctx, db.serviceURL(db.sharedURL), servicePoolOptions(), discardLog())
	if err != nil {
		return nil, err
	}
	testPGTeardown = append(testPGTeardown, db.shared.Close)
	return db, nil
}

func dropDatabaseFunc(adminURL, name string) func() {
	return func() { _ = adminExec(context.Background(), adminURL, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") }
}

func adminExec(ctx context.Context, adminURL, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
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
	db := testPG(t)
	name := fmt.Sprintf("tasks_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	template := "template0"
	if migrated {
		template = db.template
	}
	ctx := context.Background()
	if err := adminExec(ctx, db.adminURL, "CREATE DATABASE "+name+" TEMPLATE "+template); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := adminExec(context.Background(), db.adminURL, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(db.adminURL, name)
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
	URL     string
	client  *http.Client
	store   *Store
	pool    *pgxpool.Pool // the service's pool (through pgbouncer in the pgbouncer pass)
	dbURL   string        // the database, directly
	logs    *syncBuffer
	opts    apiOptions
	feed    *syncFeed
	events  *eventStreams
	metrics *metrics

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
	db := testPG(t)
	pool, dbURL := db.shared, db.sharedURL
	if o.dbURL != "" {
		dbURL = o.dbURL
		var err error
		pool, err = openPool(context.Background(), db.serviceURL(o.dbURL), servicePoolOptions(), discardLog())
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
	m := newMetrics(pool, events)
	reminders := startTestScheduler(t, gateCtx, db.serviceURL(dbURL), store, feed, m, log)
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
		metrics:  m,
	})
	srv := httptest.NewUnstartedServer(h)
	if o.server != nil {
		srv.Config = newHTTPServer(h, *o.server, log, context.Background())
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testAPI{URL: srv.URL, client: &http.Client{Transport: contractTransport(t, srv.Client().Transport)},
		store: store, pool: pool, dbURL: dbURL, logs: logs, opts: o, feed: feed, events: events, metrics: m,
		reminders: reminders}
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
