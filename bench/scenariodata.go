package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// What some scenarios need besides the seeded tasks: list-304 the users'
// current list ETags; delete a pool of tasks it can delete, one per request,
// since a deleted task cannot be deleted again.

// fetchListETags reads each user's current list ETag, which list-304 sends
// as If-None-Match.
func fetchListETags(ctx context.Context, t *setup, _ options, _ float64) error {
	for i := range t.users {
		u := &t.users[i]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.svc.base+"/api/"+u.id+"/tasks", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", u.auth)
		res, err := t.client.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("ETag") == "" {
			return fmt.Errorf("list of user %s: status %d, ETag %q", u.id, res.StatusCode, res.Header.Get("ETag"))
		}
		u.listETag = res.Header.Get("ETag")
	}
	return nil
}

// doomedTasks are a user's share of the delete pool: ids first,
// first+stride, ...; each is taken once.
type doomedTasks struct {
	first, stride int64
	n             int64
	next          atomic.Int64
}

// take is the next task to delete; 0 (which no task has: the request is a
// 404 and counts as an error) when the pool is used up.
func (d *doomedTasks) take() int64 {
	if d == nil {
		return 0
	}
	j := d.next.Add(1) - 1
	if j >= d.n {
		return 0
	}
	return d.first + j*d.stride
}

// deletePool is the tasks made for the delete scenario: ids first..last,
// task first+k belonging to user k % users + 1, so that pgbench too can
// name a task and its owner from a counter (bench/pgbench/delete.sql).
type deletePool struct {
	first, last int64
}

// deletesPerSecond sizes the pool: more than either service or PostgreSQL
// deletes per second on the machines the bench runs on, a -baseline that
// deletes for good (5,600/s on 2 cores) and pgbench's moves to the trash
// (9,754/s on 2 cores, on a quiet night) included. A pool used up shows as
// failed requests (to task 0), or fails pgbench's check.
const deletesPerSecond = 12000

// makeDeletePool inserts the pool in one transaction, as creates would
// leave it (the quota counters, and on a service with the change feed, a
// feed position per task), and hands each user its share. At rate 0 (as
// fast as the service answers) the pool holds deletesPerSecond for the
// warm-up and the run; at a set rate, twice a user's expected share of rate
// deletes a second and 10 more, since each request picks its user at random.
func makeDeletePool(ctx context.Context, t *setup, o options, rate float64) error {
	users := len(t.users)
	perUser := int(math.Ceil(deletesPerSecond * (o.warmup + o.duration).Seconds() / float64(users)))
	if rate > 0 {
		perUser = int(math.Ceil(2*rate*(o.warmup+o.duration).Seconds()/float64(users))) + 10
	}
	n := perUser * users
	ids := make([]string, users)
	for i, u := range t.users {
		if u.id != strconv.Itoa(i+1) {
			return fmt.Errorf("delete pool: user %d is %q, want %d", i, u.id, i+1)
		}
		ids[i] = u.id
	}
	conn, err := pgx.Connect(ctx, t.db.databaseURL(nil))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var feed bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'tasks' AND column_name = 'change_seq')`).Scan(&feed); err != nil {
		return err
	}
	insert := `
WITH counts AS (
    UPDATE task_counts SET tasks = tasks + $2 WHERE user_id = ANY ($3)
), ins AS (
    INSERT INTO tasks (user_id, title)
    SELECT (g % $4 + 1)::text, 'Task to delete ' || g FROM generate_series(0, $1 - 1) g ORDER BY g
    RETURNING id
)
SELECT min(id), max(id), count(*) FROM ins`
	if feed {
		insert = `
WITH counts AS (
    UPDATE task_counts SET tasks = tasks + $2, seq = seq + $2 WHERE user_id = ANY ($3)
    RETURNING user_id, seq - $2 AS base
), ins AS (
    INSERT INTO tasks (user_id, title, change_seq)
    SELECT c.user_id, 'Task to delete ' || g, c.base + g / $4 + 1
    FROM generate_series(0, $1 - 1) g JOIN counts c ON c.user_id = (g % $4 + 1)::text
    ORDER BY g
    RETURNING id
)
SELECT min(id), max(id), count(*) FROM ins`
	}
	var pool deletePool
	var count int
	if err := conn.QueryRow(ctx, insert, n, perUser, ids, users).Scan(&pool.first, &pool.last, &count); err != nil {
		return fmt.Errorf("delete pool: %w", err)
	}
	var misplaced int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE id BETWEEN $1 AND $2 AND user_id <> ((id - $1) % $3 + 1)::text`,
		pool.first, pool.last, users).Scan(&misplaced); err != nil {
		return err
	}
	if count != n || pool.last-pool.first+1 != int64(n) || misplaced != 0 {
		return fmt.Errorf("delete pool: %d tasks in ids %d..%d, %d of them not where expected", count, pool.first, pool.last, misplaced)
	}
	t.pool = pool
	for i := range t.users {
		t.users[i].doomed = &doomedTasks{first: pool.first + int64(i), stride: int64(users), n: int64(perUser)}
	}
	return nil
}

