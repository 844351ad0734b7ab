package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The tools of /mcp (mcp.go is the endpoint). Each takes the REST fields and
// filters as its arguments and hands them to the same parsers as the REST
// handler it mirrors (task.go, params.go), then calls the same store method,
// so it answers with the same messages, and its changes reach the change feed
// and the live events alike. A task comes back as REST encodes it
// (encode.go), with a short text for the model.

// mcpTools are the tools' dependencies.
type mcpTools struct {
	store   *Store
	gate    *dbGate // fails calls fast while the database is down; nil: off
	timeout time.Duration
	log     *slog.Logger
}

// mcpInstructions tell the model what the server is for, once, at initialize.
const mcpInstructions = `Tools to manage the signed-in user's task list; they act for the user of the access token only.
Task ids are integers that list_tasks and add_task return. Timestamps are RFC 3339 in UTC with microseconds; send any offset (2026-11-26T09:00:00+01:00).
delete_task moves a task to the trash and restore_task brings it back. To change a task safely, pass the version you read as expected_version.
A failed call returns isError with a message naming every bad argument: fix them and call again.`

// newMCPServer is the MCP server with every tool, and the tools by name, for
// the fast path (mcp_fastpath.go) to run the same ones.
func newMCPServer(m *mcpTools) (*mcp.Server, map[string]toolFunc) {
	s := mcp.NewServer(&mcp.Implementation{Name: "tasks-api", Title: "Tasks", Version: "1.0.0"},
		&mcp.ServerOptions{Instructions: mcpInstructions})
	byName := map[string]toolFunc{}
	for _, t := range m.tools() {
		s.AddTool(t.tool, m.sdkHandler(t.tool.Name, t.fn))
		byName[t.tool.Name] = t.fn
	}
	return s, byName
}

// toolFunc is a tool's work: the caller's arguments in, its answer out.
type toolFunc func(ctx context.Context, user string, args toolArgs) (toolOutput, error)

// toolOutput is a tool's answer.
type toolOutput struct {
	structured []byte // JSON, as the tool's output schema describes it
	// The same, short, for the model to read, escaped as inside a JSON string:
	// a list's text is built once, in the form the response carries it.
	text     []byte
	replayed bool      // add_task: the answer of an earlier call with the same request_id
	pooled   []*[]byte // bufferPool's buffers behind structured and text
}

// release returns the output's buffers to the pool once the answer is
// written. Only the fast path does: the SDK holds a result until it has
// encoded it, and a buffer that is not returned is simply collected.
func (o toolOutput) release() {
	for _, b := range o.pooled {
		putBuffer(b)
	}
}

// plainText is the text unescaped, as the SDK's TextContent holds it.
func (o toolOutput) plainText() string {
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, o.text...), '"'), &s); err != nil {
		return string(o.text) // not reached: the text is escaped by appendEscaped
	}
	return s
}

// textOutput is a short text, escaped.
func textOutput(structured []byte, text string) toolOutput {
	return toolOutput{structured: structured, text: appendEscaped(nil, text)}
}

type toolDef struct {
	tool *mcp.Tool
	fn   toolFunc
}

