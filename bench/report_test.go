package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// The page -out writes stands on its own: what was measured where and when,
// the command that measures it again, then the results.
func TestPage(t *testing.T) {
	ms := time.Millisecond
	cpu := &cpuUse{service: 300 * ms, postgres: 150 * ms, bench: 120 * ms, machine: 600 * ms, stolen: 100 * ms}
	ceilingCPU := &cpuUse{postgres: 150 * ms, machine: 300 * ms, stolen: 40 * ms}
	tab := table{
		host: host{cpu: "AMD EPYC 7B13", cores: 2, memory: "23.6 GiB", os: "Debian GNU/Linux 12 (bookworm), linux/amd64",
			goVersion: "go1.26.8", postgres: "15.18 (Debian 15.18-0+deb12u1)", revision: "0123456789ab",
			date: time.Date(2026, 12, 1, 14, 40, 0, 0, time.UTC), loadAverage: "0.25"},
		settings: "Load: 32 connections.",
		rows: []row{{scenario: "get", st: stats{elapsed: time.Second, latencies: []time.Duration{ms, 2 * ms, 3 * ms}},
			ceiling: pgbenchResult{tps: 10, transactions: 10, cpu: 10 * ms}, cpu: cpu, ceilingCPU: ceilingCPU}},
		peakRSS: 37 << 10,
	}
	page := withSection(withSection("", "table", tab.section("go run ./bench -out docs/performance.md")), "other", "other mode")
	inOrder(t, page,
		"# Performance\n", "<!-- bench:table -->\n## The service against its ceiling", "| CPU | AMD EPYC 7B13 |", "| Cores | 2 |", "| Memory | 23.6 GiB |", "| OS | Debian GNU/Linux 12",
		"| Go | go1.26.8 |", "| PostgreSQL | 15.18 (Debian", "| Service | commit 0123456789ab |", "| Date | 2026-12-01 14:40 UTC |",
		"```sh\ngo run ./bench -out docs/performance.md\n```", "Load: 32 connections.",
		"| scenario | service req/s |", "| get | 3 | 2.00 ms |", "Service peak RSS (VmHWM): 37.0 MB",
		"### CPU per request", "| get | 100.000 | 50.000 | 40.000 |",
		// 100 ms of 2 cores × 1 s, and 40 ms of 2 cores × 10/10 s
		"The hypervisor gave other guests 5.0–5.0 % of the machine's time during the service's runs and 2.0–2.0 % during pgbench's",
		"<!-- /bench:table -->",
		"<!-- bench:other -->\nother mode\n<!-- /bench:other -->", endOfGenerated,
	)
}

// inOrder checks that page holds each of wants, in that order.
func inOrder(t *testing.T, page string, wants ...string) {
	t.Helper()
	last := -1
	for _, want := range wants {
		i := strings.Index(page, want)
		if i < 0 {
			t.Fatalf("the page lacks %q:\n%s", want, page)
		}
		if i < last {
			t.Fatalf("%q is out of order:\n%s", want, page)
		}
		last = i
	}
}

