package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The MCP endpoint, tested with the SDK's own client over real HTTP against
// the real handler and database (startAPI). Every exchange goes through
// contractTransport, so /mcp answers as openapi.json says.

// mcpVersions are the protocol versions the tests speak: the SDK client's
// default (2026-07-28, sessionless, server/discover) and the initialize
// handshake other clients (the TypeScript and Python SDKs, the MCP
// Inspector) use.
var mcpVersions = []string{"", "2025-11-25"}

// bearerTransport adds the token to every request, as an MCP client
// configured with a token does.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// connectMCP connects the SDK's client to a's /mcp with token.
func connectMCP(t testing.TB, a *testAPI, token, version string) (*mcp.ClientSession, error) {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "tasks-api-test", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{
		Endpoint:   a.URL + "/mcp",
		HTTPClient: &http.Client{Transport: bearerTransport{token: token, base: contractTransport(t, http.DefaultTransport)}},
		MaxRetries: -1, // a refusal is an answer to check, not a hiccup to retry
	}
	return client.Connect(t.Context(), transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
}

func mcpSession(t testing.TB, a *testAPI, token, version string) *mcp.ClientSession {
	t.Helper()
	s, err := connectMCP(t, a, token, version)
	if err != nil {
		t.Fatalf("connect to /mcp: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// call calls a tool; a protocol error fails the test.
func call(t testing.TB, s *mcp.ClientSession, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := s.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return res
}

func resultText(t testing.TB, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("%d content blocks, want 1 text", len(res.Content))
	}
	text, ok := res.Content[0].(*mcp.TextContent)
	if !ok || text.Text == "" {
		t.Fatalf("content %#v, want text", res.Content[0])
	}
	return text.Text
}

// toolOK checks that res succeeded and decodes its structured content.
func toolOK[T any](t testing.TB, res *mcp.CallToolResult) T {
	t.Helper()
	var v T
	text := resultText(t, res)
	if res.IsError {
		t.Fatalf("isError: %s", text)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return v
}

// toolError checks that res is an isError result and returns its text.
func toolError(t testing.TB, res *mcp.CallToolResult) string {
	t.Helper()
	text := resultText(t, res)
	if !res.IsError {
		t.Fatalf("not an error: %s", text)
	}
	if res.StructuredContent != nil {
		t.Errorf("an error result with structured content %v: a client would check it against the output schema", res.StructuredContent)
	}
	return text
}

type mcpTaskList struct {
	Tasks      []taskJSON `json:"tasks"`
	NextCursor *string    `json:"next_cursor"`
}

type mcpStats struct {
	Total, Completed, Pending, Overdue int
}

const errNotFound = "No task with this id exists for this user."

func TestMCPToolsAreDescribed(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")
	res, err := s.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// readOnly, destructive, idempotent
	want := map[string][3]bool{
		"list_tasks": {true, false, true}, "get_task": {true, false, true}, "task_stats": {true, false, true},
		"add_task": {false, false, false}, "update_task": {false, true, true}, "complete_task": {false, false, true},
		"delete_task": {false, true, true}, "restore_task": {false, false, true},
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		w, ok := want[tool.Name]
		if !ok {
			t.Errorf("unexpected tool %s", tool.Name)
			continue
		}
		an := tool.Annotations
		if an == nil || an.ReadOnlyHint != w[0] || an.IdempotentHint != w[2] || an.OpenWorldHint == nil || *an.OpenWorldHint {
			t.Errorf("%s: annotations %+v", tool.Name, an)
		} else if !w[0] && (an.DestructiveHint == nil || *an.DestructiveHint != w[1]) {
			t.Errorf("%s: destructiveHint %v, want %v", tool.Name, an.DestructiveHint, w[1])
		}
		if len(tool.Description) < 60 || tool.Title == "" {
			t.Errorf("%s: title %q, description %q: too short to act on", tool.Name, tool.Title, tool.Description)
		}
		in, _ := tool.InputSchema.(map[string]any)
		out, _ := tool.OutputSchema.(map[string]any)
		if in["type"] != "object" || in["additionalProperties"] != false || out["type"] != "object" {
			t.Errorf("%s: input schema %v, output schema %v", tool.Name, in, out)
		}
		props, _ := in["properties"].(map[string]any)
		for p := range props {
			if p == "user_id" {
				t.Errorf("%s takes a user id: the user must be the token's", tool.Name)
			}
		}
	}
	if len(names) != len(want) {
		t.Errorf("tools %v, want %d", names, len(want))
	}
}

func TestMCPTaskLifecycle(t *testing.T) {
	for _, version := range mcpVersions {
		t.Run("protocol "+cmpOr(version, "default"), func(t *testing.T) {
			a := startAPI(t)
			_, tok := a.newUser(t)
			s := mcpSession(t, a, tok, version)

			res := call(t, s, "add_task", map[string]any{"title": " Buy milk ", "description": "Two litres.",
				"priority": "high", "tags": []string{"home", "errands", "home"}, "due_date": "2036-11-26T10:00:00+01:00"})
			task := toolOK[taskJSON](t, res)
			if task.Title != "Buy milk" || task.Version != 1 || task.Priority != "high" || !slices.Equal(task.Tags, []string{"home", "errands"}) ||
				task.DueDate == nil || *task.DueDate != "2036-11-26T09:00:00.000000Z" || task.Completed {
				t.Fatalf("created %+v", task)
			}
			if text := resultText(t, res); !strings.Contains(text, fmt.Sprintf("#%d \"Buy milk\"", task.ID)) || !strings.Contains(text, "version 1") {
				t.Errorf("text %q does not show the id, title and version", text)
			}
			id := task.ID

			// The structured result is the task as REST returns it, byte for byte once decoded.
			rest := mustStatus(t, a.do(t, "GET", fmt.Sprintf("/api/me/tasks/%d", id), nil, bearer(tok)), http.StatusOK).task(t)
			if got := toolOK[taskJSON](t, call(t, s, "get_task", map[string]any{"id": id})); !equalJSON(t, got, rest) || !equalJSON(t, task, rest) {
				t.Errorf("get_task %+v, REST %+v", got, rest)
			}

			task = toolOK[taskJSON](t, call(t, s, "update_task", map[string]any{"id": id, "expected_version": 1,
				"title": "Buy oat milk", "description": nil}))
			if task.Title != "Buy oat milk" || task.Description != "" || task.Version != 2 || task.Priority != "high" {
				t.Errorf("updated %+v", task)
			}

			task = toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": id}))
			if !task.Completed || task.CompletedAt == nil || task.Version != 3 {
				t.Errorf("completed %+v", task)
			}
			if again := toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": fmt.Sprint(id)})); again.Version != 3 || !again.Completed {
				t.Errorf("completing again changed the task: %+v", again)
			}
			if reopened := toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": id, "completed": false})); reopened.Completed || reopened.Version != 4 {
				t.Errorf("reopened %+v", reopened)
			}

			for _, title := range []string{"Call Ana", "File taxes"} {
				toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": title}))
			}
			// Paging: every task once, then next_cursor null.
			var seen []int64
			args := map[string]any{"limit": 1, "sort": "title", "order": "asc"}
			for range 5 {
				page := toolOK[mcpTaskList](t, call(t, s, "list_tasks", args))
				for _, tk := range page.Tasks {
					seen = append(seen, tk.ID)
				}
				if page.NextCursor == nil {
					break
				}
				args["cursor"] = *page.NextCursor
			}
			if len(seen) != 3 || seen[0] != id {
				t.Errorf("pages gave %v, want 3 tasks starting with %d", seen, id)
			}
			found := toolOK[mcpTaskList](t, call(t, s, "list_tasks", map[string]any{"status": "pending", "q": "OAT", "priority": "high", "tag": "home"}))
			if len(found.Tasks) != 1 || found.Tasks[0].ID != id || found.NextCursor != nil {
				t.Errorf("filtered list %+v", found)
			}

			if st := toolOK[mcpStats](t, call(t, s, "task_stats", nil)); st != (mcpStats{Total: 3, Pending: 3, Overdue: 0}) {
				t.Errorf("stats %+v", st)
			}

			deleted := toolOK[map[string]any](t, call(t, s, "delete_task", map[string]any{"id": id, "expected_version": 4}))
			if deleted["in_trash"] != true || deleted["id"] != float64(id) {
				t.Errorf("delete_task gave %v", deleted)
			}
			if text := toolError(t, call(t, s, "get_task", map[string]any{"id": id})); text != errNotFound {
				t.Errorf("get_task of a trashed task: %q", text)
			}
			if st := toolOK[mcpStats](t, call(t, s, "task_stats", map[string]any{})); st.Total != 2 {
				t.Errorf("stats after delete %+v", st)
			}
			restored := toolOK[taskJSON](t, call(t, s, "restore_task", map[string]any{"id": id}))
			if restored.Version != 6 /* 5 in the trash */ || restored.DeletedAt != nil || restored.Title != "Buy oat milk" {
				t.Errorf("restored %+v", restored)
			}
			if text := toolError(t, call(t, s, "restore_task", map[string]any{"id": id})); text != "No task with this id is in this user's trash." {
				t.Errorf("restoring twice: %q", text)
			}

			// An unknown tool is a protocol error, not a tool result.
			if _, err := s.CallTool(t.Context(), &mcp.CallToolParams{Name: "drop_all_tasks"}); err == nil {
				t.Error("an unknown tool was called")
			}
		})
	}
}

// equalJSON compares two values by their JSON encodings.
func equalJSON(t testing.TB, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestMCPValidationMatchesREST sends the same bad input to a tool and to the
// REST route it mirrors: the tool's text is REST's message, and names every
// field REST names.
func TestMCPValidationMatchesREST(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")
	id := a.createTask(t, tok, map[string]any{"title": "Existing"}).ID

	badTask := map[string]any{"title": "   ", "priority": "urgent", "due_date": "2026-11-26",
		"tags": []any{"ok", "", 7}, "color": "red", "description": strings.Repeat("x", maxDescriptionLen+1)}
	cases := []struct {
		name      string
		tool      string
		args      map[string]any
		restPath  string // the REST request with the same input; "" for none
		restBody  any
		restQuery string
		extra     []string // lines of the tool's own arguments
	}{
		{name: "create without a title", tool: "add_task", args: map[string]any{"priority": "low"},
			restPath: "POST /api/me/tasks", restBody: map[string]any{"priority": "low"}},
		{name: "create with every field bad", tool: "add_task", args: badTask, restPath: "POST /api/me/tasks", restBody: badTask},
		{name: "update with bad fields", tool: "update_task", args: map[string]any{"id": id, "tags": "home", "completed": "yes", "due_date": 5},
			restPath: fmt.Sprintf("PUT /api/me/tasks/%d", id), restBody: map[string]any{"tags": "home", "completed": "yes", "due_date": 5}},
		{name: "list with bad filters", tool: "list_tasks",
			args:     map[string]any{"status": "done", "limit": 0, "sort": "size", "order": "up", "due_before": "tomorrow", "q": strings.Repeat("q", maxSearchLen+1)},
			restPath: "GET /api/me/tasks", restQuery: "status=done&limit=0&sort=size&order=up&due_before=tomorrow&q=" + strings.Repeat("q", maxSearchLen+1)},
		{name: "list with a bad cursor", tool: "list_tasks", args: map[string]any{"cursor": "not-a-cursor"},
			restPath: "GET /api/me/tasks", restQuery: "cursor=not-a-cursor"},
		{name: "complete with a bad value", tool: "complete_task", args: map[string]any{"id": id, "completed": "yes"},
			restPath: fmt.Sprintf("PATCH /api/me/tasks/%d/complete", id), restBody: map[string]any{"completed": "yes"}},
		{name: "tool arguments", tool: "update_task", args: map[string]any{"id": "abc", "expected_version": 0, "title": ""},
			extra: []string{"id: must be a task id", "expected_version: must be a task's version", "title: must not be empty"}},
		{name: "an id that is not an id", tool: "get_task", args: map[string]any{"id": -3}, extra: []string{"id: must be a task id"}},
		{name: "a missing id", tool: "delete_task", args: map[string]any{}, extra: []string{"id: is required"}},
		{name: "arguments a tool does not take", tool: "delete_task", args: map[string]any{"id": id, "force": true, "user_id": "someone"},
			extra: []string{"force: is not an argument of delete_task", "user_id: is not an argument of delete_task"}},
		{name: "list arguments of the wrong type", tool: "list_tasks", args: map[string]any{"tag": 5, "page": 2},
			extra: []string{"tag: must be a string", "page: is not an argument of list_tasks"}},
		{name: "stats take nothing", tool: "task_stats", args: map[string]any{"status": "all"},
			extra: []string{"status: is not an argument of task_stats"}},
		{name: "a bad request_id", tool: "add_task", args: map[string]any{"title": "x", "request_id": ""},
			extra: []string{"request_id: must be a string of 1 to 255 printable ASCII characters"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := toolError(t, call(t, s, c.tool, c.args))
			want := slices.Clone(c.extra)
			if c.restPath != "" {
				method, path, _ := strings.Cut(c.restPath, " ")
				if c.restQuery != "" {
					path += "?" + c.restQuery
				}
				p := a.do(t, method, path, c.restBody, bearer(tok)).problem(t)
				if p.Status != http.StatusUnprocessableEntity {
					t.Fatalf("REST answered %d: %s", p.Status, p.Detail)
				}
				if !strings.HasPrefix(text, p.Detail) {
					t.Errorf("text %q does not start with REST's message %q", text, p.Detail)
				}
				if len(p.Errors) > 1 {
					for _, f := range p.Errors {
						want = append(want, "- "+f.Field+": "+f.Message)
					}
				}
			}
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("text %q lacks %q", text, w)
				}
			}
		})
	}
	if got := a.do(t, "GET", fmt.Sprintf("/api/me/tasks/%d", id), nil, bearer(tok)).task(t); got.Version != 1 {
		t.Errorf("a refused call changed the task: %+v", got)
	}
}

func TestMCPUsersAreIsolated(t *testing.T) {
	a := startAPI(t)
	_, alice := a.newUser(t)
	_, bob := a.newUser(t)
	sa, sb := mcpSession(t, a, alice, ""), mcpSession(t, a, bob, "2025-11-25")

	mine := toolOK[taskJSON](t, call(t, sa, "add_task", map[string]any{"title": "Alice's secret"}))
	trashed := toolOK[taskJSON](t, call(t, sa, "add_task", map[string]any{"title": "Alice's old task"}))
	toolOK[map[string]any](t, call(t, sa, "delete_task", map[string]any{"id": trashed.ID}))

	for _, c := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"get_task", map[string]any{"id": mine.ID}, errNotFound},
		{"update_task", map[string]any{"id": mine.ID, "title": "Bob was here"}, errNotFound},
		{"update_task", map[string]any{"id": mine.ID, "title": "Bob was here", "expected_version": 1}, errNotFound},
		{"complete_task", map[string]any{"id": mine.ID}, errNotFound},
		{"delete_task", map[string]any{"id": mine.ID}, errNotFound},
		{"restore_task", map[string]any{"id": trashed.ID}, "No task with this id is in this user's trash."},
	} {
		if text := toolError(t, call(t, sb, c.tool, c.args)); text != c.want {
			t.Errorf("bob's %s on alice's task: %q, want %q", c.tool, text, c.want)
		}
	}
	if list := toolOK[mcpTaskList](t, call(t, sb, "list_tasks", nil)); len(list.Tasks) != 0 {
		t.Errorf("bob lists %+v", list.Tasks)
	}
	if st := toolOK[mcpStats](t, call(t, sb, "task_stats", nil)); st.Total != 0 {
		t.Errorf("bob's stats %+v", st)
	}
	if got := toolOK[taskJSON](t, call(t, sa, "get_task", map[string]any{"id": mine.ID})); got.Version != 1 || got.Completed || got.UserID == "" {
		t.Errorf("alice's task changed: %+v", got)
	}
}