// tools lists every tool: its name, what a model needs to know to use it
// (units, formats, what "not found" means), its schemas and annotations.
func (m *mcpTools) tools() []toolDef {
	return []toolDef{
		{&mcp.Tool{
			Name: "list_tasks", Title: "List tasks",
			Description: "List the user's tasks (not those in the trash), newest first unless sort and order say otherwise. " +
				"Filters combine with AND. Returns {tasks, next_cursor}: when next_cursor is not null, more tasks match; " +
				"call list_tasks again with cursor set to it and the same other arguments for the next page. " +
				"Each task's id is what the other tools take, and its version is what expected_version takes.",
			InputSchema: listArgsSchema(), OutputSchema: listSchema(), Annotations: readOnlyTool(),
		}, m.listTasks},
		{&mcp.Tool{
			Name: "get_task", Title: "Get a task",
			Description: "Read one task by its id. \"Not found\" means the user has no such task: it never existed, " +
				"was deleted (it may be in the trash: restore_task), or is not this user's.",
			InputSchema: object(idArg()), OutputSchema: taskSchema(), Annotations: readOnlyTool(),
		}, m.getTask},
		{&mcp.Tool{
			Name: "add_task", Title: "Add a task",
			Description: "Create a task; only title is required. Pass request_id (a new unique string, such as a UUID, per task " +
				"you mean to create) so that retrying is safe: a repeat with the same request_id within 24 hours returns " +
				"the first result and creates nothing. Fails when the user already holds the maximum number of tasks.",
			InputSchema: object(append(taskFieldArgs(false), requestIDArg())...), OutputSchema: taskSchema(),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: new(false), OpenWorldHint: new(false)},
		}, m.addTask},
		{&mcp.Tool{
			Name: "update_task", Title: "Update a task",
			Description: "Change some fields of a task: omitted fields keep their values; null clears description, tags or due_date; " +
				"tags replaces the whole list. With expected_version, the change is made only if the task is still at that " +
				"version; if not, nothing changes: get_task, then decide again. An update that changes nothing keeps the version.",
			InputSchema: object(append([]prop{idArg(), expectedVersionArg()}, taskFieldArgs(true)...)...), OutputSchema: taskSchema(),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)},
		}, m.updateTask},
		{&mcp.Tool{
			Name: "complete_task", Title: "Complete a task",
			Description: "Mark a task done (completed true, the default) or not done again (completed false). " +
				"Completing a completed task changes nothing; completed_at keeps when it was first completed.",
			InputSchema: object(idArg(), expectedVersionArg(),
				prop{"completed", &jsonschema.Schema{Type: "boolean", Default: json.RawMessage("true"),
					Description: "true: done (the default); false: not done."}}),
			OutputSchema: taskSchema(),
			Annotations:  &mcp.ToolAnnotations{DestructiveHint: new(false), IdempotentHint: true, OpenWorldHint: new(false)},
		}, m.completeTask},
		{&mcp.Tool{
			Name: "delete_task", Title: "Delete a task (to the trash)",
			Description: "Move a task to the trash: it leaves lists and stats, and restore_task brings it back, as it was, " +
				"until the trash is purged (after 30 days by default).",
			InputSchema: object(idArg(), expectedVersionArg()), OutputSchema: deletedSchema(),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), IdempotentHint: true, OpenWorldHint: new(false)},
		}, m.deleteTask},
		{&mcp.Tool{
			Name: "restore_task", Title: "Restore a task from the trash",
			Description: "Bring a task back from the trash, as it was; its version goes up by one. \"Not found\" means " +
				"no task with this id is in the user's trash. Fails when the user already holds the maximum number of tasks.",
			InputSchema: object(idArg(), expectedVersionArg()), OutputSchema: taskSchema(),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: new(false), IdempotentHint: true, OpenWorldHint: new(false)},
		}, m.restoreTask},
		{&mcp.Tool{
			Name: "task_stats", Title: "Count tasks",
			Description: "Count the user's tasks: total, completed, pending, and overdue (pending with a due_date in the past). " +
				"Tasks in the trash are not counted.",
			InputSchema: object(), OutputSchema: statsSchema(), Annotations: readOnlyTool(),
		}, m.taskStats},
	}
}

func readOnlyTool() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)}
}

// sdkHandler adapts fn to the SDK.
func (m *mcpTools) sdkHandler(name string, fn toolFunc) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return toolResult(m.run(ctx, name, fn, req.Params.Arguments)), nil
	}
}

// toolResult is a tool's answer as the SDK sends it. A failure is an
// isError result whose text is the message REST gives, rather than a
// protocol error, so the model reads it and can correct its call.
func toolResult(out toolOutput, e *Error) *mcp.CallToolResult {
	if e != nil {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: toolErrorText(e)}}}
	}
	res := &mcp.CallToolResult{
		Content:           []mcp.Content{&mcp.TextContent{Text: out.plainText()}},
		StructuredContent: json.RawMessage(out.structured),
	}
	if out.replayed {
		res.Meta = mcp.Meta{"replayed": true}
	}
	return res
}

// run runs the tool fn for the token's user, as the REST chain runs a
// handler: not over the user's rate (limitMCPRate), not while the database
// is known to be down (failFastWhenDown), within the request deadline. A
// failure comes back as the *Error the client is told; one on the server's
// side is logged.
func (m *mcpTools) run(ctx context.Context, name string, fn toolFunc, rawArgs json.RawMessage) (toolOutput, *Error) {
	out, err := m.call(ctx, fn, rawArgs)
	if err == nil {
		return out, nil
	}
	e := asError(ctx, err)
	if statusOf(e.Code) >= 500 {
		logToolFailure(ctx, m.log, name, e, err)
	}
	return toolOutput{}, e
}