// restoreDeletePool brings the pool back from the trash for pgbench, and
// gives its script where the pool starts and how its clients share it.
func restoreDeletePool(ctx context.Context, t *setup, o options) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, t.db.databaseURL(nil))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `UPDATE tasks SET deleted_at = NULL WHERE id BETWEEN $1 AND $2 AND deleted_at IS NOT NULL`,
		t.pool.first, t.pool.last); err != nil {
		return nil, fmt.Errorf("restore the delete pool: %w", err)
	}
	return poolVars(t, o), nil
}

// poolVars tell a pool's script (delete.sql, purge.sql) where the pool
// starts and how its o.conns clients share it.
func poolVars(t *setup, o options) map[string]string {
	return map[string]string{"n": "-1", "clients": strconv.Itoa(o.conns), "pool_first": strconv.FormatInt(t.pool.first, 10)}
}

// checkDeletePool checks that each of pgbench's transactions trashed a task
// (so none found its task gone, which would flatter the ceiling), then
// trashes the rest of the pool, so later scenarios list what they listed
// before.
func checkDeletePool(ctx context.Context, t *setup, o options, transactions int) error {
	conn, err := pgx.Connect(ctx, t.db.databaseURL(nil))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var trashed int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE id BETWEEN $1 AND $2 AND deleted_at IS NOT NULL`,
		t.pool.first, t.pool.last).Scan(&trashed); err != nil {
		return err
	}
	if err := trashRest(ctx, conn, t.pool); err != nil {
		return err
	}
	return checkPoolUse("trashed", trashed, transactions, o.conns, t.pool)
}

// checkPoolUse checks that a pgbench run of transactions on clients
// connections used (trashed, deleted) one task of the pool each: a
// transaction cut off at the end of the run may have committed without
// being counted, at most one per client.
func checkPoolUse(did string, used, transactions, clients int, pool deletePool) error {
	if used < transactions || used > transactions+clients {
		return fmt.Errorf("pgbench's run counted %d transactions but %s %d tasks of the pool (%d..%d): the pool was too small",
			transactions, did, used, pool.first, pool.last)
	}
	return nil
}

// trashDeletePool trashes what the service's run left of the pool, so later
// scenarios list what they listed before.
func trashDeletePool(ctx context.Context, t *setup) error {
	conn, err := pgx.Connect(ctx, t.db.databaseURL(nil))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return trashRest(ctx, conn, t.pool)
}

func trashRest(ctx context.Context, conn *pgx.Conn, pool deletePool) error {
	_, err := conn.Exec(ctx, `UPDATE tasks SET deleted_at = now() WHERE id BETWEEN $1 AND $2 AND deleted_at IS NULL`, pool.first, pool.last)
	if err != nil {
		return fmt.Errorf("trash the rest of the delete pool: %w", err)
	}
	return nil
}

// makePurgePool makes a pool as makeDeletePool does and moves it to the
// trash, from where purge deletes its tasks for good.
func makePurgePool(ctx context.Context, t *setup, o options, rate float64) error {
	if err := makeDeletePool(ctx, t, o, rate); err != nil {
		return err
	}
	return trashDeletePool(ctx, t)
}

// remakePurgePool gives pgbench a fresh pool in the trash (the service's run
// deleted part of the last one for good), and its script where the pool
// starts and how its clients share it.
func remakePurgePool(ctx context.Context, t *setup, o options) (map[string]string, error) {
	if err := makePurgePool(ctx, t, o, 0); err != nil {
		return nil, err
	}
	return poolVars(t, o), nil
}

// checkPurgePool checks that each of pgbench's transactions deleted a task of
// the pool for good (so none found its task gone, which would flatter the
// ceiling); what is left of the pool stays in the trash.
func checkPurgePool(ctx context.Context, t *setup, o options, transactions int) error {
	conn, err := pgx.Connect(ctx, t.db.databaseURL(nil))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var left int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE id BETWEEN $1 AND $2`, t.pool.first, t.pool.last).Scan(&left); err != nil {
		return err
	}
	return checkPoolUse("deleted", int(t.pool.last-t.pool.first+1-left), transactions, o.conns, t.pool)
}