func TestMCPExpectedVersion(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")
	task := toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": "Draft"}))
	toolOK[taskJSON](t, call(t, s, "update_task", map[string]any{"id": task.ID, "title": "Final"}))

	want := "The task has changed since the version named in expected_version; fetch it and try again."
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"update_task", map[string]any{"id": task.ID, "expected_version": 1, "title": "Stale"}},
		{"complete_task", map[string]any{"id": task.ID, "expected_version": 1}},
		{"delete_task", map[string]any{"id": task.ID, "expected_version": 1}},
	} {
		if text := toolError(t, call(t, s, c.tool, c.args)); text != want {
			t.Errorf("%s with a stale version: %q", c.tool, text)
		}
	}
	if got := toolOK[taskJSON](t, call(t, s, "get_task", map[string]any{"id": task.ID})); got.Title != "Final" || got.Version != 2 || got.Completed {
		t.Errorf("a stale call changed the task: %+v", got)
	}
	toolOK[map[string]any](t, call(t, s, "delete_task", map[string]any{"id": task.ID, "expected_version": 2}))
	if text := toolError(t, call(t, s, "restore_task", map[string]any{"id": task.ID, "expected_version": 1})); text != want {
		t.Errorf("restore_task with a stale version: %q", text)
	}
}

func TestMCPQuota(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.maxTasks = 2 })
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")
	first := toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": "One"}))
	toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": "Two"}))

	want := "This user has reached the maximum number of tasks; delete some first."
	if text := toolError(t, call(t, s, "add_task", map[string]any{"title": "Three", "request_id": "quota-1"})); text != want {
		t.Errorf("add_task over the quota: %q", text)
	}
	toolOK[map[string]any](t, call(t, s, "delete_task", map[string]any{"id": first.ID}))
	// The failure was not recorded: the retry runs, and fits now.
	toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": "Three", "request_id": "quota-1"}))
	if text := toolError(t, call(t, s, "restore_task", map[string]any{"id": first.ID})); text != want {
		t.Errorf("restore_task over the quota: %q", text)
	}
}