func (m *mcpTools) call(ctx context.Context, fn toolFunc, rawArgs json.RawMessage) (toolOutput, error) {
	if limited, ok := ctx.Value(rateLimitedKey{}).(*Error); ok {
		return toolOutput{}, limited
	}
	user := userIDFrom(ctx)
	if user == "" { // authenticate runs before the SDK; this is a wiring bug
		return toolOutput{}, errors.New("mcp: a tool call without an authenticated user")
	}
	if m.gate != nil && m.gate.down.Load() {
		return toolOutput{}, errDatabaseUnavailable(nil)
	}
	args, err := parseToolArgs(rawArgs)
	if err != nil {
		return toolOutput{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	out, err := fn(ctx, user, args)
	if m.gate != nil && codeOf(err) == CodeUnavailable {
		m.gate.suspect()
	}
	return out, err
}

// ---- the tools ------------------------------------------------------------

func (m *mcpTools) listTasks(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	values, errs := listValues(args)
	lq, err := parseListQuery(values)
	if err := withFieldErrors(errs, err); err != nil {
		return toolOutput{}, err
	}
	lq.User = user
	// The page is the hottest answer: its JSON comes straight from the rows,
	// as REST's does, and its text is written beside it, row by row.
	sb, tb := getBuffer(), getBuffer()
	out := toolOutput{pooled: []*[]byte{sb, tb}}
	text := (*tb)[:0]
	visit := func(raw [][]byte, t *Task) error {
		text = append(text, `\n`...)
		if raw == nil {
			text = appendTaskText(text, t, listDescriptionLen)
			return nil
		}
		var err error
		text, err = appendRawTaskText(text, raw, listDescriptionLen)
		return err
	}
	page, err := m.store.ListTasksJSONVisit(ctx, lq, append((*sb)[:0], `{"tasks":`...), visit)
	if err != nil {
		out.release()
		return toolOutput{}, err
	}
	s, next := append(page.Body, `,"next_cursor":`...), ""
	if page.More {
		next = page.Next.String()
		s = appendJSONString(s, next)
	} else {
		s = append(s, "null"...)
	}
	s = append(s, '}')
	text = slices.Insert(text, 0, listHeader(page.Count, lq.After != nil)...)
	if next != "" { // a cursor is URL-safe base64: nothing to escape
		text = append(text, `\nMore tasks match: call list_tasks with the same arguments and cursor \"`...)
		text = append(text, next...)
		text = append(text, `\".`...)
	}
	*sb, *tb = s, text
	out.structured, out.text = s, text
	return out, nil
}

// listHeader is the first line of a list's text.
func listHeader(count int, paged bool) []byte {
	switch {
	case count == 0 && paged:
		return []byte("No more tasks.")
	case count == 0:
		return []byte("No tasks match.")
	case count == 1:
		return []byte("1 task:")
	}
	return append(strconv.AppendInt(make([]byte, 0, 16), int64(count), 10), " tasks:"...)
}

func (m *mcpTools) getTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	id := args.taskID(&errs)
	args.refuseRest("get_task", &errs)
	if err := errs.err(); err != nil {
		return toolOutput{}, err
	}
	t, err := m.store.GetTask(ctx, user, id)
	if err != nil {
		return toolOutput{}, err
	}
	return taskOutput("", &t), nil
}

func (m *mcpTools) addTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	requestID := args.requestID(&errs)
	in, err := parseNewTask(args) // what is left are task fields, as in a POST body
	if err := withFieldErrors(errs, err); err != nil {
		return toolOutput{}, err
	}
	if requestID == "" {
		t, err := m.store.CreateTask(ctx, user, in)
		if err != nil {
			return toolOutput{}, err
		}
		return taskOutput("Created: ", &t), nil
	}
	return m.addTaskOnce(ctx, user, requestID, in)
}

// mcpKeyPrefix starts the Idempotency-Key under which add_task keeps a
// request_id. A REST key is printable ASCII only, so none can start with it:
// the two never share a record.
const mcpKeyPrefix = "mcp\x1fadd_task\x1f"

var errRequestIDReused = invalid(FieldError{Field: "request_id",
	Message: "was used within the last 24 hours for an add_task with other fields; use a new request_id"})

// addTaskOnce creates the task unless an earlier call with this request_id
// did, in which case it returns that call's answer. The key is claimed and
// the answer recorded in the create's transaction, as REST's Idempotency-Key
// does, so the two commit together and concurrent retries on any instance
// create one task. Failures are not recorded: a retry runs again.
func (m *mcpTools) addTaskOnce(ctx context.Context, user, requestID string, in newTask) (toolOutput, error) {
	fields, err := json.Marshal(in) // the validated fields: a retry that words them differently is still the same
	if err != nil {
		return toolOutput{}, err
	}
	req := idempotentRequest{user: user, key: mcpKeyPrefix + requestID, method: "MCP", path: "tools/add_task",
		bodyHash: sha256.Sum256(fields)}
	var out toolOutput
	err = m.store.InTx(ctx, func(q Queries) error {
		prev, err := q.ClaimIdempotencyKey(ctx, req)
		if err != nil {
			return err
		}
		if prev != nil {
			if prev.method != req.method || prev.path != req.path || !bytes.Equal(prev.bodyHash, req.bodyHash[:]) {
				return errRequestIDReused
			}
			out, err = decodeStoredOutput(prev.body)
			out.replayed = true
			return err
		}
		t, err := q.CreateTask(ctx, user, in)
		if err != nil {
			return err
		}
		out = taskOutput("Created: ", &t)
		body, err := json.Marshal(storedOutput{Text: out.plainText(), Structured: out.structured})
		if err != nil {
			return err
		}
		return q.RecordResponse(ctx, req, storedResponse{status: 200, headers: map[string]string{}, body: body})
	})
	return out, err
}

