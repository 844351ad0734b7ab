package main

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// op is one kind of request, and the pgbench script that runs the SQL the
// service runs to answer it (bench/pgbench/, checked by benchsql_test.go).
type op struct {
	script string
	build  func(rng *rand.Rand, u *user) request
	// takes: each request takes a task of the scenario's pool
	// (user.doomed.take()), so it can only be built as it is sent
	takes bool
}

var (
	// mcp-list: the MCP tool list_tasks for the same page as list, through
	// /mcp as an MCP client sends it (one tools/call, no session), against
	// the same SQL ceiling.
	opMCPList = op{script: "list.sql", build: func(_ *rand.Rand, _ *user) request {
		return request{method: http.MethodPost, path: "/mcp", mcp: true, want: http.StatusOK,
			body: []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_tasks","arguments":{}}}`)}
	}}
	opList = op{script: "list.sql", build: func(_ *rand.Rand, u *user) request {
		return request{method: http.MethodGet, path: "/api/" + u.id + "/tasks", want: http.StatusOK}
	}}
	opGet = op{script: "get.sql", build: func(rng *rand.Rand, u *user) request {
		return request{method: http.MethodGet, path: taskPath(rng, u), want: http.StatusOK}
	}}
	opCreate = op{script: "create.sql", build: func(rng *rand.Rand, u *user) request {
		body := strconv.AppendUint([]byte(`{"title":"New task `), rng.Uint64N(1e9), 10)
		return request{method: http.MethodPost, path: "/api/" + u.id + "/tasks", body: append(body, `"}`...), want: http.StatusCreated}
	}}
	opUpdate = op{script: "update.sql", build: func(rng *rand.Rand, u *user) request {
		body := strconv.AppendUint([]byte(`{"title":"Renamed `), rng.Uint64N(1e9), 10)
		return request{method: http.MethodPut, path: taskPath(rng, u), body: append(body, `"}`...), want: http.StatusOK}
	}}
	opToggle = op{script: "toggle.sql", build: func(rng *rand.Rand, u *user) request {
		return request{method: http.MethodPatch, path: taskPath(rng, u) + "/complete", want: http.StatusOK}
	}}
	// An incremental sync of 100 changes: from the token the user's feed
	// gave before its 100 seeded tasks were created (user.since).
	opChanges = op{script: "changes.sql", build: func(_ *rand.Rand, u *user) request {
		return request{method: http.MethodGet, path: "/api/" + u.id + "/changes?since=" + u.since + "&limit=100", want: http.StatusOK}
	}}
	// The list a client has already: If-None-Match with its current ETag.
	opList304 = op{script: "list-304.sql", build: func(_ *rand.Rand, u *user) request {
		return request{method: http.MethodGet, path: "/api/" + u.id + "/tasks", ifNoneMatch: u.listETag, want: http.StatusNotModified}
	}}
	// A delete (to the trash) of the user's next task of the pool made for
	// the delete scenario (see deletePool): each request finds a live task.
	opDelete = op{script: "delete.sql", build: func(_ *rand.Rand, u *user) request {
		return request{method: http.MethodDelete, path: "/api/" + u.id + "/tasks/" + strconv.FormatInt(u.doomed.take(), 10), want: http.StatusNoContent}
	}, takes: true}
	// A delete for good of the user's next task of the pool made for the
	// purge scenario, which is in the trash (see makePurgePool).
	opPurge = op{script: "purge.sql", build: func(_ *rand.Rand, u *user) request {
		return request{method: http.MethodDelete, path: "/api/" + u.id + "/trash/" + strconv.FormatInt(u.doomed.take(), 10), want: http.StatusNoContent}
	}, takes: true}
)

// taskPath names one of the user's existing tasks, at random.
func taskPath(rng *rand.Rand, u *user) string {
	return "/api/" + u.id + "/tasks/" + strconv.FormatInt(u.taskID(rng.IntN(u.tasks)), 10)
}

type weightedOp struct {
	op
	weight int
}

// scenario is a weighted mix of ops; pgbench runs the same mix of scripts.
type scenario struct {
	name  string
	ops   []weightedOp
	total int  // sum of the weights
	write bool // measured against -baseline too
	// needs, when not nil, prepares what the scenario's requests and
	// pgbench's transactions consume (delete's pool of tasks).
	needs *scenarioNeeds
	// baseline names the scenario run against -baseline in this one's
	// place, when the baseline's API did the same work another way; "":
	// this one.
	baseline string
}

// scenarioNeeds prepares the data a scenario uses up.
type scenarioNeeds struct {
	// before the service's run (warm-up included) on target, at rate
	// requests per second (0: as fast as it answers)
	service func(ctx context.Context, t *setup, o options, rate float64) error
	// before pgbench's run: the variables its scripts need (pgbench -D)
	ceiling func(ctx context.Context, t *setup, o options) (map[string]string, error)
	// after pgbench's run of transactions transactions
	after func(ctx context.Context, t *setup, o options, transactions int) error
	// after a service's run that no pgbench follows (the open loop): puts
	// away what the run left, so later scenarios find what they found before
	done func(ctx context.Context, t *setup) error
}

func newScenario(name string, ops ...weightedOp) scenario {
	s := scenario{name: name, ops: ops}
	for _, o := range ops {
		s.total += o.weight
	}
	return s
}

var scenarios = []scenario{
	newScenario("list", weightedOp{opList, 1}),
	newScenario("mcp-list", weightedOp{opMCPList, 1}),
	newScenario("get", weightedOp{opGet, 1}),
	newScenario("changes", weightedOp{opChanges, 1}),
	newScenario("list-304", weightedOp{opList304, 1}).with(&scenarioNeeds{service: fetchListETags}),
	newScenario("create", weightedOp{opCreate, 1}).writes(),
	newScenario("update", weightedOp{opUpdate, 1}).writes(),
	newScenario("toggle", weightedOp{opToggle, 1}).writes(),
	newScenario("delete", weightedOp{opDelete, 1}).writes().with(&scenarioNeeds{
		service: makeDeletePool, ceiling: restoreDeletePool, after: checkDeletePool, done: trashDeletePool}),
	// A delete for good: what a delete was at the baseline, which runs its
	// delete scenario in this one's place (atBaseline).
	newScenario("purge", weightedOp{opPurge, 1}).writes().with(&scenarioNeeds{
		service: makePurgePool, ceiling: remakePurgePool, after: checkPurgePool}).as("delete"),
	newScenario("mixed", weightedOp{opList, 70}, weightedOp{opGet, 10}, weightedOp{opCreate, 10},
		weightedOp{opUpdate, 5}, weightedOp{opToggle, 5}),
}

func (s scenario) writes() scenario { s.write = true; return s }

func (s scenario) with(n *scenarioNeeds) scenario { s.needs = n; return s }

func (s scenario) as(baseline string) scenario { s.baseline = baseline; return s }

// atBaseline is the scenario run against -baseline for s.
func (s scenario) atBaseline() scenario {
	if s.baseline == "" {
		return s
	}
	return scenarioNamed(s.baseline)
}

func scenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

func scenarioNamed(name string) scenario {
	for _, s := range scenarios {
		if s.name == name {
			return s
		}
	}
	panic("no scenario " + name)
}

func (s scenario) pick(rng *rand.Rand) op {
	if len(s.ops) == 1 {
		return s.ops[0].op
	}
	n := rng.IntN(s.total)
	for _, o := range s.ops {
		if n < o.weight {
			return o.op
		}
		n -= o.weight
	}
	panic("unreachable")
}