func TestMCPRateLimit(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	a := startAPI(t, func(o *apiOptions) {
		o.rateLimit = 2 // a burst of 4
		o.clock = func() time.Time { return time.Unix(0, now.Load()) }
	})
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "2025-11-25") // initialize and initialized: 2 of the 4

	var text string
	for range 4 {
		if res := call(t, s, "task_stats", nil); res.IsError {
			text = toolError(t, res)
			break
		}
	}
	if text != "Too many requests for this user; retry after the number of seconds in Retry-After. Retry-After: 1 second." {
		t.Fatalf("over the rate: %q", text)
	}
	// Any other request over the rate is REST's 429.
	if _, err := s.ListTools(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "Too Many Requests") {
		t.Errorf("tools/list over the rate: %v", err)
	}
	res := a.do(t, "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, bearer(tok), header("Accept", "application/json, text/event-stream"))
	if p := mustStatus(t, res, http.StatusTooManyRequests).problem(t); p.Type != "/problems/rate-limited" || res.Header.Get("Retry-After") != "1" {
		t.Errorf("ping over the rate: %+v, Retry-After %q", p, res.Header.Get("Retry-After"))
	}
	now.Add(int64(10 * time.Second))
	toolOK[mcpStats](t, call(t, s, "task_stats", nil))
}

