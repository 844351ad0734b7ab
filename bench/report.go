package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// Targets of issue 5: the service's throughput as a share of pgbench's, per
// scenario; p99 and peak RSS bounds.
var ratioTargets = map[string]float64{
	"list": 0.70, "get": 0.35, "create": 0.60, "update": 0.60, "toggle": 0.60, "mixed": 0.60,
}

const (
	p99Target     = 10 * time.Millisecond
	peakRSSTarget = 64 << 10 // kB
)

// row is one scenario's result.
type row struct {
	scenario   string
	st         stats
	ceiling    pgbenchResult
	cpu        *cpuUse    // during the service's run; nil when not measured
	ceilingCPU *cpuUse    // during pgbench's run
	base       *besideRun // the same scenario against -baseline; nil when not run
}

// besideRun is a scenario's run against a server beside the measured service
// (the -baseline service, bench/floor): its requests and the CPU it took.
type besideRun struct {
	st  stats
	cpu *cpuUse
}

func (r row) ratio() float64 { return r.st.rate() / r.ceiling.tps }

// ceilingElapsed is how long pgbench's run took, in seconds (0: unknown).
func (r row) ceilingElapsed() float64 {
	if r.ceiling.tps <= 0 {
		return 0
	}
	return float64(r.ceiling.transactions) / r.ceiling.tps
}

// serviceCPU splits the CPU time of the service's run per request.
func (r row) serviceCPU() cpuSplit {
	c := *r.cpu
	return newCPUSplit(c.service, c.postgres, c.bench, c.machine, r.st.requests())
}

// pgbenchCPU splits the CPU time of pgbench's run per transaction; the idle
// service counts as other work.
func (r row) pgbenchCPU() cpuSplit {
	c := *r.ceilingCPU
	return newCPUSplit(0, c.postgres, r.ceiling.cpu, c.machine, r.ceiling.transactions)
}

// table is the result of the default run.
type table struct {
	host     host
	settings string
	rows     []row
	peakRSS  int64   // kB
	baseline string  // -baseline: the commit; "" when not run
	rounds   [][]row // with -rounds N > 1: each round's rows, as rows pools them
}

func (t table) write(w io.Writer) {
	fmt.Fprintln(w, t.host)
	fmt.Fprintln(w, t.settings)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tservice req/s\tp50\tp99\terrors\tpgbench tps\tratio\ttarget\t")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%.0f\t%.2f\t%s\t\n", r.scenario, r.st.rate(),
			ms(r.st.percentile(50)), ms(r.st.percentile(99)), r.st.errors(), r.ceiling.tps, r.ratio(), r.verdict())
	}
	tw.Flush()
	fmt.Fprintf(w, "\nservice peak RSS (VmHWM): %s (target ≤ %s)\n", mb(t.peakRSS), mb(peakRSSTarget))
	t.writeCPU(w)
	for _, g := range t.goals() {
		fmt.Fprintln(w, g)
	}
	if t.baseline != "" {
		fmt.Fprintf(w, "\n%s", t.writesMarkdown())
	}
	for _, r := range t.rows {
		if r.st.firstError != "" {
			fmt.Fprintf(w, "first error in %s: %s\n", r.scenario, r.st.firstError)
		}
	}
}

// verdict compares the row with its targets: ratio, p99 and errors.
func (r row) verdict() string {
	var missed []string
	if target, ok := ratioTargets[r.scenario]; ok && r.ratio() < target {
		missed = append(missed, fmt.Sprintf("ratio<%.2f", target))
	}
	if r.st.percentile(99) > p99Target {
		missed = append(missed, "p99>10ms")
	}
	if r.st.errors() > 0 {
		missed = append(missed, "errors")
	}
	if len(missed) == 0 {
		if target, ok := ratioTargets[r.scenario]; ok {
			return fmt.Sprintf("ok (≥%.2f)", target)
		}
		return "ok"
	}
	return "missed: " + strings.Join(missed, ",")
}

