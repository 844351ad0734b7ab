package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// searchTask is a row of the search test's data.
type searchTask struct {
	user, title, description, priority string
	created, updated                   time.Time
	due                                *time.Time
	deleted                            bool
}

// searchTestData is alice's 900 tasks, with words in chosen shares of them,
// and the tasks of bob, whose id shares alice's 8 bits in the search index,
// and of carol, whose does not. bob and carol write the same words, in every
// task: the index finds bob's along with alice's, and the listing must not.
func searchTestData(bob string) []searchTask {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var tasks []searchTask
	for i := range 900 {
		words := []string{fmt.Sprintf("task %03d", i)}
		for _, w := range []struct {
			every int
			word  string
		}{
			{2, "common"},      // half of them: the head has the page
			{5, "Often"},       // 1 in 5: the walk goes on past the head
			{97, "rare"},       // the search index
			{300, "Ünïcødé"},   // non-ASCII, upper case
			{450, "50%_off\\"}, // LIKE's wildcards and escape, ordinary characters for q
		} {
			if i%w.every == 0 {
				words = append(words, w.word)
			}
		}
		if i >= 880 { // the newest 20: the walk starts well, and must give up for the index
			words = append(words, "front")
		}
		description := ""
		if i%3 == 0 {
			description = "notes: buy milk"
			if i%7 == 0 {
				description = "Seldom in the description, " + strings.Repeat("padding ", 40)
			}
		}
		var due *time.Time
		if i%4 != 0 {
			d := base.Add(time.Duration(i%37) * 24 * time.Hour)
			due = &d
		}
		tasks = append(tasks, searchTask{
			user: "alice", title: strings.Join(words, " "), description: description,
			priority: []string{"none", "low", "medium", "high"}[i%4],
			created:  base.Add(time.Duration(i/2) * time.Minute), // pairs: ties broken by id
			updated:  base.Add(time.Duration(i*37%900) * time.Minute),
			due:      due,
			deleted:  i%13 == 0, // in the trash: never found
		})
	}
	for _, u := range []string{bob, "carol"} {
		for i := range 300 {
			tasks = append(tasks, searchTask{
				user: u, title: fmt.Sprintf("other %03d common Often rare front Ünïcødé 50%%_off\\", i),
				description: "buy milk", priority: "none",
				created: base.Add(time.Duration(i) * time.Minute), updated: base.Add(time.Duration(i) * time.Minute),
			})
		}
	}
	return tasks
}

// bucketMate is a user id other than user whose search keys are user's.
func bucketMate(t *testing.T, pool *pgxpool.Pool, user string) string {
	t.Helper()
	var mate string
	err := pool.QueryRow(t.Context(), `
SELECT 'bob' || g FROM generate_series(1, 100000) g
WHERE task_trigrams('bob' || g, 'abc', '') = task_trigrams($1, 'abc', '') LIMIT 1`, user).Scan(&mate)
	if err != nil {
		t.Fatalf("no user id with the search keys of %s: %v", user, err)
	}
	return mate
}

func loadSearchData(t *testing.T, pool *pgxpool.Pool, tasks []searchTask) {
	t.Helper()
	cols := make([][]any, 8)
	for _, k := range tasks {
		var deleted *time.Time
		if k.deleted {
			deleted = &k.created
		}
		for i, v := range []any{k.user, k.title, k.description, k.priority, k.created, k.updated, k.due, deleted} {
			cols[i] = append(cols[i], v)
		}
	}
	_, err := pool.Exec(t.Context(), `
INSERT INTO tasks (user_id, title, description, priority, created_at, updated_at, due_date, deleted_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])`,
		cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7])
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO task_counts (user_id, tasks, seq) SELECT user_id, count(*) FILTER (WHERE deleted_at IS NULL), 1 FROM tasks GROUP BY user_id`,
		`VACUUM ANALYZE tasks, task_search`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
}

// ilikeIDs are what q meant before the search index: the user's live tasks
// whose title or description is ILIKE '%q%' (q's wildcards escaped), in the
// listing's order.
func ilikeIDs(t *testing.T, pool *pgxpool.Pool, user, q, sort string, desc bool) []int64 {
	t.Helper()
	key, dir := sortKeys[sort].asc, " ASC"
	if desc {
		key, dir = sortKeys[sort].desc, " DESC"
	}
	pattern := "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q) + "%"
	rows, err := pool.Query(t.Context(), `SELECT id FROM tasks WHERE user_id = $1 AND deleted_at IS NULL
