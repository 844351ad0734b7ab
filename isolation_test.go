package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"
)

// Several users perform random operations at once, each also aiming at the
// others' task ids. No user ever sees, changes or deletes another's task: at
// the end every user's tasks are exactly what their own operations left.
func TestIsolationRandomized(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.rateLimit = 0 })
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	const users, ops = 6, 120
	type owned struct {
		owner string
		id    int64
	}
	var (
		mu  sync.Mutex
		all []owned // every id ever created, by anyone
	)
	pick := func(rng *rand.Rand) (owned, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(all) == 0 {
			return owned{}, false
		}
		return all[rng.IntN(len(all))], true
	}

	var wg sync.WaitGroup
	for u := range users {
		user, tok := a.newUser(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(u)))
			model := map[int64]taskJSON{} // what this user's tasks must be
			check := func(r testResponse, what string) bool {
				if r.Status == http.StatusOK || r.Status == http.StatusCreated {
					if task := r.task(t); task.UserID != user {
						t.Errorf("%s: %s got a task of %s", user, what, task.UserID)
						return false
					}
				}
				return true
			}
			for i := range ops {
				target, ok := pick(rng)
				path := fmt.Sprintf("/api/me/tasks/%d", target.id)
				mine := ok && target.owner == user
				_, exists := model[target.id]
				switch op := rng.IntN(6); {
				case op == 0 || !ok:
					r := a.do(t, "POST", "/api/me/tasks", map[string]any{"title": fmt.Sprintf("%s op %d", user, i)}, bearer(tok))
					if r.Status != http.StatusCreated || !check(r, "create") {
						t.Errorf("create: %s", r)
						return
					}
					task := r.task(t)
					model[task.ID] = task
					mu.Lock()
					all = append(all, owned{user, task.ID})
					mu.Unlock()
				case op == 1:
					r := a.do(t, "GET", path, nil, bearer(tok))
					check(r, "get")
					if want := map[bool]int{true: 200, false: 404}[mine && exists]; r.Status != want {
						t.Errorf("%s GET %d of %s: %d, want %d", user, target.id, target.owner, r.Status, want)
					}
				case op == 2:
					r := a.do(t, "PATCH", path, map[string]any{"title": fmt.Sprintf("%s renamed %d", user, i)}, bearer(tok))
					check(r, "update")
					if mine && exists {
						model[target.id] = r.task(t)
					} else if r.Status != 404 {
						t.Errorf("%s PATCH %d of %s: %d", user, target.id, target.owner, r.Status)
					}
				case op == 3:
					r := a.do(t, "PATCH", path+"/complete", nil, bearer(tok))
					check(r, "complete")
					if mine && exists {
						model[target.id] = r.task(t)
					} else if r.Status != 404 {
						t.Errorf("%s complete %d of %s: %d", user, target.id, target.owner, r.Status)
					}
				case op == 4:
					r := a.do(t, "DELETE", path, nil, bearer(tok))
					if want := map[bool]int{true: 204, false: 404}[mine && exists]; r.Status != want {
						t.Errorf("%s DELETE %d of %s: %d, want %d", user, target.id, target.owner, r.Status, want)
					}
					if mine {
						delete(model, target.id)
					}
				default:
					for _, task := range a.listAll(t, tok, "limit=50") {
						if task.UserID != user {
							t.Errorf("%s listed a task of %s", user, task.UserID)
						}
					}
				}
			}
			// The end state is exactly the model.
			got := a.listAll(t, tok, "sort=created_at&order=asc&limit=500")
			var want []taskJSON
			for _, task := range model {
				want = append(want, task)
			}
			sort.Slice(want, func(i, j int) bool { return want[i].ID < want[j].ID })
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("%s ends with\n%s\nwant\n%s", user, gotJSON, wantJSON)
			}
		}()
	}
	wg.Wait()
}