// section is the table as a section of docs/performance.md that stands on
// its own: where and when it was measured, how to measure again, the
// results.
func (t table) section(command string) string {
	var b strings.Builder
	h := t.host
	b.WriteString("## The service against its ceiling\n\n")
	b.WriteString("The service under load, and its ceiling: PostgreSQL running the very same SQL through pgbench, with no HTTP " +
		"in front.\n\n")
	b.WriteString("### Machine\n\n")
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n", h.cpu)
	fmt.Fprintf(&b, "| Cores | %d |\n", h.cores)
	fmt.Fprintf(&b, "| Memory | %s |\n", h.memory)
	fmt.Fprintf(&b, "| OS | %s |\n", h.os)
	fmt.Fprintf(&b, "| Go | %s |\n", h.goVersion)
	fmt.Fprintf(&b, "| PostgreSQL | %s |\n", h.postgres)
	if h.revision != "" {
		fmt.Fprintf(&b, "| Service | commit %s |\n", h.revision)
	}
	fmt.Fprintf(&b, "| Date | %s |\n", h.date.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "| Load average before the run | %s |\n\n", h.loadAverage)
	b.WriteString("Load generator, service and PostgreSQL share the machine, as pgbench and PostgreSQL do for the ceiling; " +
		"other work on it moves every number.\n\n")
	b.WriteString("### Reproduce\n\n")
	fmt.Fprintf(&b, "```sh\n%s\n```\n\n", command)
	fmt.Fprintf(&b, "%s\n\n", t.settings)
	b.WriteString("### Results\n\n")
	b.WriteString(t.markdown())
	return b.String()
}

// markdown is the results: the table, peak RSS, and CPU per request.
func (t table) markdown() string {
	var b strings.Builder
	b.WriteString("| scenario | service req/s | p50 | p99 | errors | pgbench tps | ratio | target |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range t.rows {
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %d | %.0f | %.2f | %s |\n", r.scenario, r.st.rate(),
			ms(r.st.percentile(50)), ms(r.st.percentile(99)), r.st.errors(), r.ceiling.tps, r.ratio(), r.verdict())
	}
	fmt.Fprintf(&b, "\nService peak RSS (VmHWM): %s (target ≤ %s).\n", mb(t.peakRSS), mb(peakRSSTarget))
	if !t.cpuMeasured() {
		return b.String()
	}
	fmt.Fprintf(&b, "\n### CPU per request\n\n%s\n\n", cpuCaption)
	b.WriteString("| scenario | service | PostgreSQL | load generator | other | total | pgbench run: PostgreSQL | pgbench | other | total |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range t.rows {
		sv, pb := r.serviceCPU(), r.pgbenchCPU()
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", r.scenario,
			sv.service, sv.postgres, sv.client, sv.other, sv.total(), pb.postgres, pb.client, pb.other, pb.total())
	}
	b.WriteString(t.stealNote())
	if goals := t.goals(); len(goals) > 0 {
		b.WriteString("\n### Goals of issue 10\n\n")
		b.WriteString(strings.Join(goals, "\n") + "\n")
	}
	return b.String()
}

// stealNote says how much of the machine's time the hypervisor gave to
// other guests during the runs (counted in other): the lowest and highest
// share over the scenarios' runs, the service's and pgbench's.
func (t table) stealNote() string {
	if t.host.cores == 0 {
		return ""
	}
	var svc, pgb []float64
	for _, r := range t.rows {
		svc = append(svc, percentOfMachine(r.cpu.stolen, r.st.elapsed.Seconds(), t.host.cores))
		if r.ceiling.tps > 0 {
			pgb = append(pgb, percentOfMachine(r.ceilingCPU.stolen, r.ceilingElapsed(), t.host.cores))
		}
	}
	span := func(v []float64) string {
		if len(v) == 0 {
			return "?"
		}
		return fmt.Sprintf("%.1f–%.1f %%", slices.Min(v), slices.Max(v))
	}
	return fmt.Sprintf("\nThe hypervisor gave other guests %s of the machine's time during the service's runs and %s during "+
		"pgbench's (steal in /proc/stat, counted in *other*): time that every process here was ready to run and could not.\n",
		span(svc), span(pgb))
}

// find is the row of scenario name, if it ran.
func (t table) find(name string) (row, bool) {
	for _, r := range t.rows {
		if r.scenario == name {
			return r, true
		}
	}
	return row{}, false
}

