package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The load benchmark (bench/) compares the service with a ceiling: pgbench
// running the SQL the service runs. These tests keep the two from drifting
// apart. Each sends the very request the benchmark sends through the real
// handler, records the statement and arguments the store passes on, and
// checks that the pgbench script (or the listing shape that bench -scale
// explains) holds exactly that statement, with each $N replaced by what the
// table below says, and that its literals and constants are the values the
// service binds.

// sqlRecorder stands in for the store's pool (Queries.db): it
// records what the store sends and fails it, so no database is needed.
type sqlRecorder struct {
	pgx.Tx // unused methods panic
	calls  []recordedSQL
}

type recordedSQL struct {
	sql  string
	args []any
}

var errRecorded = errors.New("recorded, not run")

func (r *sqlRecorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.calls = append(r.calls, recordedSQL{sql, args})
	return recordedRow{}
}

func (r *sqlRecorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.calls = append(r.calls, recordedSQL{sql, args})
	return nil, errRecorded
}

func (r *sqlRecorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.calls = append(r.calls, recordedSQL{sql, args})
	return pgconn.CommandTag{}, errRecorded
}

// SendBatch records each statement of the batch, as the store's feed
// reads send two in one round trip.
func (r *sqlRecorder) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	for _, q := range b.QueuedQueries {
		r.calls = append(r.calls, recordedSQL{q.SQL, q.Arguments})
	}
	return recordedBatch{}
}

type recordedBatch struct{ pgx.BatchResults }

func (recordedBatch) Close() error { return errRecorded }

type recordedRow struct{}

func (recordedRow) Scan(...any) error { return errRecorded }

// statementOf serves req as user sub through the service's handler, with
// the default configuration, and returns the statement the store sent.
func statementOf(t *testing.T, sub string, req *http.Request) recordedSQL {
	t.Helper()
	calls := statementsOf(t, sub, req)
	if len(calls) != 1 {
		t.Fatalf("%s %s sent %d statements, want 1: %v", req.Method, req.URL, len(calls), calls)
	}
	return calls[0]
}

// benchSQLKey signs the sync tokens of the requests these tests send.
var benchSQLKey = []byte("bench-sql-sync-token-key")

// statementsOf is statementOf for a request whose statements go in one
// batch (one round trip): all of them, in order.
func statementsOf(t *testing.T, sub string, req *http.Request) []recordedSQL {
	t.Helper()
	cfg, err := loadConfig(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &sqlRecorder{}
	store := newStore(nil, storeOptions{MaxTasksPerUser: cfg.MaxTasksPerUser})
	store.db = rec
	h := newHandler(deps{
		log:      discardLog(),
		store:    store,
		verifier: newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Minute}),
		feed:     &syncFeed{key: benchSQLKey, retention: cfg.SyncRetention},
	})
	tok, err := mintToken([]byte(testSecret), sub, "", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if req.ContentLength > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	h.ServeHTTP(httptest.NewRecorder(), req)
	return rec.calls
}

// updateBenchSQL rewrites the bench's statements from the service's: after a
// change to store.go's SQL, run
//
//	go test -run 'TestPgbenchScripts|TestListingShapes' -update-bench-sql
//
// and review the diff (the \set lines and the parameter table stay by hand).
var updateBenchSQL = flag.Bool("update-bench-sql", false, "rewrite bench/pgbench/*.sql and bench/listing-shapes.sql from the service's SQL")

// rewritePgbenchScript replaces the statement of a script of bench/pgbench/,
// keeping its comments and \set lines (a script of several statements is
// rewritten by hand).
func rewritePgbenchScript(t *testing.T, name, statement string) {
	t.Helper()
	path := filepath.Join("bench", "pgbench", name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "--") && !strings.HasPrefix(line, `\set `) && strings.TrimSpace(line) != "" {
			break
		}
		head = append(head, line)
	}
	if err := os.WriteFile(path, []byte(strings.Join(head, "\n")+"\n"+statement+";\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pgbenchScript is a script of bench/pgbench/: its \set variables and its
// SQL statements, one, or those of a pipeline (comments and blank lines
// dropped).
type pgbenchScript struct {
	sets       map[string]string // variable → expression
	statements []string
}

func readPgbenchScript(t *testing.T, name string) pgbenchScript {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("bench", "pgbench", name))
	if err != nil {
		t.Fatal(err)
	}
	s := pgbenchScript{sets: map[string]string{}}
	var sql []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "--"), strings.TrimSpace(line) == "" && len(sql) == 0:
		case strings.HasPrefix(line, `\set `):
			name, expr, _ := strings.Cut(strings.TrimPrefix(line, `\set `), " ")
			s.sets[name] = strings.TrimSpace(expr)
		case line == `\startpipeline` || line == `\endpipeline`:
		default:
			sql = append(sql, line)
			if strings.HasSuffix(line, ";") {
				s.statements = append(s.statements, strings.TrimSuffix(strings.TrimSpace(strings.Join(sql, "\n")), ";"))
				sql = nil
			}
		}
	}
	if len(s.statements) == 0 || strings.TrimSpace(strings.Join(sql, "")) != "" {
		t.Fatalf("%s: want statements each ending with ';' at the end of a line, got:\n%s", name, b)
	}
	return s
}

