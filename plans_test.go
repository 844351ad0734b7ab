package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the test reads.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	IndexName    string     `json:"Index Name"`
	RelationName string     `json:"Relation Name"`
	JoinType     string     `json:"Join Type"`
	Parent       string     `json:"Parent Relationship"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(visit func(planNode)) {
	visit(n)
	for _, c := range n.Plans {
		c.walk(visit)
	}
}

func explain(t *testing.T, pool *pgxpool.Pool, q listQuery) planNode {
	t.Helper()
	sql, args := listSQL(q)
	return explainSQL(t, pool, sql, args)
}

func explainSQL(t *testing.T, pool *pgxpool.Pool, sql string, args []any) planNode {
	t.Helper()
	var raw []byte
	if err := pool.QueryRow(t.Context(), "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatalf("explain %s: %v", sql, err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(raw, &plans); err != nil {
		t.Fatal(err)
	}
	return plans[0].Plan
}

// seedPlanData loads users × perUser tasks with SQL, plus one user with many.
func seedPlanData(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := pool.Exec(ctx, `
INSERT INTO tasks (user_id, title, description, priority, tags, due_date, completed, completed_at)
SELECT CASE WHEN g <= 20000 THEN 'heavy' ELSE 'u' || (g % 400) END,
       'task ' || md5(g::text),
       CASE WHEN g % 3 = 0 THEN 'notes ' || md5((g * 7)::text) ELSE '' END,
       (ARRAY['none', 'low', 'medium', 'high'])[1 + g % 4],
       ARRAY['t' || (g % 10)],
       CASE WHEN g % 2 = 0 THEN now() + (g % 300) * interval '1 day' END,
       g % 5 = 0, CASE WHEN g % 5 = 0 THEN now() END
FROM generate_series(1, 60000) g`)
	if err != nil {
		t.Fatal(err)
	}
	// VACUUM also merges the trigram index's pending list, as autovacuum would.
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE tasks, task_search`); err != nil {
		t.Fatal(err)
	}
}

