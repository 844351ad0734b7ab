package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// user is one user of the load: its token, and where its tasks' ids are.
type user struct {
	id     string
	auth   string // the Authorization header
	first  int64  // the id of its first task
	stride int64  // the distance between the ids of its consecutive tasks
	tasks  int

	since    string       // a feed token from before its seeded tasks (changes)
	listETag string       // its list's current ETag (list-304)
	doomed   *doomedTasks // its share of the delete pool (delete)
}

// taskID is the id of the user's k-th task (from 0).
func (u *user) taskID(k int) int64 { return u.first + int64(k)*u.stride }

// newUser signs a token for id with the claims the service's mintToken
// puts in one (sub, iat, exp), with the shared secret.
func newUser(secret []byte, id string) (user, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().Subject(id).IssuedAt(now).Expiration(now.Add(24 * time.Hour)).Build()
	if err != nil {
		return user{}, fmt.Errorf("build token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256(), secret))
	if err != nil {
		return user{}, fmt.Errorf("sign token: %w", err)
	}
	return user{id: id, auth: "Bearer " + string(signed)}, nil
}

// newClient keeps one connection per concurrent client alive between
// requests, as a browser or a proxy in front of the service would.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

const (
	seedUsers        = 50
	seedTasksPerUser = 100
)

// seed creates seedUsers × seedTasksPerUser tasks through the API, user by
// user, one request at a time, so that on a fresh database user u (named
// "u", a number pgbench can bind) owns the ids (u-1)*100+1 .. u*100. It
// checks that every id came out that way, because the pgbench scripts and
// the get, update and toggle scenarios compute ids with this formula. With
// feed, it first asks each user's change feed for a token, after which the
// seeded tasks are 100 changes (the changes scenario).
func seed(ctx context.Context, c *http.Client, base string, secret []byte, feed bool) ([]user, error) {
	users := make([]user, 0, seedUsers)
	for n := 1; n <= seedUsers; n++ {
		u, err := newUser(secret, strconv.Itoa(n))
		if err != nil {
			return nil, err
		}
		u.first, u.stride, u.tasks = int64(n-1)*seedTasksPerUser+1, 1, seedTasksPerUser
		if feed {
			if u.since, err = feedToken(ctx, c, base, &u); err != nil {
				return nil, fmt.Errorf("seed user %s: %w", u.id, err)
			}
		}
		for k := range seedTasksPerUser {
			id, err := createSeedTask(ctx, c, base, &u, k)
			if err != nil {
				return nil, fmt.Errorf("seed user %s: %w", u.id, err)
			}
			if want := u.taskID(k); id != want {
				return nil, fmt.Errorf("seed: task %d of user %s got id %d, want %d: the database was not fresh, "+
					"or ids are not allocated in order; the scenarios and pgbench scripts depend on this layout", k+1, u.id, id, want)
			}
		}
		users = append(users, u)
	}
	return users, nil
}

// seedBody is a task as the frontend would create it: some have a
// description, a priority, tags or a due date.
func seedBody(k int) []byte {
	t := map[string]any{"title": fmt.Sprintf("Seeded task %d: review the weekly plan", k+1)}
	if k%3 == 0 {
		t["description"] = "Go through the notes from Monday and write down what is still open."
	}
	t["priority"] = []string{"none", "low", "medium", "high"}[k%4]
	if k%2 == 0 {
		t["tags"] = []string{"work", []string{"planning", "errands", "home"}[k%3]}
	}
	if k%5 == 0 {
		t["due_date"] = time.Now().Add(time.Duration(k) * 24 * time.Hour).UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(t)
	return b
}

func createSeedTask(ctx context.Context, c *http.Client, base string, u *user, k int) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/"+u.id+"/tasks", bytes.NewReader(seedBody(k)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", u.auth)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("create: status %d: %s", res.StatusCode, body)
	}
	var task struct{ ID int64 }
	if err := json.Unmarshal(body, &task); err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	return task.ID, nil
}

// feedToken is the next token of a full sync of the user's changes: where
// the feed stands now.
func feedToken(ctx context.Context, c *http.Client, base string, u *user) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/"+u.id+"/changes?limit=1", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", u.auth)
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	var page struct {
		Changes []json.RawMessage `json:"changes"`
		Next    string            `json:"next"`
		HasMore bool              `json:"has_more"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &page) != nil || page.Next == "" || len(page.Changes) > 0 || page.HasMore {
		return "", fmt.Errorf("changes of a user without tasks: status %d: %s", res.StatusCode, body)
	}
	return page.Next, nil
}