// storedOutput is an add_task answer as recorded for its request_id.
type storedOutput struct {
	Text       string          `json:"text"`
	Structured json.RawMessage `json:"structured"`
}

func decodeStoredOutput(body []byte) (toolOutput, error) {
	var s storedOutput
	if err := json.Unmarshal(body, &s); err != nil {
		return toolOutput{}, fmt.Errorf("mcp: decode the recorded add_task answer: %w", err)
	}
	return textOutput(s.Structured, s.Text), nil
}

func (m *mcpTools) updateTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	id := args.taskID(&errs)
	match := args.expectedVersion(&errs)
	changes, err := parseTaskChanges(args) // what is left are task fields, as in a PUT body
	if err := withFieldErrors(errs, err); err != nil {
		return toolOutput{}, err
	}
	t, err := m.store.UpdateTask(ctx, user, id, changes, match)
	if err != nil {
		return toolOutput{}, err
	}
	return taskOutput("Updated: ", &t), nil
}

// completeTask sets completed: true unless told otherwise. REST's empty body
// toggles instead, but a model that retries, or calls "complete" on a task
// already done, must not reopen it.
func (m *mcpTools) completeTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	id := args.taskID(&errs)
	match := args.expectedVersion(&errs)
	var c taskChanges
	var err error
	if raw := args.take("completed"); raw != nil {
		c, err = parseTaskChanges([]jsonMember{{Name: "completed", Value: raw}}) // REST's check of the field
	}
	args.refuseRest("complete_task", &errs)
	if err := withFieldErrors(errs, err); err != nil {
		return toolOutput{}, err
	}
	completed := c.Completed == nil || *c.Completed
	t, err := m.store.SetCompleted(ctx, user, id, &completed, match)
	if err != nil {
		return toolOutput{}, err
	}
	if completed {
		return taskOutput("Completed: ", &t), nil
	}
	return taskOutput("Reopened: ", &t), nil
}

func (m *mcpTools) deleteTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	id := args.taskID(&errs)
	match := args.expectedVersion(&errs)
	args.refuseRest("delete_task", &errs)
	if err := errs.err(); err != nil {
		return toolOutput{}, err
	}
	if err := m.store.TrashTask(ctx, user, id, match); err != nil {
		return toolOutput{}, err
	}
	ids := strconv.FormatInt(id, 10)
	return textOutput([]byte(`{"id":`+ids+`,"in_trash":true}`),
		"Task #"+ids+" is in the trash: out of lists and stats until restore_task brings it back."), nil
}

func (m *mcpTools) restoreTask(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	id := args.taskID(&errs)
	match := args.expectedVersion(&errs)
	args.refuseRest("restore_task", &errs)
	if err := errs.err(); err != nil {
		return toolOutput{}, err
	}
	var t Task
	err := m.store.InTx(ctx, func(q Queries) error {
		var err error
		t, err = q.RestoreTask(ctx, user, id, match)
		return err
	})
	if err != nil {
		return toolOutput{}, err
	}
	return taskOutput("Restored: ", &t), nil
}

func (m *mcpTools) taskStats(ctx context.Context, user string, args toolArgs) (toolOutput, error) {
	var errs fieldErrors
	args.refuseRest("task_stats", &errs)
	if err := errs.err(); err != nil {
		return toolOutput{}, err
	}
	st, err := m.store.Stats(ctx, user)
	if err != nil {
		return toolOutput{}, err
	}
	return textOutput(fmt.Appendf(nil, `{"total":%d,"completed":%d,"pending":%d,"overdue":%d}`,
		st.Total, st.Completed, st.Pending, st.Overdue),
		fmt.Sprintf("%d tasks: %d completed, %d pending (%d of them overdue).",
			st.Total, st.Completed, st.Pending, st.Overdue)), nil
}

// ---- arguments --------------------------------------------------------------

// toolArgs are a tool call's arguments: the members of a JSON object, in the
// order sent, which is what the REST parsers take from a body.
type toolArgs []jsonMember

func parseToolArgs(raw json.RawMessage) (toolArgs, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || isNull(raw) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, invalid(FieldError{Field: "arguments", Message: "must be a JSON object"})
	}
	members, err := decodeObject(raw)
	return toolArgs(members), err
}

