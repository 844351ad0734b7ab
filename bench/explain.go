package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// The listing statements, exactly as the service writes them (checked by
// benchsql_test.go against listSQL), each under the request it answers.
//
//go:embed listing-shapes.sql
var listingShapesSQL string

// listingShape is one shape of listing query.
type listingShape struct {
	request string     // as in the file: "GET /api/heavy/tasks?sort=title&order=asc, next page"
	query   url.Values // the request's query parameters
	next    bool       // the page after the first one: a keyset condition
	step    string     // a search's later statement: ", walk" or ", search index"
	sql     string
}

// searchSteps are the suffixes of a search's later statements.
var searchSteps = []string{", walk", ", search index"}

const shapeRequestPrefix = "-- GET /api/heavy/tasks"

func parseListingShapes(text string) ([]listingShape, error) {
	var shapes []listingShape
	var cur *listingShape
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, shapeRequestPrefix):
			rest, next := strings.CutSuffix(strings.TrimPrefix(line, shapeRequestPrefix), ", next page")
			step := ""
			for _, s := range searchSteps {
				if r, ok := strings.CutSuffix(rest, s); ok {
					rest, step = r, s
				}
			}
			q, err := url.ParseQuery(strings.TrimPrefix(rest, "?"))
			if err != nil {
				return nil, fmt.Errorf("listing-shapes.sql: %q: %w", line, err)
			}
			shapes = append(shapes, listingShape{request: strings.TrimPrefix(line, "-- "), query: q, next: next, step: step})
			cur = &shapes[len(shapes)-1]
		case cur != nil && strings.TrimSpace(line) != "":
			cur.sql = strings.TrimSpace(cur.sql + "\n" + line)
		}
	}
	for _, s := range shapes {
		if !strings.HasSuffix(s.sql, ";") {
			return nil, fmt.Errorf("listing-shapes.sql: the statement of %s does not end with ;", s.request)
		}
	}
	return shapes, nil
}

func (s listingShape) statement() string { return strings.TrimSuffix(s.sql, ";") }

func (s listingShape) sort() string {
	if v := s.query.Get("sort"); v != "" {
		return v
	}
	return "created_at"
}

func (s listingShape) desc() bool { return s.query.Get("order") != "asc" }

// args are the statement's parameters in listSQL's order: the user, the
// filters, the cursor's key and id, the limit (one more than the page).
func (s listingShape) args(user string, after *pageEnd) []any {
	args := []any{user}
	if v := s.query.Get("priority"); v != "" {
		args = append(args, v)
	}
	if v := s.query.Get("tag"); v != "" {
		args = append(args, v)
	}
	if v := s.query.Get("q"); v != "" {
		args = append(args, v)
	}
	if after != nil {
		args = append(args, after.key(s.sort(), s.desc()), after.id)
	}
	return append(args, 101)
}

// escapeLike makes q match literally in an ILIKE pattern, as the service
// once did: the scale run counts each word's matches with ILIKE, apart from
// the service's own SQL.
func escapeLike(q string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q)
}

// pageEnd is the last task of a page: what the next page's cursor holds.
type pageEnd struct {
	id               int64
	title, priority  string
	due              *time.Time
	created, updated time.Time
}

func (p pageEnd) key(sort string, desc bool) any {
	switch sort {
	case "title":
		return p.title
	case "priority":
		return int16(map[string]int{"none": 0, "low": 1, "medium": 2, "high": 3}[p.priority])
	case "due_date":
		if p.due != nil {
			return *p.due
		}
		if desc { // no due date sorts last, as if infinitely early (desc) or late (asc)
			return pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
		}
		return pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
	case "updated_at":
		return p.updated
	}
	return p.created
}