// TestMCPRetriedAddTaskCreatesOnce: add_task with a request_id creates one
// task however often it is retried, concurrently or not, on any instance.
func TestMCPRetriedAddTaskCreatesOnce(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")

	first := call(t, s, "add_task", map[string]any{"title": "Pay rent", "tags": []string{"home"}, "request_id": "rent-2026-11"})
	task := toolOK[taskJSON](t, first)
	if first.Meta["replayed"] != nil {
		t.Errorf("the first call says replayed: %v", first.Meta)
	}
	// The same fields, worded otherwise (spacing, order, a duplicate tag), on
	// another connection, as a retrying client would send them.
	other := mcpSession(t, a, tok, "2025-11-25")
	again := call(t, other, "add_task", map[string]any{"request_id": "rent-2026-11", "tags": []string{"home", " home"}, "title": "Pay rent "})
	if got := toolOK[taskJSON](t, again); !equalJSON(t, got, task) || again.Meta["replayed"] != true {
		t.Errorf("retry gave %+v (meta %v), want the first result %+v", got, again.Meta, task)
	}
	if resultText(t, again) != resultText(t, first) {
		t.Errorf("retry text %q, first %q", resultText(t, again), resultText(t, first))
	}

	if text := toolError(t, call(t, s, "add_task", map[string]any{"title": "Pay the rent", "request_id": "rent-2026-11"})); !strings.Contains(text, "request_id: was used") {
		t.Errorf("a request_id reused for other fields: %q", text)
	}

	// Concurrent retries: one task; a retry that finds the first still
	// running is told to retry.
	var wg sync.WaitGroup
	results := make([]*mcp.CallToolResult, 6)
	for i := range results {
		wg.Go(func() {
			results[i], _ = s.CallTool(context.Background(), &mcp.CallToolParams{Name: "add_task",
				Arguments: map[string]any{"title": "Water plants", "request_id": "plants-1"}})
		})
	}
	wg.Wait()
	ids := map[float64]bool{}
	for _, r := range results {
		switch {
		case r == nil:
			t.Error("a concurrent call failed")
		case r.IsError:
			if text := toolError(t, r); !strings.HasPrefix(text, "A request with this request_id is still being processed; retry shortly.") {
				t.Errorf("concurrent retry: %q", text)
			}
		default:
			ids[r.StructuredContent.(map[string]any)["id"].(float64)] = true
		}
	}
	list := toolOK[mcpTaskList](t, call(t, s, "list_tasks", map[string]any{"q": "Water plants"}))
	if len(list.Tasks) != 1 || len(ids) != 1 || !ids[float64(list.Tasks[0].ID)] {
		t.Errorf("concurrent retries made %d tasks; results name %v", len(list.Tasks), ids)
	}

	// A REST Idempotency-Key with the same text is another key.
	res := mustStatus(t, a.do(t, "POST", "/api/me/tasks", map[string]any{"title": "Pay rent"}, bearer(tok),
		header("Idempotency-Key", "rent-2026-11")), http.StatusCreated)
	if res.Header.Get("Idempotent-Replayed") != "" || res.task(t).ID == task.ID {
		t.Errorf("REST's Idempotency-Key shared add_task's request_id: %s", res)
	}
	if list := toolOK[mcpTaskList](t, call(t, s, "list_tasks", map[string]any{"q": "Pay rent"})); len(list.Tasks) != 2 {
		t.Errorf("%d tasks called Pay rent, want 2 (one per key)", len(list.Tasks))
	}
}