// Every listing shape reads one user's tasks from an index in the requested
// order: no Sort node, no sequential scan, for the first page and the next.
func TestListingPlansUseIndexes(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 60,000 tasks")
	}
	pool, err := pgxpool.New(t.Context(), newDatabase(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	seedPlanData(t, pool)

	// The next page starts in the middle: the seeded tasks share one
	// creation (and update) time, so a cursor at that time and id 12345 has
	// tasks on both sides of it.
	var seeded time.Time
	if err := pool.QueryRow(t.Context(), `SELECT min(created_at) FROM tasks`).Scan(&seeded); err != nil {
		t.Fatal(err)
	}
	after := &cursor{ID: 12345, Time: seeded, Rank: 2, Title: "task 8"}
	for _, sortKey := range []string{"created_at", "updated_at", "priority", "title", "due_date"} {
		for _, desc := range []bool{true, false} {
			for _, page := range []string{"first page", "next page"} {
				q := listQuery{User: "heavy", Sort: sortKey, Desc: desc, Limit: 100}
				if page == "next page" {
					c := *after
					c.Sort, c.Desc = sortKey, desc
					q.After = &c
				}
				index := listingIndex(sortKey, desc)
				t.Run(fmt.Sprintf("%s desc=%v %s", sortKey, desc, page), func(t *testing.T) {
					plan := explain(t, pool, q)
					var used []string
					plan.walk(func(n planNode) {
						switch n.NodeType {
						case "Sort", "Incremental Sort", "Seq Scan":
							t.Errorf("plan has a %s node", n.NodeType)
						}
						if n.IndexName != "" && n.IndexName != "task_counts_pkey" { // the feed position, for the ETag
							used = append(used, n.IndexName)
						}
					})
					if len(used) != 1 || used[0] != index {
						t.Errorf("indexes used %v, want %s", used, index)
					}
				})

				// q, in the same shape: the head and the walk of a search read
				// the same index in order, only as far as they are asked to (no
				// Sort: they stop at the page's end); its last step reads the
				// search index. No step scans the whole table.
				q.Q = "abc1"
				l := newListing(q)
				for _, step := range []struct {
					name, sql string
				}{
					{"head", l.searchSQL(sqlSearchHead)},
					{"walk", l.searchSQL(sqlSearchWalk)},
					{"index", l.searchSQL(sqlSearchIndex)},
				} {
					t.Run(fmt.Sprintf("q %s %s desc=%v %s", step.name, sortKey, desc, page), func(t *testing.T) {
						plan := explainSQL(t, pool, step.sql, l.args)
						var used []string
						plan.walk(func(n planNode) {
							switch {
							case n.NodeType == "Seq Scan":
								t.Errorf("plan has a Seq Scan")
							case step.name != "index" && (n.NodeType == "Sort" || n.NodeType == "Incremental Sort"):
								t.Errorf("plan has a %s node: it reads every task before the first", n.NodeType)
							}
							if n.IndexName != "" && n.IndexName != "task_counts_pkey" {
								used = append(used, n.NodeType+" "+n.IndexName)
							}
						})
						want := []string{"Index Scan " + index}
						if step.name == "index" {
							want = []string{"Bitmap Index Scan task_search_keys_gin", "Index Scan tasks_pkey"}
						}
						if !slices.Equal(used, want) {
							t.Errorf("indexes used %v, want %v", used, want)
						}
					})
				}
			}
		}
	}
}

// listingIndex is the index that yields a listing's rows in its order.
func listingIndex(sortKey string, desc bool) string {
	switch {
	case sortKey == "due_date" && desc:
		return "tasks_user_due_desc"
	case sortKey == "due_date":
		return "tasks_user_due_asc"
	case sortKey == "priority":
		return "tasks_user_priority"
	}
	return "tasks_user_" + sortKey
}

// The feed's page (sqlChangesPage) reads the user's changes from the feed's
// index, in position order (the part's own ORDER BY), and nothing reorders
// them: the plan's top is an Append whose first member reads the changes
// and whose second reads no task, so the changes come in the order
// ChangesAfterJSON encodes them in, each row passed on as it is made.
func TestChangesPagePlanKeepsTheOrder(t *testing.T) {
	pool, err := pgxpool.New(t.Context(), newDatabase(t, true))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, sql := range []string{
		`INSERT INTO tasks (user_id, title, change_seq) SELECT 'u' || (g % 20), 'task ' || g, g FROM generate_series(1, 20000) g`,
		`INSERT INTO task_tombstones (user_id, task_id, seq, deleted_at) SELECT 'u' || (g % 20), 100000 + g, 30000 + g, now() FROM generate_series(1, 2000) g`,
		`VACUUM ANALYZE tasks, task_tombstones`,
	} {
		if _, err := pool.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, since := range []int64{0, 19000, 40000} {
		plan := explainSQL(t, pool, sqlChangesPage, []any{"u3", since, 101})
		var parts [][]string // the Append's members, in order (its InitPlan, the tombstones' probe, is not one)
		for _, part := range plan.Plans {
			if part.Parent == "Member" {
				var nodes []string
				part.walk(func(n planNode) { nodes = append(nodes, n.NodeType, n.RelationName, n.IndexName) })
				parts = append(parts, nodes)
			}
		}
		if plan.NodeType != "Append" || len(parts) != 2 {
			t.Fatalf("since %d: the plan's top is %s of %d members, want an Append of two: %+v", since, plan.NodeType, len(parts), plan)
		}
		if !slices.Contains(parts[0], "tasks_user_change") || slices.Contains(parts[1], "tasks") {
			t.Errorf("since %d: the Append reads %v, then %v; want the tasks by tasks_user_change, then no task", since, parts[0], parts[1])
		}
	}
}
