// Command bench measures the service under load and compares it with its
// ceiling: PostgreSQL running the same SQL through pgbench, with no HTTP in
// front. Run it from the repository root:
//
//	go run ./bench                  every scenario: service vs pgbench, one table
//	go run ./bench -soak 10m        mixed load for 10 minutes; fails on 5xx, RSS or goroutine growth
//	go run ./bench -scale           1,000,000 tasks by COPY: list/get before and after, q search, EXPLAIN
//	go run ./bench -openloop        p50/p99/p99.9 at a constant 25, 50 and 75 % of each scenario's capacity
//
// Each run builds the service, starts it on a fresh embedded PostgreSQL in a
// temporary directory, seeds 50 users × 100 tasks through the API, measures,
// and removes everything again (-keep leaves the directory).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errTargetsMissed) {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench: error:", err)
		os.Exit(1)
	}
}

// errTargetsMissed: the run finished, but a pass/fail criterion failed.
var errTargetsMissed = errors.New("criteria failed")

// options are the command line.
type options struct {
	scenarios  []string
	duration   time.Duration
	warmup     time.Duration
	conns      int
	keep       bool
	pool       int    // >0: the service's pool_max_conns
	execMode   string // "": pgx's default; else default_query_exec_mode
	out        string // the markdown page (docs/performance.md)
	command    string // this run's command line, to reproduce it
	cpuProfile string // directory for one CPU profile of the service per scenario
	soak       time.Duration
	scale      bool
	explainOut string
	baseline   string // with the table: also run the write scenarios against this commit
	streams    countFlag
	fanout     countFlag
	idle       time.Duration // -streams: how long each idle measurement lasts
	rateLimit  bool
	metrics    bool
	openLoop   bool
	floor      bool
	rounds     int    // the table: how many times each scenario is measured, in turns
	client     string // the table's load generator: "go" or "wrk"
}

// countFlag is a mode that takes a count: -streams alone runs it with its
// default count, -streams=N with N.
type countFlag struct {
	n, def int
}

func (c *countFlag) String() string {
	if c == nil || c.n == 0 {
		return ""
	}
	return strconv.Itoa(c.n)
}

func (c *countFlag) Set(s string) error {
	switch s {
	case "true":
		c.n = c.def
		return nil
	case "false":
		c.n = 0
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("want a count of at least 1, e.g. =%d", c.def)
	}
	c.n = n
	return nil
}

func (c *countFlag) IsBoolFlag() bool { return true }