// take removes the argument name and returns its value: nil when it is
// absent or null, since models often send null for an argument they mean to
// leave out. (Task fields are not taken: there null clears, as in REST.)
func (a *toolArgs) take(name string) json.RawMessage {
	for i, m := range *a {
		if m.Name == name {
			*a = slices.Delete(*a, i, i+1)
			if isNull(m.Value) {
				return nil
			}
			return m.Value
		}
	}
	return nil
}

// refuseRest reports each argument left over as not one the tool takes.
func (a toolArgs) refuseRest(tool string, errs *fieldErrors) {
	for _, m := range a {
		errs.add(m.Name, "is not an argument of "+tool)
	}
}

// taskID takes the required id: a task id, as in a REST path.
func (a *toolArgs) taskID(errs *fieldErrors) int64 {
	raw := a.take("id")
	if raw == nil {
		errs.add("id", "is required: the task's id, as list_tasks returns it")
		return 0
	}
	id, ok := parseTaskID(numberText(raw))
	if !ok {
		errs.add("id", "must be a task id: a positive whole number, as list_tasks returns it")
	}
	return id
}

// expectedVersion takes expected_version, REST's If-Match: nil when absent.
func (a *toolArgs) expectedVersion(errs *fieldErrors) ifMatch {
	raw := a.take("expected_version")
	if raw == nil {
		return nil
	}
	v, err := strconv.ParseInt(numberText(raw), 10, 32)
	if err != nil || v < 1 {
		errs.add("expected_version", "must be a task's version: a positive whole number, as the task's version field gives it")
		return ifMatch{}
	}
	return ifMatch{int32(v)}
}

// requestID takes add_task's request_id, REST's Idempotency-Key: "" when absent.
func (a *toolArgs) requestID(errs *fieldErrors) string {
	raw := a.take("request_id")
	if raw == nil {
		return ""
	}
	s, ok := jsonString(raw)
	if !ok || !validIdempotencyKey(s) {
		errs.add("request_id", "must be a string of 1 to 255 printable ASCII characters, such as a UUID")
		return ""
	}
	return s
}

// numberText is a number argument's text. A model sometimes sends a number
// as a string ("12"); its text is taken as the number's.
func numberText(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	return string(raw)
}

// listValues turns list_tasks' arguments into the query parameters REST's
// listing takes, for parseListQuery to validate exactly as it does there.
func listValues(args toolArgs) (url.Values, fieldErrors) {
	values := url.Values{}
	var errs fieldErrors
	for _, m := range args {
		switch {
		case !slices.Contains(listParams, m.Name):
			errs.add(m.Name, "is not an argument of list_tasks")
		case isNull(m.Value):
		case m.Name == "limit":
			values.Set(m.Name, numberText(m.Value))
		default:
			s, ok := jsonString(m.Value)
			if !ok {
				errs.add(m.Name, "must be a string")
				continue
			}
			values.Set(m.Name, s)
		}
	}
	return values, errs
}

// withFieldErrors joins the problems found with the tool's own arguments to a
// REST parser's, so that one answer names every bad field.
func withFieldErrors(errs fieldErrors, err error) error {
	if err != nil {
		e, ok := errors.AsType[*Error](err)
		if !ok || e.Code != CodeInvalid {
			return err
		}
		for _, f := range e.Fields {
			errs.add(f.Field, f.Message)
		}
	}
	return errs.err()
}

// ---- answers ----------------------------------------------------------------

func taskOutput(verb string, t *Task) toolOutput {
	text := appendTaskText(append(make([]byte, 0, 256), verb...), t, maxDescriptionLen)
	return toolOutput{structured: appendTask(nil, t), text: text}
}

// listDescriptionLen is how much of each description a list's text shows;
// get_task shows all of it.
const listDescriptionLen = 100

// A task's text, as a model reads it best: the id and version the other
// tools take, the title, its state, and its description (up to descMax
// characters) on the next lines, escaped as inside a JSON string. A list
// writes it from each binary row as it arrives, as rowjson.go writes the
// JSON, so the parts take their text as string (a Task) or []byte (a row).

func appendTaskText(b []byte, t *Task, descMax int) []byte {
	b = appendTaskHead(b, t.ID, t.Title, t.Completed, t.CompletedAt, t.Priority, t.DueDate)
	for i, tag := range t.Tags {
		b = appendTag(b, i, tag)
	}
	return appendTaskTail(b, t.Version, t.Description, descMax)
}