// TestMCPChangesReachTheFeed: a change made through a tool is in the change
// feed, wakes a client waiting on it, and reaches the live events.
func TestMCPChangesReachTheFeed(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	s := mcpSession(t, a, tok, "")
	stream := openStream(t, a, "/api/me/events", bearerHeader(tok))
	if ready, _ := stream.next(t, 5*time.Second, false); ready.Event != "ready" {
		t.Fatalf("the stream starts with %+v", ready)
	}

	var feed struct {
		Changes []struct {
			Op   string    `json:"op"`
			ID   int64     `json:"id"`
			Task *taskJSON `json:"task"`
		} `json:"changes"`
		Next    string `json:"next"`
		HasMore bool   `json:"has_more"`
	}
	mustStatus(t, a.do(t, "GET", "/api/me/changes", nil, bearer(tok)), http.StatusOK).decode(t, &feed)
	since := feed.Next

	// A long poll, waiting for the first change.
	type answer struct {
		status int
		body   []byte
		err    error
	}
	polled := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("GET", a.URL+"/api/me/changes?wait=20&since="+since, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- answer{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		polled <- answer{res.StatusCode, body, err}
	}()
	time.Sleep(200 * time.Millisecond) // let the poll start waiting
	task := toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{"title": "Seen everywhere"}))
	select {
	case got := <-polled:
		if got.err != nil || got.status != http.StatusOK || !strings.Contains(string(got.body), `"Seen everywhere"`) {
			t.Fatalf("the waiting poll got %d %s %v", got.status, got.body, got.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting poll was not woken by add_task")
	}

	toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": task.ID}))
	toolOK[map[string]any](t, call(t, s, "delete_task", map[string]any{"id": task.ID}))
	// The stream sends each change as it reads the feed: changes made in
	// quick succession may come as one, in the task's latest state.
	for op := ""; op != "delete"; {
		_, c := stream.nextChange(t)
		if op = c.Op; c.id() != task.ID || (op != "upsert" && op != "delete") {
			t.Fatalf("live event %+v, want a change of task %d", c, task.ID)
		}
	}
	mustStatus(t, a.do(t, "GET", "/api/me/changes?since="+since, nil, bearer(tok)), http.StatusOK).decode(t, &feed)
	if len(feed.Changes) != 1 || feed.Changes[0].Op != "delete" || feed.Changes[0].ID != task.ID {
		t.Fatalf("changes after the tools: %+v", feed.Changes)
	}
	toolOK[taskJSON](t, call(t, s, "restore_task", map[string]any{"id": task.ID}))
	mustStatus(t, a.do(t, "GET", "/api/me/changes?since="+feed.Next, nil, bearer(tok)), http.StatusOK).decode(t, &feed)
	if len(feed.Changes) != 1 || feed.Changes[0].Op != "upsert" || feed.Changes[0].Task == nil || !feed.Changes[0].Task.Completed {
		t.Fatalf("changes after restore_task: %+v", feed.Changes)
	}
}

// mcpPost is a raw POST of one JSON-RPC message, as any MCP client sends it.
func (a *testAPI) mcpPost(t testing.TB, body string, opts ...reqOption) testResponse {
	t.Helper()
	opts = append([]reqOption{header("Accept", "application/json, text/event-stream")}, opts...)
	return a.do(t, "POST", "/mcp", body, opts...)
}

const initializeBody = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",` +
	`"capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func TestMCPAuthentication(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) {
		o.verifier.Issuer, o.verifier.Audience = "https://auth.example.com", "tasks-api"
	})
	sub, tok := a.newUser(t)
	metadata := a.URL + "/.well-known/oauth-protected-resource"
	past := time.Now().Add(-2 * time.Hour)
	mint := func(iss, aud string, now time.Time) string {
		tok, err := mintToken([]byte(testSecret), sub, iss, aud, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct {
		name, token, challenge string
	}{
		{"no token", "", `Bearer realm="tasks-api", resource_metadata="` + metadata + `"`},
		{"expired", mint("https://auth.example.com", "tasks-api", past),
			`Bearer realm="tasks-api", error="invalid_token", error_description="The token has expired.", resource_metadata="` + metadata + `"`},
		{"another audience", mint("https://auth.example.com", "other-api", time.Now()),
			`Bearer realm="tasks-api", error="invalid_token", error_description="The token's audience is not accepted.", resource_metadata="` + metadata + `"`},
		{"another issuer", mint("https://evil.example.com", "tasks-api", time.Now()),
			`Bearer realm="tasks-api", error="invalid_token", error_description="The token's issuer is not accepted.", resource_metadata="` + metadata + `"`},
		{"not a token", "abc", `Bearer realm="tasks-api", error="invalid_token", error_description="The token is not a compact JWS.", resource_metadata="` + metadata + `"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []reqOption
			if c.token != "" {
				opts = append(opts, bearer(c.token))
			}
			res := mustStatus(t, a.mcpPost(t, initializeBody, opts...), http.StatusUnauthorized)
			res.problem(t)
			if got := res.Header.Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, c.challenge)
			}
			if c.token != "" {
				if _, err := connectMCP(t, a, c.token, ""); err == nil {
					t.Error("the SDK client connected with this token")
				}
			}
		})
	}

	// The challenge's URL serves the metadata, and the token is for that resource.
	var md map[string]any
	mustStatus(t, a.do(t, "GET", "/.well-known/oauth-protected-resource", nil), http.StatusOK).decode(t, &md)
	if md["resource"] != a.URL+"/mcp" || fmt.Sprint(md["bearer_methods_supported"]) != "[header]" {
		t.Errorf("metadata %v", md)
	}
	// A good token, as the verifier checks it for /api/.
	s := mcpSession(t, a, tok, "")
	toolOK[mcpStats](t, call(t, s, "task_stats", nil))
}

