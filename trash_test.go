package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func taskURL(id int64) string { return fmt.Sprintf("/api/me/tasks/%d", id) }

// listIDs is the ids of a page of tasks, in order.
func listIDs(t *testing.T, r testResponse) []int64 {
	t.Helper()
	var tasks []taskJSON
	r.decode(t, &tasks)
	ids := make([]int64, len(tasks))
	for i, task := range tasks {
		ids[i] = task.ID
	}
	return ids
}

// DELETE moves a task to the trash: out of reads, lists and stats, into
// GET /trash with deleted_at, and back with restore, as it was, version + 1.
func TestTrashAndRestore(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	keep := a.createTask(t, tok, `{"title":"keep"}`)
	gone := a.createTask(t, tok, `{"title":"gone","tags":["a"],"priority":"high"}`)

	mustStatus(t, a.do(t, "DELETE", taskURL(gone.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "GET", taskURL(gone.ID), nil, bearer(tok)), http.StatusNotFound)
	mustStatus(t, a.do(t, "PUT", taskURL(gone.ID), `{"title":"x"}`, bearer(tok)), http.StatusNotFound)
	mustStatus(t, a.do(t, "PATCH", taskURL(gone.ID)+"/complete", nil, bearer(tok)), http.StatusNotFound)
	mustStatus(t, a.do(t, "DELETE", taskURL(gone.ID), nil, bearer(tok)), http.StatusNotFound)
	if ids := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK)); len(ids) != 1 || ids[0] != keep.ID {
		t.Fatalf("list after the delete: %v", ids)
	}
	var st map[string]int
	mustStatus(t, a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok)), http.StatusOK).decode(t, &st)
	if st["total"] != 1 {
		t.Fatalf("stats count the trash: %v", st)
	}

	var trash []taskJSON
	mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(tok)), http.StatusOK).decode(t, &trash)
	if len(trash) != 1 || trash[0].ID != gone.ID || trash[0].DeletedAt == nil || trash[0].Version != gone.Version+1 {
		t.Fatalf("trash %+v", trash)
	}

	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", gone.ID), nil, bearer(tok), header("If-Match", `"1"`)),
		http.StatusPreconditionFailed)
	r := mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", gone.ID), nil, bearer(tok),
		header("If-Match", fmt.Sprintf(`"%d"`, trash[0].Version))), http.StatusOK)
	back := r.task(t)
	if back.Version != gone.Version+2 || back.DeletedAt != nil || back.Title != "gone" || back.Priority != "high" ||
		len(back.Tags) != 1 || r.Header.Get("ETag") != fmt.Sprintf(`"%d"`, back.Version) {
		t.Fatalf("restored %+v (ETag %s)", back, r.Header.Get("ETag"))
	}
	mustStatus(t, a.do(t, "GET", taskURL(gone.ID), nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", gone.ID), nil, bearer(tok)), http.StatusNotFound)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", keep.ID), nil, bearer(tok)), http.StatusNotFound)
}

// Deleting for good, one task or the whole trash, leaves live tasks alone.
func TestDeleteForGood(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	live := a.createTask(t, tok, `{"title":"live"}`)
	var ids []int64
	for i := range 3 {
		task := a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i))
		mustStatus(t, a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)), http.StatusNoContent)
		ids = append(ids, task.ID)
	}
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", ids[0]), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", ids[0]), nil, bearer(tok)), http.StatusNotFound)
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", ids[0]), nil, bearer(tok)), http.StatusNotFound)
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(tok)), http.StatusOK)); len(got) != 2 {
		t.Fatalf("trash %v", got)
	}
	mustStatus(t, a.do(t, "DELETE", "/api/me/trash", nil, bearer(tok)), http.StatusNoContent)
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(tok)), http.StatusOK)); len(got) != 0 {
		t.Fatalf("trash after emptying: %v", got)
	}
	if n := a.countTasks(t, user); n != 1 {
		t.Fatalf("%d rows left, want the live task only", n)
	}
	mustStatus(t, a.do(t, "GET", taskURL(live.ID), nil, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "DELETE", "/api/me/trash?x=1", nil, bearer(tok)), http.StatusUnprocessableEntity)
}