// appendRawTaskText is appendTaskText for a row of taskColumns that
// appendRawTask has read (so its fixed-size values have their sizes).
func appendRawTaskText(b []byte, raw [][]byte, descMax int) ([]byte, error) {
	var completedAt, due *time.Time
	if v := raw[colCompletedAt]; len(v) == 8 {
		t := rawTime(v)
		completedAt = &t
	}
	if v := raw[colDueDate]; len(v) == 8 {
		t := rawTime(v)
		due = &t
	}
	b = appendTaskHead(b, int64(binary.BigEndian.Uint64(raw[colID])), raw[colTitle], raw[colCompleted][0] != 0,
		completedAt, raw[colPriority], due)
	n := 0
	err := eachRawText(raw[colTags], func(tag []byte) {
		b = appendTag(b, n, tag)
		n++
	})
	return appendTaskTail(b, rawVersion(raw), raw[colDescription], descMax), err
}

func appendTaskHead[S string | []byte](b []byte, id int64, title S, completed bool, completedAt *time.Time, priority S, due *time.Time) []byte {
	b = append(b, '#')
	b = strconv.AppendInt(b, id, 10)
	b = append(b, ` \"`...)
	b = appendEscaped(b, title)
	b = append(b, `\"`...)
	if completed {
		b = append(b, " — completed"...)
		if completedAt != nil {
			b = appendTimeText(append(b, ' '), *completedAt)
		}
	} else {
		b = append(b, " — pending"...)
	}
	if string(priority) != priorities[0] { // no copy: a conversion in a comparison
		b = append(b, ", priority "...)
		b = append(b, priority...)
	}
	if due != nil {
		b = appendTimeText(append(b, ", due "...), *due)
	}
	return b
}

func appendTag[S string | []byte](b []byte, i int, tag S) []byte {
	if i == 0 {
		b = append(b, ", tags: "...)
	} else {
		b = append(b, ", "...)
	}
	return appendEscaped(b, tag)
}

func appendTaskTail[S string | []byte](b []byte, version int32, desc S, descMax int) []byte {
	b = append(b, ", version "...)
	b = strconv.AppendInt(b, int64(version), 10)
	if len(desc) == 0 {
		return b
	}
	cut := false
	if len(desc) > descMax { // in bytes: shorter is within descMax characters
		end := 0
		for n := 0; end < len(desc) && n < descMax; n++ { // descMax characters, by rune
			if desc[end] < utf8.RuneSelf {
				end++
				continue
			}
			_, size := utf8.DecodeRuneInString(string(desc[end:min(end+utf8.UTFMax, len(desc))])) // at most 4 bytes: no allocation
			end += size
		}
		desc, cut = desc[:end], end < len(desc)
	}
	for start := 0; start < len(desc) || start == 0; { // each line indented under the task
		stop := start
		for stop < len(desc) && desc[stop] != '\n' {
			stop++
		}
		b = append(b, `\n    `...)
		b = appendEscaped(b, desc[start:stop])
		start = stop + 1
	}
	if cut {
		b = append(b, "…"...)
	}
	return b
}

// appendEscaped appends s escaped as inside a JSON string (without the quotes).
func appendEscaped[S string | []byte](b []byte, s S) []byte {
	start := len(b)
	b = appendJSONString(b, s)
	copy(b[start:], b[start+1:len(b)-1])
	return b[:len(b)-2]
}

// appendTimeText appends t as the task's JSON has it, without the quotes.
func appendTimeText(b []byte, t time.Time) []byte {
	start := len(b)
	b = appendTime(b, t)
	copy(b[start:], b[start+1:len(b)-1])
	return b[:len(b)-2]
}

// ---- schemas ----------------------------------------------------------------

// prop is one property of an object schema, in the order a model reads them.
type prop struct {
	name   string
	schema *jsonschema.Schema
}

// object is the schema of a tool's arguments: these properties and no others.
func object(props ...prop) *jsonschema.Schema {
	s := objectOf(props...)
	s.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}} // false: REST refuses unknown fields too
	return s
}

// objectOf is an object schema with these properties; others are allowed (an
// output may grow fields).
func objectOf(props ...prop) *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{}}
	for _, p := range props {
		s.Properties[p.name] = p.schema
		s.PropertyOrder = append(s.PropertyOrder, p.name)
	}
	return s
}

func withRequired(s *jsonschema.Schema, names ...string) *jsonschema.Schema {
	s.Required = names
	return s
}

const timestampFormat = "RFC 3339 with an offset, such as 2026-11-26T09:00:00Z or 2026-11-26T10:00:00+01:00 " +
	"(a bare date, or a time without an offset, is refused)"

func idArg() prop {
	return prop{"id", &jsonschema.Schema{Type: "integer", Minimum: new(1.0),
		Description: "The task's id, as list_tasks or add_task returned it."}}
}

func expectedVersionArg() prop {
	return prop{"expected_version", &jsonschema.Schema{Type: "integer", Minimum: new(1.0),
		Description: "Optional: the task's version as you last read it. The change is made only if the task is still " +
			"at that version; otherwise nothing changes and the call fails, so you can fetch the task and decide again."}}
}

