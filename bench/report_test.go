package main

import (
	"strings"
	"testing"
	"time"
)

// The page -out writes stands on its own: what was measured where and when,
// the command that measures it again, then the results.
func TestPage(t *testing.T) {
	ms := time.Millisecond
	cpu := &cpuUse{service: 300 * ms, postgres: 150 * ms, bench: 120 * ms, machine: 600 * ms}
	tab := table{
		host: host{cpu: "AMD EPYC 7B13", cores: 2, memory: "23.6 GiB", os: "Debian GNU/Linux 12 (bookworm), linux/amd64",
			goVersion: "go1.26.8", postgres: "15.18 (Debian 15.18-0+deb12u1)", revision: "0123456789ab",
			date: time.Date(2026, 12, 1, 14, 40, 0, 0, time.UTC), loadAverage: "0.25"},
		settings: "Load: 32 connections.",
		rows: []row{{scenario: "get", st: stats{elapsed: time.Second, latencies: []time.Duration{ms, 2 * ms, 3 * ms}},
			ceiling: pgbenchResult{tps: 10, transactions: 10, cpu: 10 * ms}, cpu: cpu, ceilingCPU: cpu}},
		peakRSS: 37 << 10,
	}
	page := withSection(withSection("", "table", tab.section("go run ./bench -out docs/performance.md")), "other", "other mode")
	inOrder(t, page,
		"# Performance\n", "<!-- bench:table -->\n## The service against its ceiling", "| CPU | AMD EPYC 7B13 |", "| Cores | 2 |", "| Memory | 23.6 GiB |", "| OS | Debian GNU/Linux 12",
		"| Go | go1.26.8 |", "| PostgreSQL | 15.18 (Debian", "| Service | commit 0123456789ab |", "| Date | 2026-12-01 14:40 UTC |",
		"```sh\ngo run ./bench -out docs/performance.md\n```", "Load: 32 connections.",
		"| scenario | service req/s |", "| get | 3 | 2.00 ms |", "Service peak RSS (VmHWM): 37.0 MB",
		"### CPU per request", "| get | 100.000 | 50.000 | 40.000 |", "<!-- /bench:table -->",
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
