package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The pgbench scripts run exactly the statements of store.go (checked by
// benchsql_test.go); they are embedded so the bench runs from any directory.
//
//go:embed pgbench/*.sql pgbench/proposed/*.sql
var pgbenchScripts embed.FS

// pgbench runs the ceiling: the scenario's SQL straight against the
// service's database, at the same concurrency, with prepared statements as
// pgx uses them.
type pgbench struct {
	path      string // the pgbench binary
	scripts   string // the directory the scripts were written to
	socketDir string
	conns     int
}

func newPgbench(w *workspace, socketDir string, conns int) (*pgbench, error) {
	path, err := exec.LookPath("pgbench")
	if err != nil {
		return nil, errors.New("pgbench is not installed (Debian: apt install postgresql-contrib)")
	}
	dir := filepath.Join(w.dir, "pgbench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := pgbenchScripts.ReadDir("pgbench")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := pgbenchScripts.ReadFile("pgbench/" + e.Name())
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return nil, err
		}
	}
	return &pgbench{path: path, scripts: dir, socketDir: socketDir, conns: conns}, nil
}

var (
	pgbenchTPS          = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchTransactions = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
)

// pgbenchResult is what one pgbench run did.
type pgbenchResult struct {
	tps          float64
	transactions int
	cpu          time.Duration // pgbench's own, as a client
}

// run runs the scenario's mix of scripts for d (whole seconds); each
// transaction is what one request of the service sends: one statement, or
// the pipeline of one batch. vars are set for every client (pgbench -D).
func (p *pgbench) run(ctx context.Context, s scenario, d time.Duration, vars map[string]string) (pgbenchResult, error) {
	var files []string
	for _, o := range s.ops {
		files = append(files, filepath.Join(p.scripts, o.script)+"@"+strconv.Itoa(o.weight))
	}
	return p.bench(ctx, s.name, files, d, vars)
}

// runVariant runs one script with some of its \set lines replaced (the
// statement stays as benchsql_test.go checks it): the same SQL for other
// users and tasks.
func (p *pgbench) runVariant(ctx context.Context, script string, sets map[string]string, d time.Duration) (pgbenchResult, error) {
	b, err := pgbenchScripts.ReadFile("pgbench/" + script)
	if err != nil {
		return pgbenchResult{}, err
	}
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == `\set` && sets[fields[1]] != "" {
			lines[i] = `\set ` + fields[1] + " " + sets[fields[1]]
		}
	}
	path := filepath.Join(p.scripts, "variant-"+script)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		return pgbenchResult{}, err
	}
	return p.bench(ctx, script+" (variant)", []string{path}, d, nil)
}

func (p *pgbench) bench(ctx context.Context, name string, files []string, d time.Duration, vars map[string]string) (pgbenchResult, error) {
	args := []string{
		"-n", // the pgbench_* tables do not exist: no vacuum of them
		"-h", p.socketDir, "-p", "5432", "-U", "postgres",
		"-c", strconv.Itoa(p.conns), "-j", strconv.Itoa(min(2, p.conns)),
		"-M", "prepared",
		"-T", strconv.Itoa(int(math.Ceil(d.Seconds()))),
	}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for k, v := range vars {
		args = append(args, "-D", k+"="+v)
	}
	args = append(args, "postgres")
	cmd := exec.CommandContext(ctx, p.path, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench %s: %w\n%s", name, err, out)
	}
	tps, n := pgbenchTPS.FindSubmatch(out), pgbenchTransactions.FindSubmatch(out)
	if tps == nil || n == nil {
		return pgbenchResult{}, fmt.Errorf("pgbench %s: no tps in its output:\n%s", name, out)
	}
	r := pgbenchResult{cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	r.tps, _ = strconv.ParseFloat(string(tps[1]), 64)
	r.transactions, _ = strconv.Atoi(string(n[1]))
	return r, nil
}
