package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"tasks-api/internal/testbed"
)

// -floor (issue 14): how far the service's get is from the least a service
// on net/http and pgx can spend on it. bench/floor answers the same request
// with the same statement and nothing else (no authentication, log,
// deadline or error mapping); each round the get scenario loads the service,
// then pgbench runs the statement (as the table does), then the same load
// goes to the floor, on the same database. CPU per request: the process
// answering, and PostgreSQL.

// floorRound is one round: the table's get row, and the floor's turn.
type floorRound struct {
	service row
	floor   *besideRun
}

type floorRun struct {
	host     host
	settings string
	rounds   []floorRound
}

// getGoal is issue 14's bound on a get's service CPU, in multiples of
// PostgreSQL's for the same statement.
const getGoal = 1.5

func runFloor(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	s, err := startSetup(ctx, o, w, false, progress)
	if err != nil {
		return err
	}
	defer s.stop()
	query, err := floorStatement()
	if err != nil {
		return err
	}
	fmt.Fprintln(progress, "building bench/floor")
	bin, err := buildFloor(ctx, w.dir)
	if err != nil {
		return err
	}
	params := poolParams(o)
	if !params.Has("pool_max_conns") {
		params.Set("pool_max_conns", strconv.Itoa(defaultServicePool()))
	}
	floor, err := startService(ctx, w, serviceSpec{name: "floor", bin: bin, dataDir: s.db.dataDir,
		databaseURL: s.db.databaseURL(params),
		// The service's GC settings (main.go tuneGC), so that the two differ only in their code.
		env: map[string]string{"FLOOR_SQL": query, "GOGC": "400", "GOMEMLIMIT": "48MiB"}})
	if err != nil {
		return err
	}
	defer floor.stop()
	pg, err := newPgbench(w, s.db.socketDir(), o.conns)
	if err != nil {
		return err
	}
	meter, err := newCPUMeter(s.svc)
	if err != nil {
		return err
	}
	floorMeter, err := newCPUMeter(floor)
	if err != nil {
		return err
	}
	drv, err := newDriver(o, w, s.load(o.conns))
	if err != nil {
		return err
	}
	floorDrv, err := newDriver(o, w, &load{client: s.client, base: floor.base, users: s.users, conns: o.conns})
	if err != nil {
		return err
	}
	run := floorRun{
		host: describeHost(ctx, s.db.databaseURL(nil), s.bin),
		settings: fmt.Sprintf("The get scenario of the table: %d connections with keep-alive, a random user of %d per request, %s per turn "+
			"after %s of warm-up; %s. Each round: the service (%s), pgbench -c %d -M prepared on the statement, then bench/floor "+
			"(net/http, a pgx pool of %s connections, the same statement, the row written as JSON strings; no authentication, "+
			"log, deadline or error mapping; the service's GC settings) on the same database.",
			o.conns, len(s.users), o.duration, o.warmup, clientDescription(o), poolDescription(o), o.conns, params.Get("pool_max_conns")),
	}
	get := scenarioNamed("get")
	for i := range o.rounds {
		fmt.Fprintf(progress, "round %d of %d\n", i+1, o.rounds)
		r := floorRound{}
		if r.service, err = measureScenario(ctx, o, s, drv, pg, get, &meter, progress); err != nil {
			return err
		}
		if r.floor, err = driveMetered(ctx, o, floor, "bench/floor", floorDrv, get, &floorMeter); err != nil {
			return err
		}
		fmt.Fprintf(progress, "floor   %6.0f req/s  p50 %s  errors %d  CPU %.3f ms per request\n", r.floor.st.rate(),
			ms(r.floor.st.percentile(50)), r.floor.st.errors(), perRequest(r.floor.cpu.service, r.floor.st.requests()))
		run.rounds = append(run.rounds, r)
	}
	fmt.Fprint(stdout, run.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"floor", run.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	for _, r := range run.rounds {
		if n := r.service.st.errors() + r.floor.st.errors(); n > 0 {
			return fmt.Errorf("%w: %d requests failed", errTargetsMissed, n)
		}
	}
	return nil
}

// floorStatement is the statement of pgbench/get.sql, with the task's id as
// $1 and the user's as $2.
func floorStatement() (string, error) {
	b, err := pgbenchScripts.ReadFile("pgbench/get.sql")
	if err != nil {
		return "", err
	}
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "--") && !strings.HasPrefix(line, `\`) {
			lines = append(lines, line)
		}
	}
	q := strings.NewReplacer(":uid", "$2", ":id", "$1").Replace(strings.TrimSuffix(strings.Join(lines, "\n"), ";"))
	if !strings.Contains(q, "$1") || !strings.Contains(q, "$2") || strings.Contains(strings.ReplaceAll(q, "::", ""), ":") {
		return "", fmt.Errorf("pgbench/get.sql: its statement does not take :id and :uid alone: %s", q)
	}
	return q, nil
}

// buildFloor compiles bench/floor into dir.
func buildFloor(ctx context.Context, dir string) (string, error) {
	root, err := testbed.ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "floor-bin", "floor") // dir/floor is its working directory
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/floor")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./bench/floor: %w\n%s", err, out)
	}
	return bin, nil
}

// defaultServicePool is the service's pool size when DATABASE_URL sets none
// (database.go): 4 connections per CPU, 4..32.
func defaultServicePool() int { return min(32, max(4, 4*runtime.NumCPU())) }

// floorCPU is one round's CPU per request, in ms: the service's, the
// floor's, and PostgreSQL's during pgbench's run of the statement.
type floorCPU struct{ service, floor, postgres float64 }

func (r floorRound) cpu() floorCPU {
	return floorCPU{
		service:  r.service.serviceCPU().service,
		floor:    perRequest(r.floor.cpu.service, r.floor.st.requests()),
		postgres: r.service.pgbenchCPU().postgres,
	}
}

// stolen is the share of the machine's time the hypervisor gave other
// guests over the round's three runs; "?" when not known.
func (r floorRound) stolen(cores int) string {
	s := r.service
	if cores == 0 || s.cpu == nil || s.ceilingCPU == nil || r.floor.cpu == nil || s.ceiling.tps <= 0 {
		return "?"
	}
	elapsed := s.st.elapsed.Seconds() + s.ceilingElapsed() + r.floor.st.elapsed.Seconds()
	if elapsed <= 0 {
		return "?"
	}
	stolen := s.cpu.stolen + s.ceilingCPU.stolen + r.floor.cpu.stolen
	return fmt.Sprintf("%.1f %%", percentOfMachine(stolen, elapsed, cores))
}

func (r floorRun) markdown() string {
	var b strings.Builder
	b.WriteString(r.settings + "\n\n")
	b.WriteString("| round | service req/s | service CPU | its PostgreSQL | floor req/s | floor CPU | its PostgreSQL | pgbench tps | PostgreSQL CPU (pgbench) | service / PostgreSQL | floor / PostgreSQL | service / floor | stolen |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var svcRatio, floorRatio, over []float64
	for i, rd := range r.rounds {
		c := rd.cpu()
		svcRatio, floorRatio, over = append(svcRatio, c.service/c.postgres), append(floorRatio, c.floor/c.postgres), append(over, c.service/c.floor)
		fmt.Fprintf(&b, "| %d | %.0f | %.3f ms | %.3f ms | %.0f | %.3f ms | %.3f ms | %.0f | %.3f ms | %.2f | %.2f | %.2f | %s |\n", i+1,
			rd.service.st.rate(), c.service, rd.service.serviceCPU().postgres,
			rd.floor.st.rate(), c.floor, perRequest(rd.floor.cpu.postgres, rd.floor.st.requests()),
			rd.service.ceiling.tps, c.postgres, c.service/c.postgres, c.floor/c.postgres, c.service/c.floor, rd.stolen(r.host.cores))
	}
	b.WriteString("\n*Stolen*: the share of the machine's time the hypervisor gave other guests over the round's three runs " +
		"(steal in /proc/stat), while the service, PostgreSQL or the floor were ready to run.\n")
	fmt.Fprintf(&b, "\nMedians of the rounds: the service spends %.2f× PostgreSQL's CPU for the statement (goal ≤ %.1f×: %s); "+
		"the floor %.2f× (%s); the service %.2f× the floor.\n", median(svcRatio), getGoal, met(median(svcRatio) <= getGoal),
		median(floorRatio), floorVerdict(median(floorRatio)), median(over))
	return b.String()
}

// floorVerdict says whether net/http and pgx alone leave room under the goal.
func floorVerdict(ratio float64) string {
	if ratio > getGoal {
		return fmt.Sprintf("above the goal: net/http and pgx alone cost more than %.1f× here", getGoal)
	}
	return fmt.Sprintf("within the goal, with %.2f× of PostgreSQL's CPU left for the service's own work", getGoal-ratio)
}

func (r floorRun) section(command string) string {
	return section("The least a get can cost: net/http and pgx alone (issue 14)", r.host, command, r.markdown())
}