AND (title ILIKE $2 OR description ILIKE $2) ORDER BY `+key+dir+", id"+dir, user, pattern)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// searchedIDs walks every page of the listing with q, limit tasks a page.
func searchedIDs(t *testing.T, store *Store, user, q, sort string, desc bool, limit int) []int64 {
	t.Helper()
	lq := listQuery{User: user, Q: q, Sort: sort, Desc: desc, Limit: limit}
	var ids []int64
	for {
		page, err := store.ListTasks(t.Context(), lq)
		if err != nil {
			t.Fatalf("q=%s sort=%s desc=%v: %v", q, sort, desc, err)
		}
		for _, k := range page.Tasks {
			if k.UserID != user {
				t.Fatalf("q=%s: task %d of %s", q, k.ID, k.UserID)
			}
			ids = append(ids, k.ID)
		}
		if !page.More {
			return ids
		}
		c := cursorAfter(&page.Tasks[len(page.Tasks)-1], sort, desc)
		lq.After = &c
	}
}

// statementLog is the store's pool, noting each listing statement it runs.
type statementLog struct {
	dbtx
	sqls []string
}

func (l *statementLog) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	l.sqls = append(l.sqls, sql)
	return l.dbtx.Query(ctx, sql, args...)
}

// stepsOf names the search step each statement was: head, walk, index.
func stepsOf(sqls []string) []string {
	var steps []string
	for _, sql := range sqls {
		switch {
		case strings.Contains(sql, "task_trigrams"):
			steps = append(steps, "index")
		case strings.Contains(sql, "LIMIT (SELECT 30 *"):
			steps = append(steps, "walk")
		default:
			steps = append(steps, "head")
		}
	}
	return steps
}

// A search returns exactly the user's live tasks whose title or description
// contains q, case-insensitively and literally, as ILIKE '%q%' did, in the
// requested order, page after page: whether the walk or the search index
// finds the page, and never a task of another user, not even of one whose
// tasks the index yields with the user's.
func TestSearchFindsWhatILIKEFound(t *testing.T) {
	pool, err := pgxpool.New(t.Context(), newDatabase(t, true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	bob := bucketMate(t, pool, "alice")
	loadSearchData(t, pool, searchTestData(bob))
	store := newStore(pool, storeOptions{})

	// Which steps find the first page of 20, newest first.
	log := &statementLog{dbtx: pool}
	logged := newStore(pool, storeOptions{})
	logged.db = log
	for q, want := range map[string][]string{
		"common":   {"head"},
		"OFTEN":    {"head", "walk"},
		"rare":     {"head", "index"},
		"Front":    {"head", "walk", "index"}, // the walk starts well, then runs out
		"quixotry": {"head", "index"},         // and that is all: its empty page still has the position
	} {
		log.sqls = nil
		if _, err := logged.ListTasks(t.Context(), listQuery{User: "alice", Q: q, Sort: "created_at", Desc: true, Limit: 20}); err != nil {
			t.Fatal(err)
		}
		if got := stepsOf(log.sqls); !slices.Equal(got, want) {
			t.Errorf("q=%s: steps %v, want %v", q, got, want)
		}
	}

	queries := []string{
		"common", "COMMON", "often", "rare", "RARE", "front", "quixotry",
		"üNÏ", "ünïcødé", "50%_off\\", "%_o", "_", "%", "\\",
		"buy milk", "Y MIL", "notes: b", "k 0", "task 12", "ra", "e", "mmon Of",
		"SELDOM in the description", "padding padding",
	}
	for _, sort := range []string{"created_at", "updated_at", "priority", "title", "due_date"} {
		for _, desc := range []bool{true, false} {
			for _, q := range queries {
				want := ilikeIDs(t, pool, "alice", q, sort, desc)
				for _, limit := range []int{20, 7} {
					if got := searchedIDs(t, store, "alice", q, sort, desc, limit); !slices.Equal(got, want) {
						t.Errorf("q=%q sort=%s desc=%v limit %d: %d tasks %v, ILIKE finds %d %v",
							q, sort, desc, limit, len(got), firstIDs(got), len(want), firstIDs(want))
					}
				}
			}
		}
	}
	// The JSON listing (the handlers' and MCP's) returns the same pages, and
	// a search that finds nothing still carries the user's feed position.
	for _, q := range []string{"rare", "often", "quixotry"} {
		lq := listQuery{User: "alice", Q: q, Sort: "title", Desc: false, Limit: 20}
		page, err := store.ListTasks(t.Context(), lq)
		if err != nil {
			t.Fatal(err)
		}
		js, err := store.ListTasksJSON(t.Context(), lq, nil)
		if err != nil {
			t.Fatal(err)
		}
		var tasks []struct{ ID int64 }
		if err := json.Unmarshal(js.Body, &tasks); err != nil {
			t.Fatalf("q=%s: %v: %s", q, err, js.Body)
		}
		ids := make([]int64, len(page.Tasks))
		for i, k := range page.Tasks {
			ids[i] = k.ID
		}
		jsIDs := make([]int64, len(tasks))
		for i, k := range tasks {
			jsIDs[i] = k.ID
		}
		if !slices.Equal(ids, jsIDs) || js.More != page.More || js.Count != len(ids) || page.Seq != 1 || js.Seq != 1 {
			t.Errorf("q=%s: ListTasks %v (more %v, seq %d), ListTasksJSON %v (count %d, more %v, seq %d), want seq 1",
				q, ids, page.More, page.Seq, jsIDs, js.Count, js.More, js.Seq)
		}
	}

	for _, user := range []string{bob, "carol"} {
		if got, want := searchedIDs(t, store, user, "rare", "created_at", true, 100), ilikeIDs(t, pool, user, "rare", "created_at", true); !slices.Equal(got, want) || len(got) != 300 {
			t.Errorf("%s's search for rare: %d tasks, want its %d", user, len(got), len(want))
		}
	}
}

func firstIDs(ids []int64) []int64 { return ids[:min(len(ids), 8)] }

// The search keys live in a table of their own (migration 8), kept by
// triggers: a create writes a task's keys, an edit of its title or
// description writes them again, a toggle, a move to the trash and a
// restore leave them, and deleting for good or emptying the trash deletes
// them. A search for a word a task was given later finds it: the search
// index must hold the new keys, as no page of the listing is walked past
// these few tasks.
func TestSearchKeysFollowEveryWrite(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	renamed := a.createTask(t, tok, map[string]any{"title": "alpha kiwi"})
	described := a.createTask(t, tok, map[string]any{"title": "bravo", "description": "charlie notes"})
	purged := a.createTask(t, tok, map[string]any{"title": "echo purged"})
	emptied := a.createTask(t, tok, map[string]any{"title": "foxtrot emptied"})

	mustStatus(t, a.do(t, "PUT", taskURL(renamed.ID), map[string]any{"title": "zebrafish one"}, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PUT", taskURL(described.ID), map[string]any{"description": "delta notes"}, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PATCH", taskURL(described.ID)+"/complete", nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "DELETE", taskURL(described.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", described.ID), nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "DELETE", taskURL(purged.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", purged.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", taskURL(emptied.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", "/api/me/trash", nil, bearer(tok)), http.StatusNoContent)

	for q, want := range map[string][]int64{
		"zebrafish": {renamed.ID},
		"kiwi":      nil,
		"delta":     {described.ID},
		"charlie":   nil,
		"bravo":     {described.ID},
		"echo":      nil,
		"foxtrot":   nil,
	} {
		var got []int64
		for _, k := range a.listAll(t, tok, "q="+q) {
			got = append(got, k.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("q=%s: tasks %v, want %v", q, got, want)
		}
	}

	var rows, stale int
	err := a.pool.QueryRow(t.Context(), `