// goals are issue 10's goals for the conditional list and the sync, each
// measured against the full list of the same run: a 100-change sync costs
// no more than a 100-task list (CPU of the service and PostgreSQL per
// request), and a 304 answers at least 3 times the lists per second. With
// several rounds, each is also taken within every round, and the verdict
// goes by the median of those.
func (t table) goals() []string {
	list, ok := t.find("list")
	if !ok {
		return nil
	}
	var out []string
	if ratio, ok := syncCostRatio(t); ok {
		c, _ := t.find("changes")
		cc, lc := c.serviceCPU(), list.serviceCPU()
		rounds := t.perRound(syncCostRatio)
		out = append(out, fmt.Sprintf("- A sync of 100 changes costs %.3f ms of CPU (service %.3f + PostgreSQL %.3f), a list of 100 tasks %.3f "+
			"(%.3f + %.3f): %.2f×%s; goal ≤ 1: %s. %.0f syncs/s against %.0f lists/s.", cc.service+cc.postgres, cc.service, cc.postgres,
			lc.service+lc.postgres, lc.service, lc.postgres, ratio, roundsNote(rounds, "%.2f×"), met(settled(ratio, rounds) <= 1),
			c.st.rate(), list.st.rate()))
	}
	if ratio, ok := notModifiedRatio(t); ok {
		n, _ := t.find("list-304")
		rounds := t.perRound(notModifiedRatio)
		out = append(out, fmt.Sprintf("- A 304 to If-None-Match answers %.0f req/s, a full list %.0f: %.2f×%s; goal ≥ 3: %s.",
			n.st.rate(), list.st.rate(), ratio, roundsNote(rounds, "%.2f×"), met(settled(ratio, rounds) >= 3)))
	}
	return out
}

// settled is the value a verdict goes by: the median of the rounds when
// there were several, else the one measurement.
func settled(pooled float64, rounds []float64) float64 {
	if len(rounds) == 0 {
		return pooled
	}
	return median(rounds)
}

// syncCostRatio is a 100-change sync's CPU (service and PostgreSQL) over a
// 100-task list's.
func syncCostRatio(t table) (float64, bool) {
	list, ok := t.find("list")
	c, ok2 := t.find("changes")
	if !ok || !ok2 || c.cpu == nil || list.cpu == nil {
		return 0, false
	}
	cc, lc := c.serviceCPU(), list.serviceCPU()
	return (cc.service + cc.postgres) / (lc.service + lc.postgres), true
}

// notModifiedRatio is the 304s per second over the lists per second.
func notModifiedRatio(t table) (float64, bool) {
	list, ok := t.find("list")
	n, ok2 := t.find("list-304")
	if !ok || !ok2 {
		return 0, false
	}
	return n.st.rate() / list.st.rate(), true
}

// baselineRatio is the scenario's req/s over the baseline's.
func baselineRatio(r row) float64 { return r.st.rate() / r.base.st.rate() }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// writesMarkdown compares the write scenarios with the -baseline service,
// run in turn with this one.
func (t table) writesMarkdown() string {
	var b strings.Builder
	rounds := len(t.rounds) > 1
	b.WriteString("| scenario | req/s | p50 | p99 | errors | baseline req/s | p50 | p99 | errors | ratio |")
	if rounds {
		b.WriteString(" per round |")
	}
	b.WriteString("\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	if rounds {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		if r.base == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %d | %.0f | %s | %s | %d | %.2f |", r.scenario, r.st.rate(), ms(r.st.percentile(50)),
			ms(r.st.percentile(99)), r.st.errors(), r.base.st.rate(), ms(r.base.st.percentile(50)), ms(r.base.st.percentile(99)),
			r.base.st.errors(), baselineRatio(r))
		if rounds {
			perRound := t.perRound(func(rt table) (float64, bool) {
				rr, ok := rt.find(r.scenario)
				return baselineRatio(rr), ok && rr.base != nil
			})
			fmt.Fprintf(&b, " %s |", listRounds(perRound, "%.2f"))
		}
		b.WriteString("\n")
	}
	if !t.cpuMeasured() {
		return b.String()
	}
	b.WriteString("\nCPU per write, in ms, of the service and of PostgreSQL, during each service's run; the difference is what " +
		"a write costs now more than at the baseline (the change feed's position and notification, and anything else that " +
		"changed since).\n\n")
	b.WriteString("| scenario | service | PostgreSQL | total | baseline: service | PostgreSQL | total | difference |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range t.rows {
		if r.base == nil || r.base.cpu == nil {
			continue
		}
		now := r.serviceCPU()
		c := *r.base.cpu
		then := newCPUSplit(c.service, c.postgres, c.bench, c.machine, r.base.st.requests())
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %+.3f |\n", r.scenario, now.service, now.postgres,
			now.service+now.postgres, then.service, then.postgres, then.service+then.postgres,
			now.service+now.postgres-then.service-then.postgres)
	}
	return b.String()
}

