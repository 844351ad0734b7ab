package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestParseMigrations(t *testing.T) {
	ms, err := parseMigrations(schemaSQL)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[0].Version != 1 || ms[0].Name != "create_tasks" || len(ms[0].Checksum) != 64 {
		t.Fatalf("unexpected migrations: %+v", ms[0])
	}
	crlf, _ := parseMigrations(strings.ReplaceAll(schemaSQL, "\n", "\r\n"))
	if crlf[0].Checksum != ms[0].Checksum {
		t.Fatal("a CRLF checkout changes the checksum")
	}
	for _, bad := range []string{"SELECT 1;", "-- migration: 2 two\nSELECT 1;", "-- migration: 1 one\n-- migration: 1 again\n"} {
		if _, err := parseMigrations(bad); err == nil {
			t.Errorf("parseMigrations accepted %q", bad)
		}
	}
}

func TestMigrateFreshThenRerunIsNoop(t *testing.T) {
	url := newDatabase(t, false)
	m, _ := newMigrator(discardLog())
	conn := connect(t, url)
	n, err := m.Up(t.Context(), conn)
	if err != nil || n != len(m.migrations) {
		t.Fatalf("first run applied %d (%v), want %d", n, err, len(m.migrations))
	}
	n, err = m.Up(t.Context(), conn)
	if err != nil || n != 0 {
		t.Fatalf("rerun applied %d (%v), want 0", n, err)
	}
	var cols int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.columns WHERE table_name = 'tasks'`).Scan(&cols); err != nil || cols != 23 {
		t.Fatalf("tasks has %d columns (%v)", cols, err)
	}
	st, err := m.Status(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.State != "applied" || s.AppliedAt.IsZero() {
			t.Fatalf("status %+v", s)
		}
	}
	if ok, err := m.Current(t.Context(), conn); !ok || err != nil {
		t.Fatalf("Current = %v, %v", ok, err)
	}
}

// Several instances starting at once apply each version exactly once.
func TestMigrateConcurrently(t *testing.T) {
	url := newDatabase(t, false)
	m, _ := newMigrator(discardLog())
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(context.Background())
			applied[i], errs[i] = m.Up(context.Background(), conn)
		}()
	}
	wg.Wait()
	total := 0
	for i := range applied {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(m.migrations) {
		t.Fatalf("versions applied %d times in all, want %d", total, len(m.migrations))
	}
	var rows int
	connect(t, url).QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&rows)
	if rows != len(m.migrations) {
		t.Fatalf("schema_migrations has %d rows", rows)
	}
}

// Editing an applied migration is refused, naming the version.
func TestMigrateRefusesEditedMigration(t *testing.T) {
	url := newDatabase(t, true)
	edited := strings.Replace(schemaSQL, "CREATE INDEX tasks_user_created_at", "CREATE INDEX tasks_user_created_at_v2", 1)
	ms, err := parseMigrations(edited)
	if err != nil {
		t.Fatal(err)
	}
	m := &Migrator{migrations: ms, log: discardLog()}
	_, err = m.Up(t.Context(), connect(t, url))
	if err == nil || !strings.Contains(err.Error(), "migration 1 (create_tasks) was changed") {
		t.Fatalf("want a refusal naming migration 1, got %v", err)
	}
	st, _ := m.Status(t.Context(), connect(t, url))
	if st[0].State != "changed" {
		t.Fatalf("status of the edited version: %+v", st[0])
	}
	if ok, _ := m.Current(t.Context(), connect(t, url)); ok {
		t.Fatal("an edited schema counts as current")
	}
}

// Pending migrations are listed and make the schema not current.
func TestMigratePending(t *testing.T) {
	url := newDatabase(t, false)
	m, _ := newMigrator(discardLog())
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if ok, err := m.Current(t.Context(), pool); ok || err != nil {
		t.Fatalf("empty database: current=%v err=%v", ok, err)
	}
	one := &Migrator{migrations: m.migrations[:1], log: discardLog()}
	if _, err := one.Up(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	st, _ := m.Status(t.Context(), pool)
	if st[0].State != "applied" || st[1].State != "pending" {
		t.Fatalf("status %+v", st)
	}
	if ok, _ := m.Current(t.Context(), pool); ok {
		t.Fatal("one version pending counts as current")
	}
}

// pool_* parameters in DATABASE_URL configure the pool; they must not reach
// the server, which refuses unknown settings, on the migration connection either.
func TestPoolParametersInDatabaseURL(t *testing.T) {
	u, err := url.Parse(newDatabase(t, false))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "3")
	u.RawQuery = q.Encode()
	m, _ := newMigrator(discardLog())
	if err := migrateUp(t.Context(), m, u.String(), discardLog()); err != nil {
		t.Fatalf("migrate with pool parameters: %v", err)
	}
	pool, err := openPool(t.Context(), u.String(), poolOptions{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := pool.Config().MaxConns; got != 3 {
		t.Fatalf("MaxConns %d, want 3", got)
	}
}

func mustMigrator(t *testing.T) *Migrator {
	t.Helper()
	m, err := newMigrator(discardLog())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A database with tasks from before the trash and the feed (version 2)
// migrates in place: its tasks are in a full sync, keep their quota count,
// and go to the trash and come back like new ones.
func TestMigrationToTheFeedKeepsExistingTasks(t *testing.T) {
	dbURL := newDatabase(t, false)
	m := mustMigrator(t)
	old := &Migrator{migrations: m.migrations[:2], log: discardLog()}
	conn := connect(t, dbURL)
	if _, err := old.Up(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `
INSERT INTO tasks (user_id, title) SELECT 'legacy', 'old ' || g FROM generate_series(1, 3) g;
INSERT INTO task_counts (user_id, tasks) VALUES ('legacy', 3);`); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	a := startAPI(t, func(o *apiOptions) { o.dbURL = dbURL })
	tok := a.token(t, "legacy")
	r := &replica{tasks: map[int64]taskJSON{}}
	for {
		f := pullChanges(t, a, tok, r.token)
		r.apply(f)
		if !f.HasMore {
			break
		}
	}
	if len(r.tasks) != 3 {
		t.Fatalf("a full sync after the migration has %d tasks", len(r.tasks))
	}
	var id int64
	for id = range r.tasks {
		break
	}
	mustStatus(t, a.do(t, "DELETE", taskURL(id), nil, bearer(tok)), 204)
	if changes := changesSince(t, a, tok, r.token); len(changes) != 1 || changes[0].Op != "delete" || changes[0].ID != id {
		t.Fatalf("changes after the migration: %+v", changes)
	}
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", id), nil, bearer(tok)), 200)
	var counted, live int
	if err := conn.QueryRow(t.Context(), `SELECT tasks, (SELECT count(*) FROM tasks WHERE user_id = 'legacy' AND deleted_at IS NULL)
FROM task_counts WHERE user_id = 'legacy'`).Scan(&counted, &live); err != nil || counted != 3 || live != 3 {
		t.Fatalf("count %d, live %d (%v)", counted, live, err)
	}
}

// The tags rule of migration 6 (plpgsql) says what migration 1's SQL
// function said, for every kind of array, and the database still refuses a
// task whose tags break it.
func TestTagsCheckKeepsTheRuleItReplaced(t *testing.T) {
	conn := connect(t, newDatabase(t, true))
	first := mustMigrator(t).migrations[0].SQL
	start := strings.Index(first, "CREATE FUNCTION task_tags_valid")
	end := strings.Index(first[start:], "\n$$;") + len("\n$$;")
	v1 := strings.Replace(first[start:start+end], "task_tags_valid", "pg_temp.task_tags_valid_v1", 1)
	if _, err := conn.Exec(t.Context(), v1); err != nil {
		t.Fatalf("migration 1's function: %v", err)
	}
	long := strings.Repeat("x", 50)
	twenty := make([]string, 20)
	for i := range twenty {
		twenty[i] = fmt.Sprintf("t%d", i)
	}
	for _, c := range []struct {
		tags string // an array literal
		want bool
	}{
		{`{}`, true},
		{`{a}`, true},
		{`{a,b,c}`, true},
		{`{` + long + `}`, true},
		{`{` + strings.Join(twenty, ",") + `}`, true},
		{`[0:1]={a,b}`, true},
		{`{"a b"}`, true},
		{`{A,a}`, true},
		{`{a,a}`, false},
		{`{a,b,a}`, false},
		{`[0:1]={a,a}`, false},
		{`{""}`, false},
		{`{" a"}`, false},
		{`{"a "}`, false},
		{`{x` + long + `}`, false},
		{`{NULL}`, false},
		{`{a,NULL}`, false},
		{`{` + strings.Join(twenty, ",") + `,t20}`, false},
		{`{{a,b},{c,d}}`, false},
	} {
		var now, then bool
		if err := conn.QueryRow(t.Context(), `SELECT task_tags_valid($1::text::text[]), pg_temp.task_tags_valid_v1($1::text::text[])`,
			c.tags).Scan(&now, &then); err != nil {
			t.Fatalf("%s: %v", c.tags, err)
		}
		if now != c.want || then != c.want {
			t.Errorf("tags %s: valid %v, migration 1 said %v, want %v", c.tags, now, then, c.want)
		}
	}
	var null *bool
	if err := conn.QueryRow(t.Context(), `SELECT task_tags_valid(NULL)`).Scan(&null); err != nil || null != nil {
		t.Errorf("task_tags_valid(NULL) = %v (%v), want NULL as before", null, err)
	}

	_, err := conn.Exec(t.Context(), `INSERT INTO tasks (user_id, title, tags) VALUES ('u', 'x', '{a,a}')`)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "23514" {
		t.Fatalf("a task with duplicate tags: %v, want a check violation", err)
	}
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM tasks`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tasks after the refused insert (%v)", n, err)
	}
}

