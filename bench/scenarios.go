package main

import (
	"math/rand/v2"
	"net/http"
	"strconv"
)

// op is one kind of request, and the pgbench script that runs the SQL the
// service runs to answer it (bench/pgbench/, checked by benchsql_test.go).
type op struct {
	script string
	build  func(rng *rand.Rand, u *user) request
}

var (
	opList = op{"list.sql", func(_ *rand.Rand, u *user) request {
		return request{http.MethodGet, "/api/" + u.id + "/tasks", nil, http.StatusOK}
	}}
	opGet = op{"get.sql", func(rng *rand.Rand, u *user) request {
		return request{http.MethodGet, taskPath(rng, u), nil, http.StatusOK}
	}}
	opCreate = op{"create.sql", func(rng *rand.Rand, u *user) request {
		body := strconv.AppendUint([]byte(`{"title":"New task `), rng.Uint64N(1e9), 10)
		return request{http.MethodPost, "/api/" + u.id + "/tasks", append(body, `"}`...), http.StatusCreated}
	}}
	opUpdate = op{"update.sql", func(rng *rand.Rand, u *user) request {
		body := strconv.AppendUint([]byte(`{"title":"Renamed `), rng.Uint64N(1e9), 10)
		return request{http.MethodPut, taskPath(rng, u), append(body, `"}`...), http.StatusOK}
	}}
	opToggle = op{"toggle.sql", func(rng *rand.Rand, u *user) request {
		return request{http.MethodPatch, taskPath(rng, u) + "/complete", nil, http.StatusOK}
	}}
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
	total int // sum of the weights
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
	newScenario("get", weightedOp{opGet, 1}),
	newScenario("create", weightedOp{opCreate, 1}),
	newScenario("update", weightedOp{opUpdate, 1}),
	newScenario("toggle", weightedOp{opToggle, 1}),
	newScenario("mixed", weightedOp{opList, 70}, weightedOp{opGet, 10}, weightedOp{opCreate, 10},
		weightedOp{opUpdate, 5}, weightedOp{opToggle, 5}),
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