// The trash pages like a listing, most recently deleted first.
func TestTrashPaging(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	var want []int64
	for i := range 5 {
		task := a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i))
		mustStatus(t, a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)), http.StatusNoContent)
		want = append([]int64{task.ID}, want...)
	}
	var got []int64
	for next := "/api/me/trash?limit=2"; next != ""; {
		var page []taskJSON
		page, next = a.listPage(t, tok, next)
		for _, task := range page {
			got = append(got, task.ID)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages %v, want %v", got, want)
	}
	a.createTask(t, tok, `{"title":"a"}`)
	a.createTask(t, tok, `{"title":"b"}`)
	_, next := a.listPage(t, tok, "/api/me/tasks?limit=1")
	_, q, _ := strings.Cut(next, "cursor=")
	listCursor, _, _ := strings.Cut(q, "&")
	for _, bad := range []string{"limit=0", "limit=501", "limit=x", "cursor=garbage", "cursor=" + listCursor, "sort=title"} {
		mustStatus(t, a.do(t, "GET", "/api/me/trash?"+bad, nil, bearer(tok)), http.StatusUnprocessableEntity)
	}
}

// The quota counts live tasks: the trash frees a slot, and a restore over
// the quota is 409 and changes nothing.
func TestRestoreOverQuota(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = 2 })
	_, tok := a.newUser(t)
	first := a.createTask(t, tok, `{"title":"1"}`)
	a.createTask(t, tok, `{"title":"2"}`)
	mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"3"}`, bearer(tok)), http.StatusConflict)
	mustStatus(t, a.do(t, "DELETE", taskURL(first.ID), nil, bearer(tok)), http.StatusNoContent)
	a.createTask(t, tok, `{"title":"3"}`)
	r := mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", first.ID), nil, bearer(tok)), http.StatusConflict)
	if r.problem(t).Type != problemKinds[CodeQuotaExceeded].typ {
		t.Fatal(r)
	}
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(tok)), http.StatusOK)); len(got) != 1 || got[0] != first.ID {
		t.Fatalf("the refused restore changed the trash: %v", got)
	}
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK)); len(got) != 2 {
		t.Fatalf("live tasks %v", got)
	}
}

// Twenty racing restores and creates at the quota's edge leave the quota.
func TestRestoreRacesKeepTheQuota(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = 5 })
	_, tok := a.newUser(t)
	var trashed []int64
	for i := range 5 {
		task := a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d"}`, i))
		mustStatus(t, a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)), http.StatusNoContent)
		trashed = append(trashed, task.ID)
	}
	for i := range 3 {
		a.createTask(t, tok, fmt.Sprintf(`{"title":"live%d"}`, i))
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if i%2 == 0 {
				a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", trashed[i/2%5]), nil, bearer(tok))
			} else {
				a.do(t, "POST", "/api/me/tasks", `{"title":"race"}`, bearer(tok))
			}
		})
	}
	wg.Wait()
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(tok)), http.StatusOK)); len(got) != 5 {
		t.Fatalf("%d live tasks after the race, want the quota, 5", len(got))
	}
}

// The purge deletes for good what is past TRASH_RETENTION, and each user's
// trash past MAX_TASKS_PER_USER (the oldest first); several purges at once
// are safe; sync tokens issued before still hear of every delete.
func TestTrashPurge(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.dbURL = newDatabase(t, true); o.maxTasks = 3 })
	_, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	token := syncAll(t, a, tok, "")
	var trashed []int64
	for round := range 2 {
		for i := range 3 - round {
			task := a.createTask(t, tok, fmt.Sprintf(`{"title":"r%d-%d"}`, round, i))
			mustStatus(t, a.do(t, "DELETE", taskURL(task.ID), nil, bearer(tok)), http.StatusNoContent)
			trashed = append(trashed, task.ID)
		}
	}
	old := a.createTask(t, otherTok, `{"title":"old"}`)
	mustStatus(t, a.do(t, "DELETE", taskURL(old.ID), nil, bearer(otherTok)), http.StatusNoContent)
	if _, err := a.pool.Exec(t.Context(), `UPDATE tasks SET deleted_at = now() - interval '31 days' WHERE id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := a.store.PurgeTrash(context.Background(), 720*time.Hour, 720*time.Hour); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(tok)), http.StatusOK))
	if want := []int64{trashed[4], trashed[3], trashed[2]}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("trash after the purge %v, want the 3 newest %v", got, want)
	}
	if got := listIDs(t, mustStatus(t, a.do(t, "GET", "/api/me/trash", nil, bearer(otherTok)), http.StatusOK)); len(got) != 0 {
		t.Fatalf("a task past the retention is still there: %v", got)
	}
	// The token from before the deletes hears of all five, purged or not.
	deleted := map[int64]bool{}
	for _, c := range changesSince(t, a, tok, token) {
		if c.Op == "delete" {
			deleted[c.ID] = true
		}
	}
	for _, id := range trashed {
		if !deleted[id] {
			t.Fatalf("no delete for %d in %v", id, deleted)
		}
	}
}