func requestIDArg() prop {
	return prop{"request_id", &jsonschema.Schema{Type: "string", MinLength: new(1), MaxLength: new(255),
		Pattern: "^[\\x20-\\x7E]+$",
		Description: "Optional: a unique string (such as a UUID) for this task. Repeating the call with the same " +
			"request_id within 24 hours returns the first result and creates nothing."}}
}

// taskFieldArgs are the task's writable fields as add_task (forUpdate false)
// and update_task take them, with task.go's limits: the same fields and
// rules as a REST body, which parseNewTask and parseTaskChanges check.
//
// recurrence and reminders are validated by parseTaskChanges with the
// others (recurrence.go), so the tools take them with their schemas alone.
func taskFieldArgs(forUpdate bool) []prop {
	clears := func(s string) string {
		if forUpdate {
			return s + " null clears it."
		}
		return s
	}
	title := &jsonschema.Schema{Type: "string", MinLength: new(1), MaxLength: new(maxTitleLen),
		Description: fmt.Sprintf("The title: 1 to %d characters after trimming white space.", maxTitleLen)}
	if !forUpdate {
		title.Description = "Required. " + title.Description
	}
	return []prop{
		{"title", title},
		{"description", &jsonschema.Schema{Types: []string{"string", "null"}, MaxLength: new(maxDescriptionLen),
			Description: clears(fmt.Sprintf("Free text, at most %d characters. Default empty.", maxDescriptionLen))}},
		{"completed", &jsonschema.Schema{Type: "boolean", Description: "Whether the task is done. Default false."}},
		{"priority", &jsonschema.Schema{Type: "string", Enum: anySlice(priorities),
			Description: "How important the task is. Default " + priorities[0] + "."}},
		{"tags", &jsonschema.Schema{Types: []string{"array", "null"},
			Items: &jsonschema.Schema{Type: "string", MinLength: new(1), MaxLength: new(maxTagLen)},
			Description: clears(fmt.Sprintf("Labels, each trimmed and 1 to %d characters; exact duplicates are dropped; "+
				"at most %d. The list replaces the task's tags.", maxTagLen, maxTags))}},
		{"due_date", &jsonschema.Schema{Types: []string{"string", "null"}, Format: "date-time",
			Description: clears("When the task is due: " + timestampFormat + ". Stored in UTC.")}},
		{"recurrence", recurrenceSchema(clears("Makes the task repeat: completing it creates its next " +
			"occurrence. Needs a due_date."))},
		{"reminders", &jsonschema.Schema{Types: []string{"array", "null"}, MaxItems: new(5),
			Items: &jsonschema.Schema{Type: "string", Pattern: "^P"},
			Description: clears("Up to 5 ISO 8601 durations before the due date, PT0S to P30D, such as " +
				"[\"PT15M\", \"P1D\"]; each fires once as a reminder. Needs a due_date.")}},
	}
}

// recurrenceSchema is a task's recurrence, as an input and as stored.
func recurrenceSchema(description string) *jsonschema.Schema {
	s := objectOf(
		prop{"rule", &jsonschema.Schema{Type: "string", Description: "An RFC 5545 RRULE: FREQ=DAILY, WEEKLY, " +
			"MONTHLY or YEARLY, and optionally INTERVAL, BYDAY (ordinals such as -1FR with MONTHLY/YEARLY), " +
			"BYMONTHDAY (1..31, -31..-1), BYMONTH, COUNT, UNTIL. Example: FREQ=WEEKLY;BYDAY=MO,WE."}},
		prop{"time_zone", &jsonschema.Schema{Type: "string", Description: "An IANA zone such as Europe/Berlin " +
			"(default UTC): occurrences keep their wall-clock time in it across daylight-saving changes."}},
		prop{"from", &jsonschema.Schema{Type: "string", Enum: []any{"due", "completion"}, Description: "due " +
			"(default): the next occurrence after the due date, skipping past ones; completion: one interval " +
			"after the completion, keeping the due date's time of day (only FREQ and INTERVAL)."}},
	)
	s.Required = []string{"rule"}
	s.Type, s.Types = "", []string{"object", "null"}
	s.Description = description
	return s
}