var sqlPlaceholder = regexp.MustCompile(`\$(\d+)`)

// substituteParams replaces each $N of sql by params[N].
func substituteParams(t *testing.T, sql string, params map[int]string) string {
	t.Helper()
	return sqlPlaceholder.ReplaceAllStringFunc(sql, func(p string) string {
		n, _ := strconv.Atoi(p[1:])
		s, ok := params[n]
		if !ok {
			t.Errorf("no substitute for %s", p)
		}
		return s
	})
}

// checkParams checks that what the script has in place of each $N can
// stand for the value the service binds there: a literal must be that
// value, a variable set to a constant must be set to that value, and a
// random variable (user, task id, title) must at least not stand for null.
func checkParams(t *testing.T, s pgbenchScript, params map[int]string, args []any) {
	t.Helper()
	if len(params) != len(args) {
		t.Errorf("the table maps %d parameters, the service binds %d", len(params), len(args))
	}
	for n, text := range params {
		if n < 1 || n > len(args) {
			continue
		}
		arg := args[n-1]
		name, isVar := strings.CutPrefix(text, ":")
		switch {
		case !isVar && !sqlLiteralIs(text, arg):
			t.Errorf("$%d: the script has %s, the service binds %#v", n, text, arg)
		case isVar && s.sets[name] == "":
			t.Errorf("$%d: the script never sets :%s", n, name)
		case isVar && isPgbenchConstant(s.sets[name]) && s.sets[name] != fmt.Sprint(arg):
			t.Errorf("$%d: the script sets :%s to %s, the service binds %#v", n, name, s.sets[name], arg)
		case isVar && isNullArg(arg):
			t.Errorf("$%d: the script binds :%s, the service binds null", n, name)
		}
	}
}

func isPgbenchConstant(expr string) bool {
	_, err := strconv.ParseInt(expr, 10, 64)
	return err == nil || expr == "true" || expr == "false"
}

// sqlLiteralIs reports whether the SQL literal lit is the value v.
func sqlLiteralIs(lit string, v any) bool {
	if lit == "NULL" {
		return isNullArg(v)
	}
	text, ok := strings.CutPrefix(lit, "'")
	if text, ok = strings.CutSuffix(text, "'"); !ok || strings.Contains(text, "'") {
		return false
	}
	switch v := v.(type) {
	case string:
		return v == text
	case []string:
		return v != nil && text == "{"+strings.Join(v, ",")+"}"
	}
	return false
}