// writesSection is writesMarkdown as a section of docs/performance.md.
func (t table) writesSection(command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Writes against the service at %s\n\n", t.baseline)
	b.WriteString(provenance(t.host, command))
	fmt.Fprintf(&b, "Each write scenario of the table ran against this service and then against the service at commit %s, "+
		"built from git and started beside it on an embedded PostgreSQL of its own, seeded the same way; the same load, in "+
		"the same run. At the baseline a delete removed the task; now it moves it to the trash, and purge (`DELETE /trash/{id}`) "+
		"deletes a trashed task for good: purge's row is measured against the baseline's delete.\n\n", t.baseline)
	b.WriteString(t.writesMarkdown())
	return b.String()
}

const cpuCaption = "CPU per request, in ms: during the service's run, the service, PostgreSQL, the load generator and " +
	"everything else the machine did (other work on it, the kernel); during pgbench's, PostgreSQL, pgbench and everything else."

func (t table) cpuMeasured() bool {
	for _, r := range t.rows {
		if r.cpu == nil || r.ceilingCPU == nil {
			return false
		}
	}
	return len(t.rows) > 0
}

func (t table) writeCPU(w io.Writer) {
	if !t.cpuMeasured() {
		return
	}
	fmt.Fprintf(w, "\n%s\n\n", cpuCaption)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tservice\tPostgreSQL\tload generator\tother\ttotal\t|\tPostgreSQL\tpgbench\tother\ttotal\t")
	for _, r := range t.rows {
		sv, pb := r.serviceCPU(), r.pgbenchCPU()
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t|\t%.3f\t%.3f\t%.3f\t%.3f\t\n", r.scenario,
			sv.service, sv.postgres, sv.client, sv.other, sv.total(), pb.postgres, pb.client, pb.other, pb.total())
	}
	tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

// host is where the run happened: the ratios depend on it.
type host struct {
	cpu         string
	cores       int
	memory      string
	os          string
	goVersion   string // the service's toolchain
	postgres    string
	revision    string // the service's commit; "" when unknown
	date        time.Time
	loadAverage string
}

// describeHost looks at the machine, the database at dbURL and, when bin is
// not "", the service's binary.
func describeHost(ctx context.Context, dbURL, bin string) host {
	h := host{cpu: cpuModel(), cores: runtime.NumCPU(), memory: memoryTotal(), os: osName(),
		goVersion: runtime.Version(), postgres: "?", date: time.Now(), loadAverage: loadAverage()}
	if conn, err := pgx.Connect(ctx, dbURL); err == nil {
		var v string
		if conn.QueryRow(ctx, "SHOW server_version").Scan(&v) == nil {
			h.postgres = v
		}
		conn.Close(ctx)
	}
	if bin != "" {
		h.goVersion, h.revision = serviceBuild(ctx, bin)
	}
	return h
}

// serviceBuild reads the toolchain and the commit from the service's binary;
// when it was built without VCS stamps (GOFLAGS=-buildvcs=false), it asks git
// for the commit of the working tree the bench builds from.
func serviceBuild(ctx context.Context, bin string) (goVersion, revision string) {
	goVersion = runtime.Version()
	modified := false
	if info, err := buildinfo.ReadFile(bin); err == nil {
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if revision == "" {
		out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
		if err != nil {
			return goVersion, ""
		}
		revision = strings.TrimSpace(string(out))
		out, err = exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
		modified = err == nil && len(bytes.TrimSpace(out)) > 0
	}
	revision = revision[:min(12, len(revision))]
	if modified {
		revision += " with uncommitted changes"
	}
	return goVersion, revision
}

// String is the host on one line, as the text output starts.
func (h host) String() string {
	return fmt.Sprintf("Machine: %s, %d cores, %s memory, %s, %s, PostgreSQL %s; load average before the run: %s",
		h.cpu, h.cores, h.memory, h.os, h.goVersion, h.postgres, h.loadAverage)
}

// machine describes where the run happened, on one line.
func machine(ctx context.Context, dbURL string) string { return describeHost(ctx, dbURL, "").String() }

// loadAverage is the 1-minute load average: other work on the machine
// takes CPU from the measurement.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// memoryTotal is MemTotal of /proc/meminfo.
func memoryTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && name == "MemTotal" {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				return "?"
			}
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "?"
}

// osName is the distribution (os-release's PRETTY_NAME), the kernel and the
// platform, as far as they can be read.
func osName() string {
	parts := []string{}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				parts = append(parts, strings.Trim(v, `"`))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "kernel "+strings.TrimSpace(string(b)))
	}
	return strings.Join(append(parts, runtime.GOOS+"/"+runtime.GOARCH), ", ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "CPU ?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "CPU ?"
}