func listArgsSchema() *jsonschema.Schema {
	return object(
		prop{"status", &jsonschema.Schema{Type: "string", Enum: []any{"all", "pending", "completed"},
			Default: json.RawMessage(`"all"`), Description: "Which tasks: all, pending (not done) or completed."}},
		prop{"priority", &jsonschema.Schema{Type: "string", Enum: anySlice(priorities), Description: "Only tasks of this priority."}},
		prop{"tag", &jsonschema.Schema{Type: "string", MinLength: new(1), MaxLength: new(maxTagLen),
			Description: "Only tasks that have this exact tag."}},
		prop{"q", &jsonschema.Schema{Type: "string", MaxLength: new(maxSearchLen),
			Description: "Only tasks whose title or description contains this text, ignoring case; empty: no filter."}},
		prop{"due_before", &jsonschema.Schema{Type: "string", Format: "date-time",
			Description: "Only tasks due strictly before this time: " + timestampFormat + "."}},
		prop{"due_after", &jsonschema.Schema{Type: "string", Format: "date-time",
			Description: "Only tasks due strictly after this time: " + timestampFormat + "."}},
		prop{"sort", &jsonschema.Schema{Type: "string", Enum: anySlice(taskSorts), Default: json.RawMessage(`"created_at"`),
			Description: "Order by: created_at, updated_at, due_date (tasks without one last), priority (high first " +
				"when descending) or title (ignoring case)."}},
		prop{"order", &jsonschema.Schema{Type: "string", Enum: []any{"desc", "asc"}, Default: json.RawMessage(`"desc"`),
			Description: "desc (the default) or asc."}},
		prop{"limit", &jsonschema.Schema{Type: "integer", Minimum: new(1.0), Maximum: new(500.0),
			Default: json.RawMessage("100"), Description: "At most this many tasks, 1 to 500 (default 100)."}},
		prop{"cursor", &jsonschema.Schema{Type: "string",
			Description: "The next_cursor of the previous page, to continue the listing. It belongs to the sort and order it came with."}},
	)
}

func timestampSchema(nullable bool, description string) *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "string", Format: "date-time", Description: description}
	if nullable {
		s.Type, s.Types = "", []string{"string", "null"}
	}
	return s
}

// taskSchema is a task as REST returns it (encode.go). Timestamps are UTC
// with six fractional digits.
func taskSchema() *jsonschema.Schema {
	s := objectOf(
		prop{"id", &jsonschema.Schema{Type: "integer", Description: "What the other tools take as id."}},
		prop{"user_id", &jsonschema.Schema{Type: "string"}},
		prop{"title", &jsonschema.Schema{Type: "string"}},
		prop{"description", &jsonschema.Schema{Type: "string"}},
		prop{"completed", &jsonschema.Schema{Type: "boolean"}},
		prop{"completed_at", timestampSchema(true, "When the task was completed; null while it is not.")},
		prop{"priority", &jsonschema.Schema{Type: "string", Enum: anySlice(priorities)}},
		prop{"tags", &jsonschema.Schema{Type: "array", Items: &jsonschema.Schema{Type: "string"}}},
		prop{"due_date", timestampSchema(true, "")},
		prop{"version", &jsonschema.Schema{Type: "integer", Minimum: new(1.0),
			Description: "Goes up by one with every change; what expected_version takes."}},
		prop{"created_at", timestampSchema(false, "")},
		prop{"updated_at", timestampSchema(false, "")},
		prop{"deleted_at", timestampSchema(false, "Only on a task in the trash: when it went there.")},
		prop{"recurrence", recurrenceSchema("null unless the task repeats.")},
		prop{"reminders", &jsonschema.Schema{Type: "array", Items: &jsonschema.Schema{Type: "string"}}},
		prop{"series_id", &jsonschema.Schema{Types: []string{"integer", "null"},
			Description: "The id of the first task of a repeating series; null unless the task repeats."}},
	)
	return withRequired(s, "id", "user_id", "title", "description", "completed", "completed_at", "priority", "tags",
		"due_date", "version", "created_at", "updated_at")
}

func listSchema() *jsonschema.Schema {
	return withRequired(objectOf(
		prop{"tasks", &jsonschema.Schema{Type: "array", Items: taskSchema()}},
		prop{"next_cursor", &jsonschema.Schema{Types: []string{"string", "null"},
			Description: "null: this is the last page. Otherwise pass it as cursor, with the same other arguments."}},
	), "tasks", "next_cursor")
}

func deletedSchema() *jsonschema.Schema {
	return withRequired(objectOf(
		prop{"id", &jsonschema.Schema{Type: "integer"}},
		prop{"in_trash", &jsonschema.Schema{Type: "boolean", Description: "Always true: restore_task brings it back."}},
	), "id", "in_trash")
}

func statsSchema() *jsonschema.Schema {
	count := func(d string) *jsonschema.Schema {
		return &jsonschema.Schema{Type: "integer", Minimum: new(0.0), Description: d}
	}
	return withRequired(objectOf(
		prop{"total", count("Tasks not in the trash.")},
		prop{"completed", count("")},
		prop{"pending", count("Not completed.")},
		prop{"overdue", count("Pending, with a due_date in the past.")},
	), "total", "completed", "pending", "overdue")
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