// Migration 9 puts nine CHECKs of tasks into one (task_row_valid): the
// database still refuses every row one of them refused, with a check
// violation, and keeps none of it; a valid row still goes in.
func TestOneCheckRefusesWhatTheNineDid(t *testing.T) {
	conn := connect(t, newDatabase(t, true))
	long := func(n int) string { return "'" + strings.Repeat("x", n) + "'" }
	// insert inserts a valid task with some of its values replaced.
	insert := func(replace map[string]string) error {
		cols := []string{"user_id", "title", "description", "completed", "completed_at", "priority", "tags", "version",
			"recurrence_rule", "recurrence_tz", "recurrence_from", "reminders", "due_date"}
		valid := map[string]string{"user_id": "'u'", "title": "'t'", "description": "''", "completed": "false",
			"completed_at": "NULL", "priority": "'none'", "tags": "'{}'", "version": "1", "recurrence_rule": "NULL",
			"recurrence_tz": "NULL", "recurrence_from": "NULL", "reminders": "'{}'", "due_date": "now() + interval '1 day'"}
		values := make([]string, len(cols))
		for i, c := range cols {
			values[i] = valid[c]
			if v, ok := replace[c]; ok {
				values[i] = v
			}
		}
		_, err := conn.Exec(t.Context(), "INSERT INTO tasks ("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(values, ", ")+")")
		return err
	}
	for what, replace := range map[string]map[string]string{
		"an empty user id":                 {"user_id": "''"},
		"a user id of 256 characters":      {"user_id": long(256)},
		"an empty title":                   {"title": "''"},
		"a title with a leading space":     {"title": "' x'"},
		"a title of 201 characters":        {"title": long(201)},
		"a description of 1001 characters": {"description": long(1001)},
		"completed without completed_at":   {"completed": "true"},
		"completed_at without completed":   {"completed_at": "now()"},
		"an unknown priority":              {"priority": "'urgent'"},
		"duplicate tags":                   {"tags": "'{a,a}'"},
		"version 0":                        {"version": "0"},
		"a rule without its time zone":     {"recurrence_rule": "'FREQ=DAILY'", "recurrence_from": "'due'"},
		"a recurrence from nowhere":        {"recurrence_rule": "'FREQ=DAILY'", "recurrence_tz": "'UTC'", "recurrence_from": "'start'"},
		"six reminders":                    {"reminders": "'{PT1M,PT2M,PT3M,PT4M,PT5M,PT6M}'"},
		"reminders in two dimensions":      {"reminders": "'{{PT1M},{PT2M}}'"},
	} {
		err := insert(replace)
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "23514" || pgErr.ConstraintName != "tasks_row_valid" {
			t.Errorf("%s: %v, want a violation of tasks_row_valid", what, err)
		}
	}
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM tasks`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tasks after the refused inserts (%v)", n, err)
	}
	err := insert(map[string]string{"tags": "'{a,b}'", "recurrence_rule": "'FREQ=DAILY'", "recurrence_tz": "'UTC'",
		"recurrence_from": "'due'", "reminders": "'{PT1M}'", "completed": "true", "completed_at": "now()"})
	if err != nil {
		t.Fatalf("a valid task: %v", err)
	}
}