SELECT count(*), count(*) FILTER (WHERE tasks.id IS NULL OR task_search.task_id IS NULL
    OR task_search.user_id <> tasks.user_id
    OR task_search.keys <> task_trigrams(tasks.user_id, tasks.title, tasks.description))
FROM tasks FULL JOIN task_search ON task_search.task_id = tasks.id
WHERE coalesce(tasks.user_id, task_search.user_id) = $1`, user).Scan(&rows, &stale)
	if err != nil {
		t.Fatal(err)
	}
	if rows != 2 || stale != 0 {
		t.Errorf("%d rows of tasks and their keys, %d of them without the other or stale; want 2 and 0", rows, stale)
	}
}

// Migration 8 computes the keys of every task already there, in the trash
// or not, leaves the previous version's search working, and TRUNCATE of
// tasks (a test's reset, an operator's) empties the keys too, so that no
// stale row refuses a later task's.
func TestSearchKeysMigrationAndTruncate(t *testing.T) {
	dbURL := newDatabase(t, false)
	m := mustMigrator(t)
	conn := connect(t, dbURL)
	old := &Migrator{migrations: m.migrations[:7], log: discardLog()}
	if _, err := old.Up(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `
INSERT INTO tasks (user_id, title, description, deleted_at)
SELECT 'legacy', 'old ' || g, 'kept ' || g, CASE WHEN g = 3 THEN now() END FROM generate_series(1, 3) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	countKeys := func() (rows, right int) {
		t.Helper()
		err := conn.QueryRow(t.Context(), `
SELECT count(*), count(*) FILTER (WHERE keys = task_trigrams(tasks.user_id, title, description))
FROM task_search JOIN tasks ON tasks.id = task_search.task_id`).Scan(&rows, &right)
		if err != nil {
			t.Fatal(err)
		}
		return rows, right
	}
	if rows, right := countKeys(); rows != 3 || right != 3 {
		t.Fatalf("after the migration: keys of %d tasks, %d right; want 3", rows, right)
	}
	// The previous version's search condition, as an instance still serving
	// during a rolling deploy sends it, keeps answering.
	var found int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM tasks WHERE user_id = 'legacy' AND deleted_at IS NULL
AND task_search_keys(user_id, title, description) @> task_search_keys('legacy', 'old', '')`).Scan(&found); err != nil || found != 2 {
		t.Fatalf("the previous version's search after the migration: %d tasks (%v), want 2", found, err)
	}
	if _, err := conn.Exec(t.Context(), `TRUNCATE tasks CASCADE`); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM task_search`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("after TRUNCATE tasks: %d rows of keys (%v)", left, err)
	}
}