// A run replaces its own section and keeps the rest of the page, the
// analysis kept by hand above all.
func TestSectionsKeepTheRest(t *testing.T) {
	page := withSection("", "table", "old table")
	page = withSection(page, "streams", "streams")
	page += "\n## Analysis\n\nkept by hand\n"
	page = withSection(page, "table", "new table")
	want := pageIntro + "<!-- bench:table -->\nnew table\n<!-- /bench:table -->\n\n<!-- bench:streams -->\nstreams\n<!-- /bench:streams -->\n\n" +
		endOfGenerated + "\n\n## Analysis\n\nkept by hand\n"
	if page != want {
		t.Fatalf("got\n%s\nwant\n%s", page, want)
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine([]string{"-scenarios", "list,get", "-out", "docs/performance.md", "-cpuprofile", "my prof", "it's"})
	want := `go run ./bench -scenarios list,get -out docs/performance.md -cpuprofile 'my prof' 'it'\''s'`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// With -rounds, the table pools each scenario's rounds, and each goal
// between two scenarios is also taken within every round; the verdict goes
// by the median of the rounds, not by the pool, which one noisy round can
// move.
func TestRoundsPoolAndJudgeByTheMedian(t *testing.T) {
	ms := time.Millisecond
	run := func(name string, requests int, service, postgres time.Duration) row {
		cpu := &cpuUse{service: service, postgres: postgres, machine: service + postgres}
		return row{scenario: name, st: stats{elapsed: time.Second, latencies: make([]time.Duration, requests)},
			ceiling: pgbenchResult{tps: 100, transactions: 100}, cpu: cpu, ceilingCPU: cpu}
	}
	// Per round, the sync costs 0.9, 0.95 and 2.0 times the list (2 per
	// request against 1, in the third: one noisy round), and the 304s
	// answer 3.2, 3.1 and 2.0 times the lists.
	rounds := [][]row{
		{run("list", 1000, 1000*ms, 1000*ms), run("changes", 1000, 900*ms, 900*ms), run("list-304", 3200, ms, ms)},
		{run("list", 1000, 1000*ms, 1000*ms), run("changes", 1000, 950*ms, 950*ms), run("list-304", 3100, ms, ms)},
		{run("list", 100, 100*ms, 100*ms), run("changes", 100, 200*ms, 200*ms), run("list-304", 200, ms, ms)},
	}
	tab := table{rounds: rounds, rows: pooledRows(rounds)}
	list, _ := tab.find("list")
	if got := list.st.requests(); got != 2100 || list.st.elapsed != 3*time.Second || list.ceiling.transactions != 300 || list.ceiling.tps != 100 {
		t.Fatalf("pooled list: %d requests in %s, pgbench %d at %.0f tps; want 2100 in 3s, 300 at 100",
			got, list.st.elapsed, list.ceiling.transactions, list.ceiling.tps)
	}
	if list.cpu.service != 2100*ms {
		t.Fatalf("pooled service CPU %s, want 2.1s", list.cpu.service)
	}
	goals := strings.Join(tab.goals(), "\n")
	for _, want := range []string{
		"0.98× pooled; per round 0.90×, 0.95×, 2.00× (median 0.95×); goal ≤ 1: met",
		"3.10× pooled; per round 3.20×, 3.10×, 2.00× (median 3.10×); goal ≥ 3: met",
	} {
		if !strings.Contains(goals, want) {
			t.Errorf("the goals lack %q:\n%s", want, goals)
		}
	}
	// A write against the baseline: its ratio in each round too.
	for k, rate := range []int{900, 1000, 1200} {
		w := run("create", rate, ms, ms)
		w.base = &besideRun{st: stats{elapsed: time.Second, latencies: make([]time.Duration, 1000)}, cpu: &cpuUse{}}
		tab.rounds[k] = append(tab.rounds[k], w)
	}
	tab.rows = pooledRows(tab.rounds)
	if writes := tab.writesMarkdown(); !strings.Contains(writes, "| 1.03 | 0.90, 1.00, 1.20 (median 1.00) |") {
		t.Errorf("the writes lack each round's ratio:\n%s", writes)
	}
	// One round alone is judged by itself.
	if one := strings.Join(tab.round(2).goals(), "\n"); !strings.Contains(one, "2.00×; goal ≤ 1: missed") || strings.Contains(one, "per round") {
		t.Errorf("one round:\n%s", one)
	}
}

// -rounds and -client shape the table (and -floor's runs), and nothing else.
func TestTableOptions(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string // "" when the options are valid
	}{
		{[]string{"-rounds", "3", "-client", "wrk"}, ""},
		{[]string{"-rounds", "0"}, "-rounds: at least 1"},
		{[]string{"-client", "curl"}, `-client: "curl" is not one of go, wrk`},
		{[]string{"-rounds", "2", "-openloop"}, "-rounds goes with the table and -floor"},
		{[]string{"-client", "wrk", "-soak", "1m"}, "-client goes with the table, -openloop and -floor"},
		{[]string{"-rounds", "3", "-client", "wrk", "-floor"}, ""},
		{[]string{"-floor", "-openloop"}, "-soak, -scale, -streams, -fanout, -ratelimit, -metrics, -openloop and -floor are separate runs"},
	} {
		o, err := parseOptions(c.args, io.Discard)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.args, err)
		case c.err == "" && (o.rounds != 3 || o.client != "wrk"):
			t.Errorf("%q: rounds %d, client %q", c.args, o.rounds, o.client)
		case c.err != "" && (err == nil || err.Error() != c.err):
			t.Errorf("%q: error %v, want %q", c.args, err, c.err)
		}
	}
	if o, err := parseOptions(nil, io.Discard); err != nil || o.rounds != 1 || o.client != "go" {
		t.Fatalf("defaults: rounds %d, client %q, error %v; want 1, go", o.rounds, o.client, err)
	}
}
