package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the test reads.
type planNode struct {
	NodeType  string     `json:"Node Type"`
	IndexName string     `json:"Index Name"`
	Plans     []planNode `json:"Plans"`
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
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE tasks`); err != nil {
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

	wantIndex := map[string]string{
		"created_at": "tasks_user_created_at", "updated_at": "tasks_user_updated_at", "priority": "tasks_user_priority",
		"title": "tasks_user_title", "due_date asc": "tasks_user_due_asc", "due_date desc": "tasks_user_due_desc",
	}
	after := &cursor{ID: 12345, Time: time.Now(), Rank: 2, Title: "task 8"}
	for _, sortKey := range []string{"created_at", "updated_at", "priority", "title", "due_date"} {
		for _, desc := range []bool{true, false} {
			for _, page := range []string{"first page", "next page"} {
				name := fmt.Sprintf("%s desc=%v %s", sortKey, desc, page)
				t.Run(name, func(t *testing.T) {
					q := listQuery{User: "heavy", Sort: sortKey, Desc: desc, Limit: 100}
					if page == "next page" {
						c := *after
						c.Sort, c.Desc = sortKey, desc
						q.After = &c
					}
					index := wantIndex[sortKey]
					if sortKey == "due_date" {
						index = wantIndex[sortKey+map[bool]string{true: " desc", false: " asc"}[desc]]
					}
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
			}
		}
	}

	// q goes through the trigram index, within the user's tasks.
	plan := explain(t, pool, listQuery{User: "heavy", Sort: "created_at", Desc: true, Limit: 100, Q: "abc1"})
	var nodes []string
	plan.walk(func(n planNode) { nodes = append(nodes, n.NodeType+" "+n.IndexName) })
	if !strings.Contains(strings.Join(nodes, ","), "tasks_search") {
		t.Errorf("q plan does not use the search index: %v", nodes)
	}
}
