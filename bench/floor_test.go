package main

import (
	"strings"
	"testing"
	"time"
)

// The floor runs the very statement pgbench runs for a get (itself checked
// against store.go by benchsql_test.go), with pgx's placeholders.
func TestFloorStatementIsTheGetOfPgbench(t *testing.T) {
	q, err := floorStatement()
	if err != nil {
		t.Fatal(err)
	}
	script, err := pgbenchScripts.ReadFile("pgbench/get.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SELECT id, title", "FROM tasks WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL"} {
		if !strings.Contains(q, want) {
			t.Errorf("the statement lacks %q:\n%s", want, q)
		}
	}
	if strings.Contains(q, ":") || strings.HasSuffix(q, ";") || strings.Contains(q, `\set`) {
		t.Errorf("pgbench's syntax left in the statement:\n%s", q)
	}
	if back := strings.NewReplacer("$1", ":id", "$2", ":uid").Replace(q); !strings.Contains(string(script), back+";") {
		t.Errorf("the statement is not get.sql's:\n%s", q)
	}
}

// The report judges the service's CPU against PostgreSQL's for the same
// statement in pgbench's run, round by round, and says where the floor is.
func TestFloorRunJudgesTheMedianRound(t *testing.T) {
	round := func(service, floor, postgres time.Duration) floorRound {
		const n = 1000
		st := stats{elapsed: time.Second, latencies: make([]time.Duration, n)}
		return floorRound{
			service: row{scenario: "get", st: st, cpu: &cpuUse{service: n * service},
				ceiling: pgbenchResult{tps: n, transactions: n}, ceilingCPU: &cpuUse{postgres: n * postgres}},
			floor: &besideRun{st: st, cpu: &cpuUse{service: n * floor}},
		}
	}
	r := floorRun{settings: "settings", rounds: []floorRound{
		round(60*time.Microsecond, 40*time.Microsecond, 30*time.Microsecond), // 2.00×, floor 1.33×
		round(90*time.Microsecond, 60*time.Microsecond, 30*time.Microsecond), // 3.00×, floor 2.00×
		round(45*time.Microsecond, 50*time.Microsecond, 40*time.Microsecond), // 1.125×, floor 1.25×
	}}
	md := r.markdown()
	for _, want := range []string{
		"| 1 | 1000 | 0.060 ms |",
		"| 2.00 | 1.33 | 1.50 |",
		"the service spends 2.00× PostgreSQL's CPU for the statement (goal ≤ 1.5×: missed)",
		"the floor 1.33× (within the goal, with 0.17× of PostgreSQL's CPU left for the service's own work)",
		"the service 1.50× the floor",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(md, "| 1.50 | ? |") {
		t.Errorf("stolen without the machine's cores is not \"?\":\n%s", md)
	}
	// 20 ms stolen in each of the three 1 s runs, of 2 cores: 1.0 %.
	r.host.cores = 2
	for _, c := range []*cpuUse{r.rounds[0].service.cpu, r.rounds[0].service.ceilingCPU, r.rounds[0].floor.cpu} {
		c.stolen = 20 * time.Millisecond
	}
	if md := r.markdown(); !strings.Contains(md, "| 2.00 | 1.33 | 1.50 | 1.0 % |") {
		t.Errorf("round 1's stolen share is not 1.0 %%:\n%s", md)
	}
	r.rounds = r.rounds[2:]
	if md := r.markdown(); !strings.Contains(md, "1.12× PostgreSQL's CPU for the statement (goal ≤ 1.5×: met)") {
		t.Errorf("one round under the goal:\n%s", md)
	}
	if got := floorVerdict(1.6); !strings.HasPrefix(got, "above the goal") {
		t.Errorf("floorVerdict(1.6) = %q", got)
	}
}