// TestMCPPublicURL: PUBLIC_URL names the metadata and the resource, and
// JWT_ISSUER the authorization server, as `go run .` wires them.
func TestMCPPublicURL(t *testing.T) {
	h := newHandler(deps{
		log:      discardLog(),
		store:    newStore(testPG(t).shared, storeOptions{}),
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}),
		ready:    func(context.Context) error { return nil },
		mcp:      mcpOptions{PublicURL: "https://tasks.example.com", AuthServer: "https://app.example.com"},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a := &testAPI{URL: srv.URL, client: &http.Client{Transport: contractTransport(t, srv.Client().Transport)}}

	res := mustStatus(t, a.mcpPost(t, initializeBody), http.StatusUnauthorized)
	if got, want := res.Header.Get("WWW-Authenticate"), `Bearer realm="tasks-api", resource_metadata="https://tasks.example.com/.well-known/oauth-protected-resource"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
	var md struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
	}
	mustStatus(t, a.do(t, "GET", "/.well-known/oauth-protected-resource", nil), http.StatusOK).decode(t, &md)
	if md.Resource != "https://tasks.example.com/mcp" || !slices.Equal(md.AuthorizationServers, []string{"https://app.example.com"}) {
		t.Errorf("metadata %+v", md)
	}

	for _, c := range []struct {
		value, want string
		ok          bool
	}{
		{"https://tasks.example.com/", "https://tasks.example.com", true},
		{"http://localhost:8000/tasks-api", "http://localhost:8000/tasks-api", true},
		{"tasks.example.com", "", false},
		{"ftp://tasks.example.com", "", false},
		{"https://tasks.example.com/?a=1", "", false},
		{"https://user:pw@tasks.example.com", "", false},
	} {
		cfg, err := loadConfig(func(k string) string {
			if k == "PUBLIC_URL" {
				return c.value
			}
			return ""
		}, nil)
		if (err == nil) != c.ok || cfg.PublicURL != c.want {
			t.Errorf("PUBLIC_URL=%q: %q, %v", c.value, cfg.PublicURL, err)
		}
	}
}

// TestMCPRawClient speaks to /mcp as a client of another SDK does (the
// TypeScript SDK, the MCP Inspector): initialize, then one POST per message.
func TestMCPRawClient(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	version := header("Mcp-Protocol-Version", "2025-06-18")

	var init struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
			ServerInfo      struct{ Name string }
			Instructions    string
			Capabilities    struct{ Tools *struct{} }
		}
	}
	res := mustStatus(t, a.mcpPost(t, initializeBody, bearer(tok)), http.StatusOK)
	res.decode(t, &init)
	if init.Result.ProtocolVersion != "2025-06-18" || init.Result.ServerInfo.Name != "tasks-api" ||
		init.Result.Capabilities.Tools == nil || init.Result.Instructions == "" || res.Header.Get("Mcp-Session-Id") != "" {
		t.Errorf("initialize: %s (session %q)", res.Body, res.Header.Get("Mcp-Session-Id"))
	}
	mustStatus(t, a.mcpPost(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, bearer(tok), version), http.StatusAccepted)

	var called struct {
		Result struct {
			Content           []struct{ Type, Text string }
			StructuredContent taskJSON
			IsError           bool
		}
	}
	mustStatus(t, a.mcpPost(t, `{"jsonrpc":"2.0","id":"a1","method":"tools/call","params":{"name":"add_task","arguments":{"title":"From elsewhere"}}}`,
		bearer(tok), version), http.StatusOK).decode(t, &called)
	if r := called.Result; r.IsError || r.StructuredContent.Title != "From elsewhere" || len(r.Content) != 1 || r.Content[0].Type != "text" {
		t.Errorf("tools/call: %+v", r)
	}
	mustStatus(t, a.mcpPost(t, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_task","arguments":{"id":1e30}}}`,
		bearer(tok), version), http.StatusOK).decode(t, &called)
	if !called.Result.IsError || !strings.HasPrefix(called.Result.Content[0].Text, "id: must be a task id") {
		t.Errorf("a huge id: %+v", called.Result)
	}

	// Errors of the transport are problem+json, as everywhere.
	for _, c := range []struct {
		name   string
		res    testResponse
		status int
	}{
		{"not JSON", a.mcpPost(t, `{"jsonrpc":`, bearer(tok)), http.StatusBadRequest},
		{"no Accept", a.do(t, "POST", "/mcp", initializeBody, bearer(tok)), http.StatusBadRequest},
		{"not JSON's Content-Type", a.mcpPost(t, "", bearer(tok), header("Content-Type", "text/plain")), http.StatusUnsupportedMediaType},
		{"GET", a.do(t, "GET", "/mcp", nil, bearer(tok), header("Accept", "text/event-stream")), http.StatusMethodNotAllowed},
		{"too large", a.mcpPost(t, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"x":"`+strings.Repeat("x", maxBodyBytes)+`"}}}`, bearer(tok)),
			http.StatusRequestEntityTooLarge},
	} {
		if p := mustStatus(t, c.res, c.status).problem(t); p.RequestID == "" {
			t.Errorf("%s: %+v", c.name, p)
		}
	}
}

func TestMCPCORS(t *testing.T) {
	const inspector = "http://localhost:6274" // the MCP Inspector's origin
	a := startAPI(t, func(o *apiOptions) { o.origins = []string{inspector} })
	_, tok := a.newUser(t)

	pre := mustStatus(t, a.do(t, "OPTIONS", "/mcp", nil, header("Origin", inspector),
		header("Access-Control-Request-Method", "POST"),
		header("Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id")),
		http.StatusNoContent)
	allowed := strings.ToLower(pre.Header.Get("Access-Control-Allow-Headers"))
	for _, h := range []string{"authorization", "content-type", "mcp-protocol-version", "mcp-session-id", "last-event-id", "mcp-method", "mcp-name"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("preflight allows %q, not %s", allowed, h)
		}
	}
	if pre.Header.Get("Access-Control-Allow-Origin") != inspector || !strings.Contains(pre.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight headers %v", pre.Header)
	}
	for _, res := range []testResponse{
		mustStatus(t, a.mcpPost(t, initializeBody, header("Origin", inspector)), http.StatusUnauthorized),
		mustStatus(t, a.mcpPost(t, initializeBody, bearer(tok), header("Origin", inspector)), http.StatusOK),
	} {
		exposed := res.Header.Get("Access-Control-Expose-Headers")
		if res.Header.Get("Access-Control-Allow-Origin") != inspector || !strings.Contains(exposed, "Mcp-Session-Id") ||
			!strings.Contains(exposed, "WWW-Authenticate") {
			t.Errorf("%d: CORS headers %v", res.Status, res.Header)
		}
	}
}

// BenchmarkMCPListTasks compares tools/call list_tasks with GET /tasks over
// the same 100 tasks, each through the whole handler with no network in
// between (as BenchmarkHandlerList): "mcp" as clients of protocol 2025-11-25
// are served (the fast path), "mcp-sdk" with every message through the SDK.
// cpu-ns/op is the process's CPU time per request, all goroutines and the
// collector included: what ./bench reports as CPU per request, without the
// database's. Run it with the service's GOGC:
//
//	GOGC=400 go test -run '^$' -bench MCPListTasks -benchmem -count 6
func BenchmarkMCPListTasks(b *testing.B) {
	a := newBenchAPI(b)
	for _, t := range benchTasks(100) {
		in := newTask{Title: t.Title, Description: t.Description, Priority: t.Priority, Tags: t.Tags, DueDate: t.DueDate}
		if _, err := a.store.CreateTask(context.Background(), "bench-user", in); err != nil {
			b.Fatal(err)
		}
	}
	sdkOnly := newHandler(deps{
		log:      slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
		store:    a.store,
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}),
		ready:    func(context.Context) error { return nil },
		mcp:      mcpOptions{sdkOnly: true},
	})
	mcpList := func(h http.Handler) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/mcp", strings.NewReader(mcpListBody))
		req.Header.Set("Authorization", a.auth)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, h := range []http.Handler{a.handler, sdkOnly} {
		var page struct {
			Result struct {
				StructuredContent mcpTaskList
				IsError           bool
			}
		}
		if rec := mcpList(h); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &page) != nil ||
			page.Result.IsError || len(page.Result.StructuredContent.Tasks) != 100 {
			b.Fatalf("the MCP list is not 100 tasks: %d %.300s", rec.Code, rec.Body)
		}
	}
	b.Run("rest", func(b *testing.B) {
		measureCPU(b, func() {
			if rec := a.serve("GET", "/api/me/tasks", ""); rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		})
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"mcp", a.handler}, {"mcp-sdk", sdkOnly}} {
		b.Run(c.name, func(b *testing.B) {
			measureCPU(b, func() {
				if rec := mcpList(c.h); rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			})
		})
	}
}

// mcpListBody is the bench's mcp-list request: tools/call list_tasks with no
// filters, the first page of 100.
const mcpListBody = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_tasks","arguments":{}}}`