func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{command: commandLine(args), streams: countFlag{def: 10000}, fanout: countFlag{def: 1000}}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := fs.String("scenarios", strings.Join(scenarioNames(), ","), "comma-separated scenarios to run")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per scenario (and per pgbench run)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each scenario")
	fs.IntVar(&o.rounds, "rounds", 1, "with the table: measure the scenarios this many times, in turns (A B C, A B C, …), so that ratios between scenarios come from runs minutes apart and noise shows as their spread")
	fs.StringVar(&o.client, "client", "go", "the table's load generator, and -openloop's for the capacity: go (the Go client, in this process) or wrk (installed apart; a fraction of the Go client's CPU per request)")
	fs.IntVar(&o.conns, "conns", 32, "concurrent connections (HTTP clients, and pgbench clients)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (service log, database, scripts)")
	fs.IntVar(&o.pool, "pool", 0, "the service's pool_max_conns (0: the service's default); see -exec-mode")
	fs.StringVar(&o.execMode, "exec-mode", "", "the service's default_query_exec_mode: cache_statement, cache_describe, describe_exec, exec or simple_protocol (empty: the service's default)")
	fs.StringVar(&o.out, "out", "", "also write the results as a markdown page (machine, date, command, table) to this file, e.g. docs/performance.md")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the service during each scenario into this directory")
	fs.StringVar(&o.baseline, "baseline", "", "with the table: also run the write scenarios against the service at this git commit (e.g. cdb29a8), built from git into the temporary directory")
	fs.Var(&o.streams, "streams", "instead of the table: open N idle event streams of N users on one instance (-streams alone: 10000, -streams=N): RSS per stream, CPU at rest, idle queries per minute with LISTEN and polling")
	fs.DurationVar(&o.idle, "idle", time.Minute, "with -streams: how long each idle measurement lasts")
	fs.Var(&o.fanout, "fanout", "instead of the table: N streams of N users on one of two instances (-fanout alone: 1000, -fanout=N); each user writes once through the same instance, once through the other: time from the write's 2xx to its event")
	fs.BoolVar(&o.rateLimit, "ratelimit", false, "instead of the table: what a per-user rate limit kept in PostgreSQL would cost per request (pgbench: a token-bucket upsert, with and without the get)")
	fs.BoolVar(&o.metrics, "metrics", false, "instead of the table: the list on two instances of one database, without and with METRICS_ADDR, in turns, scraping /metrics every second: the metrics' cost in req/s and CPU per request")
	fs.BoolVar(&o.floor, "floor", false, "instead of the table: the get scenario against the service and against bench/floor (net/http and pgx with the same statement, nothing else), and pgbench, in -rounds: how far a get's CPU is from the least net/http and pgx spend")
	fs.BoolVar(&o.openLoop, "openloop", false, "instead of the table: each scenario's capacity (the table's closed loop), then a constant rate of 25, 50 and 75 % of it, each request timed from its intended start: p50, p99, p99.9")
	fs.DurationVar(&o.soak, "soak", 0, "instead of the table: mixed load for this long, checking 5xx, RSS and goroutines")
	fs.BoolVar(&o.scale, "scale", false, "instead of the table: list/get on small data, then on 1,000,000 tasks loaded by COPY; q search; EXPLAIN")
	fs.StringVar(&o.explainOut, "explain-out", "", "with -scale: write EXPLAIN (ANALYZE, BUFFERS) of every listing shape to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, name := range strings.Split(*scenarios, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.Contains(scenarioNames(), name) {
			return o, fmt.Errorf("-scenarios: unknown scenario %q (have %s)", name, strings.Join(scenarioNames(), ", "))
		}
		o.scenarios = append(o.scenarios, name)
	}
	switch {
	case len(o.scenarios) == 0:
		return o, errors.New("-scenarios: name at least one")
	case o.duration < time.Second:
		return o, errors.New("-duration: at least 1s (pgbench counts whole seconds)")
	case o.conns < 1:
		return o, errors.New("-conns: at least 1")
	case o.rounds < 1:
		return o, errors.New("-rounds: at least 1")
	case !slices.Contains(clients, o.client):
		return o, fmt.Errorf("-client: %q is not one of %s", o.client, strings.Join(clients, ", "))
	case o.explainOut != "" && !o.scale:
		return o, errors.New("-explain-out needs -scale")
	case o.idle < 10*time.Second:
		return o, errors.New("-idle: at least 10s")
	}
	modes := 0
	for _, on := range []bool{o.soak > 0, o.scale, o.streams.n > 0, o.fanout.n > 0, o.rateLimit, o.metrics, o.openLoop, o.floor} {
		if on {
			modes++
		}
	}
	switch {
	case modes > 1:
		return o, errors.New("-soak, -scale, -streams, -fanout, -ratelimit, -metrics, -openloop and -floor are separate runs")
	case o.baseline != "" && modes > 0:
		return o, errors.New("-baseline goes with the table")
	case o.rounds > 1 && modes > 0 && !o.floor:
		return o, errors.New("-rounds goes with the table and -floor")
	case o.client != "go" && modes > 0 && !o.openLoop && !o.floor:
		return o, errors.New("-client goes with the table, -openloop and -floor")
	}
	return o, nil
}

// commandLine is the command that runs the bench with args, quoted for a
// POSIX shell where it must be.
func commandLine(args []string) string {
	words := []string{"go", "run", "./bench"}
	for _, a := range args {
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return !safeInShell(r) }) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

func safeInShell(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=,:@%+", r)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	w, err := newWorkspace(o.keep, stderr)
	if err != nil {
		return err
	}
	defer w.remove()

	// Progress goes to stderr, results to stdout.
	switch {
	case o.soak > 0:
		return runSoak(ctx, o, w, stdout, stderr)
	case o.scale:
		return runScale(ctx, o, w, stdout, stderr)
	case o.streams.n > 0:
		return runStreams(ctx, o, w, stdout, stderr)
	case o.fanout.n > 0:
		return runFanout(ctx, o, w, stdout, stderr)
	case o.rateLimit:
		return runRateLimit(ctx, o, w, stdout, stderr)
	case o.metrics:
		return runMetrics(ctx, o, w, stdout, stderr)
	case o.openLoop:
		return runOpenLoop(ctx, o, w, stdout, stderr)
	case o.floor:
		return runFloor(ctx, o, w, stdout, stderr)
	}
	return runTable(ctx, o, w, stdout, stderr)
}

// workspace is the temporary directory of one run: the built service, its
// working directory and data, the pgbench scripts.
type workspace struct {
	dir  string
	keep bool
	out  io.Writer
}

func newWorkspace(keep bool, out io.Writer) (*workspace, error) {
	// Under /tmp, so the postgres OS user (the cluster's owner when running as
	// root) can reach the data directory the service creates in it.
	dir, err := os.MkdirTemp("", "tasks-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	return &workspace{dir: dir, keep: keep, out: out}, nil
}

func (w *workspace) remove() {
	if w.keep {
		fmt.Fprintf(w.out, "kept %s (service.log, data/, pgbench/)\n", w.dir)
		return
	}
	if err := os.RemoveAll(w.dir); err != nil {
		fmt.Fprintf(w.out, "could not remove %s: %v\n", w.dir, err)
	}
}
