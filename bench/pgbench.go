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
	"slices"
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
	return p.bench(ctx, s.name, p.scriptsOf(s), d, vars)
}

// scriptsOf is the scenario's mix as pgbench's -f arguments: each op's
// script with its weight.
func (p *pgbench) scriptsOf(s scenario) []string {
	var files []string
	for _, o := range s.ops {
		files = append(files, filepath.Join(p.scripts, o.script)+"@"+strconv.Itoa(o.weight))
	}
	return files
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
	cmd := p.command(ctx, files, d, vars, p.conns)
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

// command is pgbench running files for d (whole seconds) on conns
// connections with prepared statements, and the extra flags.
func (p *pgbench) command(ctx context.Context, files []string, d time.Duration, vars map[string]string, conns int, extra ...string) *exec.Cmd {
	args := []string{
		"-n", // the pgbench_* tables do not exist: no vacuum of them
		"-h", p.socketDir, "-p", "5432", "-U", "postgres",
		"-c", strconv.Itoa(conns), "-j", strconv.Itoa(min(2, conns)),
		"-M", "prepared",
		"-T", strconv.Itoa(int(math.Ceil(d.Seconds()))),
	}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	for k, v := range vars {
		args = append(args, "-D", k+"="+v)
	}
	args = append(args, extra...)
	args = append(args, "postgres")
	return exec.CommandContext(ctx, p.path, args...)
}

// atRate runs the scenario's mix of scripts at a constant rate (pgbench -R)
// for d on conns connections, and returns each transaction's latency from
// its per-transaction log. Under -R pgbench schedules each transaction's
// start ahead (a Poisson process at the rate) and times it from that
// scheduled start, so a transaction that waited for a free connection
// counts its wait, as the open loop's requests do.
func (p *pgbench) atRate(ctx context.Context, s scenario, rate float64, d time.Duration, conns int, vars map[string]string) (stats, error) {
	logs, err := os.MkdirTemp(p.scripts, "rate-")
	if err != nil {
		return stats{}, err
	}
	defer os.RemoveAll(logs)
	cmd := p.command(ctx, p.scriptsOf(s), d, vars, conns, "-R", strconv.FormatFloat(rate, 'f', 1, 64), "-l")
	cmd.Dir = logs // pgbench writes its logs (pgbench_log.PID[.THREAD]) in its working directory
	if out, err := cmd.CombinedOutput(); err != nil {
		return stats{}, fmt.Errorf("pgbench -R %.0f %s: %w\n%s", rate, s.name, err, out)
	}
	st := stats{elapsed: d}
	entries, err := os.ReadDir(logs)
	if err != nil {
		return stats{}, err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(logs, e.Name()))
		if err != nil {
			return stats{}, err
		}
		if err := parseTransactionLog(b, &st); err != nil {
			return stats{}, fmt.Errorf("pgbench log %s: %w", e.Name(), err)
		}
	}
	if len(st.latencies) == 0 && st.errors() == 0 {
		return stats{}, fmt.Errorf("pgbench -R %.0f %s logged no transaction", rate, s.name)
	}
	slices.Sort(st.latencies)
	return st, nil
}

// parseTransactionLog adds the lines of a pgbench per-transaction log
// ("client_id transaction_no time script_no time_epoch time_us [schedule_lag]",
// time in microseconds, or "failed" or "skipped") to st.
func parseTransactionLog(b []byte, st *stats) error {
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 6 {
			return fmt.Errorf("a line of %d fields: %q", len(f), line)
		}
		us, err := strconv.ParseFloat(f[2], 64)
		if err != nil { // "failed" or "skipped": pgbench's own words for a transaction it did not complete
			st.failed.server++
			if st.firstError == "" {
				st.firstError = "pgbench: a transaction " + f[2]
			}
			continue
		}
		st.latencies = append(st.latencies, time.Duration(us*float64(time.Microsecond)))
	}
	return nil
}