func isNullArg(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

func TestPgbenchScriptsRunTheServiceSQL(t *testing.T) {
	body := func(s string) *strings.Reader { return strings.NewReader(s) }
	scripts := []struct {
		file   string
		req    *http.Request // as bench/scenarios.go sends it, for user "1"
		params map[int]string
	}{
		{"list.sql", httptest.NewRequest("GET", "/api/1/tasks", nil),
			map[int]string{1: ":uid", 2: ":limit"}},
		{"get.sql", httptest.NewRequest("GET", "/api/1/tasks/17", nil),
			map[int]string{1: ":id", 2: ":uid"}},
		{"create.sql", httptest.NewRequest("POST", "/api/1/tasks", body(`{"title":"New task 123"}`)),
			map[int]string{1: ":uid", 2: ":title", 3: "''", 4: ":completed", 5: "'none'", 6: "'{}'", 7: "NULL", 8: ":quota",
				9: "NULL", 10: "NULL", 11: "NULL", 12: "'{}'", 13: "NULL", 14: "NULL", 15: "NULL"}},
		{"update.sql", httptest.NewRequest("PUT", "/api/1/tasks/17", body(`{"title":"Renamed 123"}`)),
			map[int]string{1: ":id", 2: ":uid", 3: ":title", 4: "NULL", 5: "NULL", 6: "NULL", 7: "NULL", 8: ":due_set", 9: "NULL", 10: "NULL",
				11: "NULL", 12: "NULL", 13: "NULL", 14: "NULL"}},
		{"toggle.sql", httptest.NewRequest("PATCH", "/api/1/tasks/17/complete", nil),
			map[int]string{1: ":id", 2: ":uid", 3: "NULL", 4: "NULL"}},
		{"delete.sql", httptest.NewRequest("DELETE", "/api/1/tasks/17", nil),
			map[int]string{1: ":id", 2: ":uid", 3: "NULL"}},
		{"purge.sql", httptest.NewRequest("DELETE", "/api/1/trash/17", nil),
			map[int]string{1: ":uid", 2: ":id"}},
		{"list-304.sql", func() *http.Request {
			r := httptest.NewRequest("GET", "/api/1/tasks", nil)
			r.Header.Set("If-None-Match", listETag("1", 100))
			return r
		}(), map[int]string{1: ":uid"}},
		// Both statements of the batch bind the same parameters.
		{"changes.sql", httptest.NewRequest("GET", "/api/1/changes?limit=100&since="+
			syncTokens{key: benchSQLKey, retention: time.Hour, now: time.Now}.encode("1", syncToken{Seq: 0, Issued: time.Now()}), nil),
			map[int]string{1: ":uid", 2: ":since", 3: ":limit"}},
	}
	var tested []string
	for _, sc := range scripts {
		tested = append(tested, sc.file)
		t.Run(sc.file, func(t *testing.T) {
			ran := statementsOf(t, "1", sc.req)
			script := readPgbenchScript(t, sc.file)
			if len(ran) == 1 && len(script.statements) == 1 {
				want := strings.TrimSpace(substituteParams(t, ran[0].sql, sc.params))
				if *updateBenchSQL && script.statements[0] != want {
					rewritePgbenchScript(t, sc.file, want)
					script = readPgbenchScript(t, sc.file)
				}
			}
			if len(ran) != len(script.statements) {
				t.Fatalf("the service sent %d statements, the script has %d: %v", len(ran), len(script.statements), ran)
			}
			for i, stmt := range ran {
				want := strings.TrimSpace(substituteParams(t, stmt.sql, sc.params))
				if script.statements[i] != want {
					t.Errorf("the script's statement %d is not the service's.\nscript:\n%s\nwant (the service's, substituted):\n%s", i+1, script.statements[i], want)
				}
				checkParams(t, script, sc.params, stmt.args)
			}
		})
	}
	files, err := filepath.Glob(filepath.Join("bench", "pgbench", "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.Contains(tested, filepath.Base(f)) {
			t.Errorf("%s is not checked by this test", f)
		}
	}
}

// dropLine marks a line of a statement the update replaced, to go.
const dropLine = "\x00"

// TestListingShapesAreTheServiceSQL checks bench/listing-shapes.sql, whose
// statements bench -scale explains: each is what the service runs for the
// request written above it.
func TestListingShapesAreTheServiceSQL(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("bench", "listing-shapes.sql"))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "-- GET "
	lines := strings.Split(string(b), "\n")
	shapes := 0
	for i, line := range lines {
		target, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		shapes++
		t.Run(target, func(t *testing.T) {
			// The statement: the lines that follow, up to one that ends it.
			end := i + 1
			for end < len(lines) && !strings.HasSuffix(lines[end], ";") && !strings.HasPrefix(lines[end], "--") {
				end++
			}
			if end == len(lines) || !strings.HasSuffix(lines[end], ";") {
				t.Fatalf("no statement ending in ; follows %q", line)
			}
			ran := searchStepOf(t, target)
			if ran.sql == "" {
				ran = statementOf(t, "heavy", httptest.NewRequest("GET", shapeTarget(t, target), nil))
			}
			got := strings.TrimSuffix(strings.Join(lines[i+1:end+1], "\n"), ";")
			if *updateBenchSQL {
				lines[i+1], got = ran.sql+";", ran.sql
				for k := i + 2; k <= end; k++ {
					lines[k] = dropLine
				}
			}
			if got != ran.sql {
				t.Errorf("the file's statement is not the service's.\nfile:\n%s\nservice:\n%s", got, ran.sql)
			}
		})
	}
	if shapes == 0 {
		t.Fatal("no shapes in bench/listing-shapes.sql")
	}
	if *updateBenchSQL {
		lines = slices.DeleteFunc(lines, func(l string) bool { return l == dropLine })
		if err := os.WriteFile(filepath.Join("bench", "listing-shapes.sql"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// searchSteps are the statements of a search after its first (the one its
// request sends first), by the suffix of their shape in listing-shapes.sql.
var searchSteps = map[string]string{", walk": sqlSearchWalk, ", search index": sqlSearchIndex}

// searchStepOf is the statement of a later step of a search, for a shape
// such as "/api/heavy/tasks?q=WORD, walk"; nothing for any other shape.
func searchStepOf(t *testing.T, target string) recordedSQL {
	t.Helper()
	for suffix, statement := range searchSteps {
		if target, ok := strings.CutSuffix(target, suffix); ok {
			_, query, _ := strings.Cut(target, "?")
			_, q := listQueryOf(t, query)
			q.User = "heavy"
			l := newListing(q)
			return recordedSQL{l.searchSQL(statement), l.args}
		}
	}
	return recordedSQL{}
}

// shapeTarget turns "/api/heavy/tasks?sort=title&order=asc, next page" into
// a request target, with a cursor for the next page.
func shapeTarget(t *testing.T, s string) string {
	t.Helper()
	target, next := strings.CutSuffix(s, ", next page")
	if !next {
		return target
	}
	path, query, _ := strings.Cut(target, "?")
	values, q := listQueryOf(t, query)
	c := cursor{Sort: q.Sort, Desc: q.Desc, ID: 12345, Time: time.Now(), Rank: 2, Title: "x"}
	values.Set("cursor", c.String())
	return path + "?" + values.Encode()
}

// listQueryOf parses a shape's query string as the listing handler does.
func listQueryOf(t *testing.T, query string) (url.Values, listQuery) {
	t.Helper()
	values, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	q, err := parseListQuery(values)
	if err != nil {
		t.Fatal(err)
	}
	return values, q
}
