package main

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var linkNext = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// listPage gets one page and the path of the next one ("" on the last page).
func (a *testAPI) listPage(t testing.TB, tok, path string) ([]taskJSON, string) {
	t.Helper()
	r := mustStatus(t, a.do(t, "GET", path, nil, bearer(tok)), http.StatusOK)
	var tasks []taskJSON
	r.decode(t, &tasks)
	link := r.Header.Get("Link")
	if link == "" {
		return tasks, ""
	}
	m := linkNext.FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("malformed Link %q", link)
	}
	return tasks, m[1]
}

// listAll walks every page of GET /api/me/tasks?query.
func (a *testAPI) listAll(t testing.TB, tok, query string) []taskJSON {
	t.Helper()
	var all []taskJSON
	path := "/api/me/tasks?" + query
	for path != "" {
		var page []taskJSON
		page, path = a.listPage(t, tok, path)
		all = append(all, page...)
	}
	return all
}

func titles(tasks []taskJSON) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.Title
	}
	return out
}

func TestListFilters(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	mk := func(body map[string]any) { a.createTask(t, tok, body) }
	mk(map[string]any{"title": "Buy milk", "priority": "high", "tags": []string{"home", "shop"}, "due_date": "2026-01-10T00:00:00Z"})
	mk(map[string]any{"title": "Pay 100% of rent", "priority": "medium", "tags": []string{"home"}, "completed": true})
	mk(map[string]any{"title": "file_a report", "description": "for the BOSS", "tags": []string{"work"}, "due_date": "2026-03-01T00:00:00Z"})
	mk(map[string]any{"title": "fileXa taxes", "priority": "low", "tags": []string{"Home"}})
	mk(map[string]any{"title": `back\slash`, "description": "milk run"})
	_, other := a.newUser(t)
	a.createTask(t, other, map[string]any{"title": "Buy milk", "tags": []string{"home"}})

	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{`back\slash`, "fileXa taxes", "file_a report", "Pay 100% of rent", "Buy milk"}},
		{"status=all", []string{`back\slash`, "fileXa taxes", "file_a report", "Pay 100% of rent", "Buy milk"}},
		{"status=completed", []string{"Pay 100% of rent"}},
		{"status=pending", []string{`back\slash`, "fileXa taxes", "file_a report", "Buy milk"}},
		{"priority=high", []string{"Buy milk"}},
		{"priority=none", []string{`back\slash`, "file_a report"}},
		{"tag=home", []string{"Pay 100% of rent", "Buy milk"}}, // exact: not "Home"
		{"tag=Home", []string{"fileXa taxes"}},
		{"q=MILK", []string{`back\slash`, "Buy milk"}}, // title or description, any case
		{"q=" + url.QueryEscape("100%"), []string{"Pay 100% of rent"}},
		{"q=" + url.QueryEscape("%"), []string{"Pay 100% of rent"}}, // % is an ordinary character
		{"q=e_a", []string{"file_a report"}},                        // _ too
		{"q=" + url.QueryEscape(`\`), []string{`back\slash`}},
		{"q=boss", []string{"file_a report"}},
		{"q=", []string{`back\slash`, "fileXa taxes", "file_a report", "Pay 100% of rent", "Buy milk"}},
		{"due_before=2026-02-01T00:00:00Z", []string{"Buy milk"}},
		{"due_after=2026-01-10T00:00:00Z", []string{"file_a report"}},                            // strictly after
		{"due_after=" + url.QueryEscape("2026-01-10T02:00:00+02:00"), []string{"file_a report"}}, // any offset
		{"due_before=2026-01-10T00:00:00Z", nil},                                                 // strictly before
		{"status=pending&tag=home&q=buy", []string{"Buy milk"}},
	}
	for _, c := range cases {
		t.Run(c.query, func(t *testing.T) {
			if got := titles(a.listAll(t, tok, c.query)); !slices.Equal(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestListBadParameters(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	for _, q := range []string{
		"status=done", "priority=urgent", "tag=", "tag=" + strings.Repeat("t", 51), "q=" + strings.Repeat("q", 201),
		"q=%00", "tag=%00", "q=%FF", "due_before=2026-01-01", "due_after=tomorrow", "due_before=2026-01-01T00:00:00",
		"sort=size", "order=up", "limit=0", "limit=501", "limit=ten", "limit=-1", "cursor=bogus", "cursor=",
	} {
		t.Run(q, func(t *testing.T) {
			r := mustStatus(t, a.do(t, "GET", "/api/me/tasks?"+q, nil, bearer(tok)), http.StatusUnprocessableEntity)
			p := r.problem(t)
			name, _, _ := strings.Cut(q, "=")
			if len(p.Errors) != 1 || p.Errors[0].Field != name {
				t.Fatalf("errors %+v", p.Errors)
			}
		})
	}
}

// Each sort orders as documented, ties broken by id in the same direction.
func TestListSorts(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	specs := []map[string]any{
		{"title": "banana", "priority": "low", "due_date": "2026-05-01T00:00:00Z"},
		{"title": "Apple", "priority": "high"},
		{"title": "cherry", "priority": "none", "due_date": "2026-04-01T00:00:00Z"},
		{"title": "apple", "priority": "medium", "due_date": "2026-05-01T00:00:00Z"},
		{"title": "Éclair", "priority": "high"},
		{"title": "date", "priority": "low", "due_date": "2026-06-01T00:00:00Z"},
	}
	var created []taskJSON
	for _, s := range specs {
		created = append(created, a.createTask(t, tok, s))
	}
	// Touch two tasks so updated_at differs from created_at order.
	mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d", created[0].ID), `{"title":"banana split"}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d/complete", created[2].ID), nil, bearer(tok)), http.StatusOK)
	current := a.listAll(t, tok, "")

	rank := map[string]int{"none": 0, "low": 1, "medium": 2, "high": 3}
	keys := map[string]func(x, y taskJSON) int{
		"created_at": func(x, y taskJSON) int { return cmp.Compare(x.CreatedAt, y.CreatedAt) },
		"updated_at": func(x, y taskJSON) int { return cmp.Compare(x.UpdatedAt, y.UpdatedAt) },
		"priority":   func(x, y taskJSON) int { return cmp.Compare(rank[x.Priority], rank[y.Priority]) },
		"title":      func(x, y taskJSON) int { return cmp.Compare(strings.ToLower(x.Title), strings.ToLower(y.Title)) },
		"due_date":   func(x, y taskJSON) int { return cmp.Compare(*x.DueDate, *y.DueDate) },
	}
	for sort, key := range keys {
		for _, order := range []string{"asc", "desc"} {
			t.Run(sort+" "+order, func(t *testing.T) {
				want := slices.Clone(current)
				slices.SortFunc(want, func(x, y taskJSON) int {
					if sort == "due_date" && (x.DueDate == nil) != (y.DueDate == nil) {
						return map[bool]int{true: 1, false: -1}[x.DueDate == nil] // no due date: last, either order
					}
					c := 0
					if sort != "due_date" || x.DueDate != nil {
						c = key(x, y)
					}
					if c == 0 {
						c = cmp.Compare(x.ID, y.ID)
					}
					if order == "desc" {
						c = -c
					}
					return c
				})
				for _, limit := range []string{"", "&limit=1", "&limit=4"} { // pages follow the same order
					got := a.listAll(t, tok, "sort="+sort+"&order="+order+limit)
					if !slices.Equal(titles(got), titles(want)) {
						t.Fatalf("limit %q: got %q, want %q", limit, titles(got), titles(want))
					}
				}
			})
		}
	}
	// Default: created_at desc.
	if got := a.listAll(t, tok, ""); got[0].ID != created[len(created)-1].ID {
		t.Fatalf("default order starts with %q", got[0].Title)
	}
}

func TestListPagination(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	for i := range 5 {
		a.createTask(t, tok, map[string]any{"title": fmt.Sprintf("t%d", i), "priority": "high"})
	}
	page, next := a.listPage(t, tok, "/api/me/tasks?limit=2&priority=high&sort=title&order=asc")
	if !slices.Equal(titles(page), []string{"t0", "t1"}) || next == "" {
		t.Fatalf("first page %q next %q", titles(page), next)
	}
	u, _ := url.Parse(next)
	if u.Path != "/api/me/tasks" || u.Query().Get("limit") != "2" || u.Query().Get("priority") != "high" ||
		u.Query().Get("sort") != "title" || u.Query().Get("order") != "asc" || u.Query().Get("cursor") == "" {
		t.Fatalf("next link %q lost the parameters", next)
	}
	page, next = a.listPage(t, tok, next)
	page2, last := a.listPage(t, tok, next)
	if !slices.Equal(titles(page), []string{"t2", "t3"}) || !slices.Equal(titles(page2), []string{"t4"}) || last != "" {
		t.Fatalf("pages %q %q last %q", titles(page), titles(page2), last)
	}
	// Exactly a page's worth: no next link.
	if _, next := a.listPage(t, tok, "/api/me/tasks?limit=5"); next != "" {
		t.Fatalf("next link on the last page: %q", next)
	}

	// A cursor from another sort or order is refused.
	_, next = a.listPage(t, tok, "/api/me/tasks?limit=2")
	cur := regexp.MustCompile(`cursor=([^&]+)`).FindStringSubmatch(next)[1]
	for _, q := range []string{"sort=title&cursor=" + cur, "order=asc&cursor=" + cur, "cursor=x" + cur[1:]} {
		r := mustStatus(t, a.do(t, "GET", "/api/me/tasks?"+q, nil, bearer(tok)), http.StatusUnprocessableEntity)
		if p := r.problem(t); p.Errors[0].Field != "cursor" {
			t.Fatalf("%s: %+v", q, p)
		}
	}
}

// Walking the pages while other tasks are inserted sees every original task exactly once.
func TestListPaginationStableUnderInserts(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	orig := map[int64]bool{}
	for i := range 40 {
		orig[a.createTask(t, tok, map[string]any{"title": fmt.Sprintf("orig %02d", i), "priority": []string{"low", "high"}[i%2],
			"due_date": time.Date(2026, 1, 1+i%7, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)}).ID] = true
	}
	for _, query := range []string{"limit=6", "limit=6&order=asc", "limit=6&sort=title", "limit=6&sort=priority",
		"limit=6&sort=due_date&order=asc", "limit=6&sort=due_date"} {
		t.Run(query, func(t *testing.T) {
			seen := map[int64]int{}
			path := "/api/me/tasks?" + query
			for i := 0; path != ""; i++ {
				var page []taskJSON
				page, path = a.listPage(t, tok, path)
				for _, task := range page {
					seen[task.ID]++
				}
				// Between pages, others insert tasks that sort anywhere.
				a.createTask(t, tok, map[string]any{"title": fmt.Sprintf("new %s %d a", query, i), "priority": "medium"})
				a.createTask(t, tok, map[string]any{"title": fmt.Sprintf("new %s %d z", query, i), "due_date": "2026-01-03T00:00:00Z"})
			}
			for id := range orig {
				if seen[id] != 1 {
					t.Fatalf("original task %d seen %d times", id, seen[id])
				}
			}
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("task %d seen %d times", id, n)
				}
			}
		})
	}
}