// lastOfPage runs a first-page statement and returns its 100th task. It
// reads the columns a cursor needs by name, so the statement may return
// others, as many as the service's does.
func lastOfPage(ctx context.Context, conn *pgx.Conn, s listingShape, user string) (*pageEnd, error) {
	rows, err := conn.Query(ctx, s.statement(), s.args(user, nil)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var p pageEnd
	fields := rows.FieldDescriptions()
	dest := make([]any, len(fields))
	for i, f := range fields {
		switch f.Name {
		case "id":
			dest[i] = &p.id
		case "title":
			dest[i] = &p.title
		case "priority":
			dest[i] = &p.priority
		case "due_date":
			dest[i] = &p.due
		case "created_at":
			dest[i] = &p.created
		case "updated_at":
			dest[i] = &p.updated
		default:
			dest[i] = new(any)
		}
	}
	n := 0
	for rows.Next() && n < 100 {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n < 100 {
		return nil, fmt.Errorf("%s has %d tasks, not a full page", s.request, n)
	}
	return &p, nil
}

// plan is the EXPLAIN output of one shape: planned for its parameters (as
// the first five executions of a prepared statement are), and the generic
// plan when PostgreSQL's plan cache switches to it from the sixth on, as it
// does for the service's prepared statements (pgx's default exec mode).
type plan struct {
	shape   listingShape
	args    []any
	custom  []string
	generic []string // nil: the plan cache kept planning for the values
}

// executionTime is the "Execution Time: N ms" line of lines.
func executionTime(lines []string) string {
	for _, l := range lines {
		if t, ok := strings.CutPrefix(strings.TrimSpace(l), "Execution Time: "); ok {
			return t
		}
	}
	return "?"
}

// explainShapes runs EXPLAIN (ANALYZE, BUFFERS) of every shape for user, the
// q shape once per search word. Each statement has run before it is
// explained, so the plans show a warm cache, as the service's queries see it.
func explainShapes(ctx context.Context, dbURL, user string, words []string) ([]plan, error) {
	shapes, err := parseListingShapes(listingShapesSQL)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	firstPages := map[string]listingShape{}
	for _, s := range shapes {
		if !s.next && s.step == "" {
			firstPages[s.query.Encode()] = s
		}
	}
	var plans []plan
	for _, s := range expandSearchShapes(shapes, words) {
		var after *pageEnd
		if s.next {
			if after, err = lastOfPage(ctx, conn, firstPages[s.query.Encode()], user); err != nil {
				return nil, fmt.Errorf("explain %s: %w", s.request, err)
			}
		}
		p, err := explainShape(ctx, conn, s, s.args(user, after))
		if err != nil {
			return nil, fmt.Errorf("explain %s: %w", s.request, err)
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// expandSearchShapes replaces the q=WORD shapes (a search's statements) by
// those of each search word, in place of the first.
func expandSearchShapes(shapes []listingShape, words []string) []listingShape {
	var out, search []listingShape
	at := -1
	for _, s := range shapes {
		if !s.query.Has("q") {
			out = append(out, s)
			continue
		}
		if at < 0 {
			at = len(out)
		}
		search = append(search, s)
	}
	if at < 0 {
		return out
	}
	var expanded []listingShape
	for _, w := range words {
		for _, s := range search {
			c := s
			c.query = url.Values{"q": {w}}
			c.request = "GET /api/heavy/tasks?" + c.query.Encode() + c.step
			expanded = append(expanded, c)
		}
	}
	return append(out[:at], append(expanded, out[at:]...)...)
}

func explainShape(ctx context.Context, conn *pgx.Conn, s listingShape, args []any) (plan, error) {
	p := plan{shape: s, args: args}
	var err error
	explain := "EXPLAIN (ANALYZE, BUFFERS) " + s.statement()
	if _, err = conn.Exec(ctx, explain, args...); err != nil { // warms the cache
		return p, err
	}
	if p.custom, err = explainLines(ctx, conn, explain, args); err != nil {
		return p, err
	}
	p.generic, err = explainSixthExecution(ctx, conn, s.statement(), args)
	return p, err
}

// explainSixthExecution prepares the statement, runs it five times with args
// and explains the sixth execution: PostgreSQL plans the first five for
// their values, then compares their cost with a generic plan's and may keep
// that from then on. It returns the sixth's plan if it was generic.
func explainSixthExecution(ctx context.Context, conn *pgx.Conn, sql string, args []any) ([]string, error) {
	const name = "bench_listing_shape"
	if _, err := conn.Prepare(ctx, name, sql); err != nil {
		return nil, err
	}
	defer conn.Deallocate(context.WithoutCancel(ctx), name)
	for range 5 {
		if _, err := conn.Exec(ctx, name, args...); err != nil {
			return nil, err
		}
	}
	params := make([]string, len(args))
	for i := range args {
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	// EXECUTE takes its arguments as literals: the simple protocol has pgx
	// inline them (an extended-protocol EXPLAIN cannot pass them through).
	explain := "EXPLAIN (ANALYZE, BUFFERS) EXECUTE " + name + "(" + strings.Join(params, ", ") + ")"
	lines, err := explainLines(ctx, conn, explain, append([]any{pgx.QueryExecModeSimpleProtocol}, args...))
	if err != nil {
		return nil, err
	}
	var generic int64
	if err := conn.QueryRow(ctx, "SELECT generic_plans FROM pg_prepared_statements WHERE name = $1", name).Scan(&generic); err != nil {
		return nil, err
	}
	if generic == 0 {
		return nil, nil
	}
	return lines, nil
}

func explainLines(ctx context.Context, conn *pgx.Conn, sql string, args []any) ([]string, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// writePlans writes the plans as markdown, for docs/plans.md.
func writePlans(w io.Writer, plans []plan) {
	for _, p := range plans {
		fmt.Fprintf(w, "#### %s\n\n```sql\n%s\n```\nparameters: %s\n\n", p.shape.request, p.shape.statement(), formatArgs(p.args))
		if p.generic == nil {
			fmt.Fprintf(w, "Planned for these values (a prepared statement keeps doing so after five executions):\n\n```\n%s\n```\n\n", strings.Join(p.custom, "\n"))
			continue
		}
		fmt.Fprintf(w, "Planned for these values (the first five executions of a prepared statement):\n\n```\n%s\n```\n\n", strings.Join(p.custom, "\n"))
		fmt.Fprintf(w, "Generic plan, which a prepared statement switches to from the sixth execution (pgx's default exec mode prepares every statement):\n\n```\n%s\n```\n\n", strings.Join(p.generic, "\n"))
	}
}

func formatArgs(args []any) string {
	parts := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			parts[i] = fmt.Sprintf("$%d = %q", i+1, v)
		case time.Time:
			parts[i] = fmt.Sprintf("$%d = %s", i+1, v.UTC().Format(time.RFC3339Nano))
		case pgtype.Timestamptz:
			parts[i] = fmt.Sprintf("$%d = %s", i+1, map[pgtype.InfinityModifier]string{pgtype.Infinity: "infinity", pgtype.NegativeInfinity: "-infinity"}[v.InfinityModifier])
		default:
			parts[i] = fmt.Sprintf("$%d = %v", i+1, v)
		}
	}
	return strings.Join(parts, ", ")
}
