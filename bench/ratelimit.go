package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// -ratelimit (issue 11 item 6): the rate limit is per instance, so behind
// a balancer that spreads a user's requests over N instances a user gets up
// to N times RATE_LIMIT. Holding it across instances means keeping the
// buckets where every instance sees them: PostgreSQL. This measures what
// that would cost each request, with pgbench alone at the bench's
// concurrency: a token-bucket upsert on one row per user
// (bench/pgbench/proposed/), alone and in front of a get, against get.sql's
// ceiling. The service is not changed; the numbers are for choosing.

// rateLimitRun is one pgbench run of the comparison.
type rateLimitRun struct {
	name, what string
	res        pgbenchResult
	cpu        *cpuUse
}

func (r rateLimitRun) postgresPerTx() float64 {
	if r.cpu == nil {
		return 0
	}
	return perRequest(r.cpu.postgres, r.res.transactions)
}

func runRateLimit(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	s, err := startSetup(ctx, o, w, false, progress)
	if err != nil {
		return err
	}
	defer s.stop()
	dbURL := s.db.databaseURL(nil)
	h := describeHost(ctx, dbURL, s.bin)
	pg, err := newPgbench(w, s.db.socketDir(), o.conns)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `
CREATE TABLE rate_buckets (user_id text PRIMARY KEY, tokens double precision NOT NULL, at timestamptz NOT NULL);
CREATE UNLOGGED TABLE rate_buckets_unlogged (user_id text PRIMARY KEY, tokens double precision NOT NULL, at timestamptz NOT NULL)`)
	conn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("create the buckets: %w", err)
	}
	var meter *cpuMeter
	if m, err := newCPUMeter(s.db); err == nil {
		meter = &m
	}
	// Every request takes a token: a rate and burst no load reaches.
	always := map[string]string{"rate": "1000000", "burst": "2000000"}
	scripts := []struct {
		name, what string
		parts      []string
	}{
		{"get", "get.sql: a get alone (the table's ceiling of get)", []string{"get.sql"}},
		{"limiter", "the token-bucket upsert alone", []string{"proposed/ratelimit.sql"}},
		{"limiter, unlogged", "the upsert on an UNLOGGED table", []string{"proposed/ratelimit-unlogged.sql"}},
		{"limiter + get", "the upsert, then the get: a get behind a shared limiter (two statements, two round trips)",
			[]string{"proposed/ratelimit.sql", "get.sql"}},
		{"limiter, unlogged + get", "the same with the UNLOGGED table", []string{"proposed/ratelimit-unlogged.sql", "get.sql"}},
	}
	var runs []rateLimitRun
	for _, sc := range scripts {
		path, err := composeScript(pg, sc.name, sc.parts, always)
		if err != nil {
			return err
		}
		r := rateLimitRun{name: sc.name, what: sc.what}
		r.cpu, err = meter.during(func() (err error) {
			r.res, err = pg.bench(ctx, sc.name, []string{path}, o.duration, nil)
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "%-24s %7.0f tps  PostgreSQL %.3f ms per transaction\n", sc.name, r.res.tps, r.postgresPerTx())
		runs = append(runs, r)
	}
	s.stop()
	report := rateLimitReport{host: h, conns: o.conns, runs: runs}
	fmt.Fprint(stdout, report.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"ratelimit", report.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	return nil
}

// composeScript writes one pgbench script made of the statements of parts
// (bench/pgbench/ paths), in order, for the same user, with the \set lines
// of sets replaced, and returns its path.
func composeScript(p *pgbench, name string, parts []string, sets map[string]string) (string, error) {
	var out []string
	seen := map[string]bool{}
	for _, part := range parts {
		b, err := pgbenchScripts.ReadFile("pgbench/" + part)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "--") || strings.TrimSpace(line) == "" {
				continue
			}
			if f := strings.Fields(line); len(f) >= 3 && f[0] == `\set` {
				if seen[f[1]] {
					continue // the first part's user is the second's
				}
				seen[f[1]] = true
				if v, ok := sets[f[1]]; ok {
					line = `\set ` + f[1] + " " + v
				}
			}
			out = append(out, line)
		}
	}
	path := filepath.Join(p.scripts, "composed-"+strings.NewReplacer(" ", "-", ",", "", "+", "and").Replace(name)+".sql")
	return path, os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

type rateLimitReport struct {
	host  host
	conns int
	runs  []rateLimitRun
}

func (r rateLimitReport) find(name string) rateLimitRun {
	for _, run := range r.runs {
		if run.name == name {
			return run
		}
	}
	return rateLimitRun{}
}

func (r rateLimitReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pgbench -c %d -M prepared on the bench's database (50 users, so 50 bucket rows), each script for the "+
		"same time; PostgreSQL's CPU per transaction read from /proc. The buckets allow every request here (a rate no "+
		"load reaches), so each request writes, as it would for users under their limit.\n\n", r.conns)
	b.WriteString("| pgbench script | tps | PostgreSQL CPU per transaction | share of get's tps |\n|---|---:|---:|---:|\n")
	get := r.find("get")
	for _, run := range r.runs {
		fmt.Fprintf(&b, "| %s: %s | %.0f | %.3f ms | %.2f |\n", run.name, run.what, run.res.tps, run.postgresPerTx(), run.res.tps/get.res.tps)
	}
	logged, unlogged := r.find("limiter + get"), r.find("limiter, unlogged + get")
	fmt.Fprintf(&b, "\nA shared limiter would add to every request one statement and one round trip, and %.3f ms (UNLOGGED: "+
		"%.3f ms) of PostgreSQL CPU to a get's %.3f ms; PostgreSQL alone would then serve %.0f gets per second instead of "+
		"%.0f (UNLOGGED: %.0f).\n", logged.postgresPerTx()-get.postgresPerTx(), unlogged.postgresPerTx()-get.postgresPerTx(),
		get.postgresPerTx(), logged.res.tps, get.res.tps, unlogged.res.tps)
	return b.String()
}

func (r rateLimitReport) section(command string) string {
	return section("A rate limit shared by the instances: its cost (issue 11)", r.host, command, r.markdown())
}