// measureCPU runs op in the benchmark loop and reports the process's CPU
// time per op, user and system, every goroutine and the collector included.
func measureCPU(b *testing.B, op func()) {
	b.ReportAllocs()
	start, n := processCPU(), 0
	for b.Loop() {
		op()
		n++
	}
	if used := processCPU() - start; used > 0 {
		b.ReportMetric(float64(used.Nanoseconds())/float64(n), "cpu-ns/op")
	}
}

// TestMCPFastPathMatchesSDK sends the same tools/call messages to the
// service and to one whose every message goes through the SDK, on the same
// data: the answers must be the same JSON (mcp_fastpath.go). Where they must
// differ in bytes, they show which path answered: the SDK's encoder escapes
// "<" as \u003c, the fast path does not.
func TestMCPFastPathMatchesSDK(t *testing.T) {
	a := startAPI(t)
	sdk := &testAPI{URL: startSDKOnlyAPI(t), client: a.client}
	_, tok := a.newUser(t)
	task := a.createTask(t, tok, map[string]any{"title": `Fix <b> "quotes" & ünïcode`, "priority": "high",
		"description": "Line one\nline \"two\"\ttabbed\n" + strings.Repeat("é", 150), "tags": []string{"a<b", "work"},
		"due_date": "2036-01-02T03:04:05.123456Z"})
	for range 3 {
		a.createTask(t, tok, map[string]any{"title": "Filler"})
	}
	a.do(t, "PATCH", fmt.Sprintf("/api/me/tasks/%d/complete", task.ID), nil, bearer(tok))

	calls := []string{
		fmt.Sprintf(`{"name":"get_task","arguments":{"id":%d}}`, task.ID),
		`{"name":"list_tasks","arguments":{"limit":2}}`,
		`{"name":"list_tasks","arguments":{"q":"nothing matches this"}}`,
		`{"name":"list_tasks"}`,
		`{"name":"task_stats","arguments":{},"_meta":{"progressToken":7}}`,
		`{"name":"get_task","arguments":{"id":999999999}}`,
		`{"name":"add_task","arguments":{"title":"","priority":"urgent","colour":"red"}}`,
		`{"name":"update_task","arguments":{"id":1,"expected_version":"x"}}`,
		`{"name":"add_task","arguments":"not an object"}`,
		`{"name":"no_such_tool","arguments":{}}`,
	}
	for i, params := range calls {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}`, i+1, params)
		opts := []reqOption{bearer(tok), header("Mcp-Protocol-Version", "2025-11-25")}
		fast := mustStatus(t, a.mcpPost(t, body, opts...), http.StatusOK)
		slow := mustStatus(t, sdk.mcpPost(t, body, opts...), http.StatusOK)
		var f, s any
		fast.decode(t, &f)
		slow.decode(t, &s)
		if !equalJSON(t, f, s) {
			t.Errorf("%s:\nfast path %s\nSDK       %s", params, fast.Body, slow.Body)
		}
		if i == 0 && (!strings.Contains(string(fast.Body), "Fix <b>") || !strings.Contains(string(slow.Body), `Fix \u003cb\u003e`)) {
			t.Errorf("get_task did not go through the fast path and the SDK as meant:\n%s\n%s", fast.Body, slow.Body)
		}
	}

	// add_task's replay is the same whichever path made or replays it.
	add := `{"jsonrpc":"2.0","id":"r","method":"tools/call","params":{"name":"add_task","arguments":{"title":"Once","request_id":"same-%d"}}}`
	for n, order := range [][2]*testAPI{{a, sdk}, {sdk, a}} {
		first := mustStatus(t, order[0].mcpPost(t, fmt.Sprintf(add, n), bearer(tok)), http.StatusOK)
		again := mustStatus(t, order[1].mcpPost(t, fmt.Sprintf(add, n), bearer(tok)), http.StatusOK)
		var f, g struct{ Result map[string]any }
		first.decode(t, &f)
		again.decode(t, &g)
		meta, _ := g.Result["_meta"].(map[string]any)
		delete(g.Result, "_meta")
		if !equalJSON(t, f.Result, g.Result) || meta["replayed"] != true {
			t.Errorf("replay %d:\n%s\n%s", n, first.Body, again.Body)
		}
	}
}

// startSDKOnlyAPI serves the service on the shared database with every MCP
// message going through the SDK, and returns its URL.
func startSDKOnlyAPI(t testing.TB) string {
	t.Helper()
	h := newHandler(deps{
		log:      discardLog(),
		store:    newStore(testPG(t).shared, storeOptions{MaxTasksPerUser: 10000}),
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}),
		ready:    func(context.Context) error { return nil },
		mcp:      mcpOptions{sdkOnly: true},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRawTaskTextMatches: a list's text, written from the binary rows,
// is what appendTaskText writes for the same tasks, whatever their values.
func TestRawTaskTextMatches(t *testing.T) {
	a := startAPI(t)
	user, tok := a.newUser(t)
	for _, body := range []string{
		`{"title":"plain"}`,
		`{"title":"quote \" backslash \\ tab \t nl \n ctl \u0001 <b>","description":"é ü 日本 🎉 \u2028\nsecond line\n\nfourth\n"}`,
		`{"title":"tags","tags":["a","b c","ü\"x"],"priority":"high","due_date":"2031-02-03T04:05:06.789012Z"}`,
		`{"title":"done","completed":true,"due_date":"0001-01-01T00:00:00Z","description":"` + strings.Repeat("ж", 150) + `"}`,
		`{"title":"late","due_date":"9999-12-31T23:59:59.999999Z","priority":"low","description":"\n"}`,
	} {
		a.createTask(t, tok, body)
	}
	q := a.store.Queries
	lq := listQuery{User: user, Sort: "created_at", Desc: true, Limit: 10}
	page, err := q.ListTasks(t.Context(), lq)
	if err != nil {
		t.Fatal(err)
	}
	var fromRows [][]byte
	if _, err := q.ListTasksJSONVisit(t.Context(), lq, nil, func(raw [][]byte, task *Task) error {
		if raw == nil {
			t.Fatal("the rows came in text: nothing to compare")
		}
		b, err := appendRawTaskText(nil, raw, listDescriptionLen)
		fromRows = append(fromRows, b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(fromRows) != len(page.Tasks) {
		t.Fatalf("%d rows visited, %d tasks", len(fromRows), len(page.Tasks))
	}
	for i := range page.Tasks {
		want := appendTaskText(nil, &page.Tasks[i], listDescriptionLen)
		if !bytes.Equal(fromRows[i], want) {
			t.Errorf("task %d:\nrow  %s\nwant %s", page.Tasks[i].ID, fromRows[i], want)
		}
		var plain string
		if err := json.Unmarshal(append(append([]byte{'"'}, want...), '"'), &plain); err != nil {
			t.Errorf("task %d: the text is not escaped right: %v\n%s", page.Tasks[i].ID, err, want)
		}
	}
}

// add_task takes a recurrence and reminders as REST does, every bad part
// named; complete_task creates the next occurrence once, through both paths.
func TestMCPRecurringTasks(t *testing.T) {
	a := startAPI(t)
	_, tok := a.newUser(t)
	for _, version := range mcpVersions {
		s := mcpSession(t, a, tok, version)
		task := toolOK[taskJSON](t, call(t, s, "add_task", map[string]any{
			"title": "water the plants", "due_date": "2030-03-04T09:00:00Z",
			"recurrence": map[string]any{"rule": "FREQ=WEEKLY;BYDAY=MO", "time_zone": "Europe/Berlin"},
			"reminders":  []string{"PT15M"},
		}))
		if task.ID == 0 {
			t.Fatalf("add_task: %+v", task)
		}
		done := toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": task.ID}))
		if !done.Completed {
			t.Fatalf("complete_task: %+v", done)
		}
		toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": task.ID, "completed": false}))
		toolOK[taskJSON](t, call(t, s, "complete_task", map[string]any{"id": task.ID}))
		list := toolOK[mcpTaskList](t, call(t, s, "list_tasks", map[string]any{"status": "pending", "q": "water"}))
		var next []taskJSON
		for _, x := range list.Tasks {
			if x.ID != task.ID && x.DueDate != nil && *x.DueDate == "2030-03-11T09:00:00.000000Z" {
				next = append(next, x)
			}
		}
		if len(next) != 1 {
			t.Fatalf("version %q: want one next occurrence on Monday 11 March 10:00 Berlin (09:00Z), got %+v", version, list.Tasks)
		}
		mustStatus(t, a.do(t, "DELETE", taskURL(next[0].ID), nil, bearer(tok)), http.StatusNoContent)
		msg := toolError(t, call(t, s, "add_task", map[string]any{"title": "x", "due_date": "2030-03-04T09:00:00Z",
			"recurrence": map[string]any{"rule": "FREQ=HOURLY", "time_zone": "Mars/Olympus"}, "reminders": []string{"P31D"}}))
		for _, field := range []string{"recurrence.rule", "recurrence.time_zone", "reminders[0]"} {
			if !strings.Contains(msg, field) {
				t.Errorf("version %q: the error does not name %s: %s", version, field, msg)
			}
		}
	}
}
