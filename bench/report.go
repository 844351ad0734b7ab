package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
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
	cpu        *cpuUse // during the service's run; nil when not measured
	ceilingCPU *cpuUse // during pgbench's run
}

func (r row) ratio() float64 { return r.st.rate() / r.ceiling.tps }

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
	machine  string
	settings string
	rows     []row
	peakRSS  int64 // kB
}

func (t table) write(w io.Writer) {
	fmt.Fprintln(w, t.machine)
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
		return fmt.Sprintf("ok (≥%.2f)", ratioTargets[r.scenario])
	}
	return "missed: " + strings.Join(missed, ",")
}

func (t table) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  \n%s\n\n", t.machine, t.settings)
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
	fmt.Fprintf(&b, "\n%s\n\n", cpuCaption)
	b.WriteString("| scenario | service | PostgreSQL | load generator | other | total | pgbench run: PostgreSQL | pgbench | other | total |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range t.rows {
		sv, pb := r.serviceCPU(), r.pgbenchCPU()
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", r.scenario,
			sv.service, sv.postgres, sv.client, sv.other, sv.total(), pb.postgres, pb.client, pb.other, pb.total())
	}
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

// machine describes where the run happened: the ratios depend on it.
func machine(ctx context.Context, dbURL string) string {
	pg := "PostgreSQL ?"
	if conn, err := pgx.Connect(ctx, dbURL); err == nil {
		var v string
		if conn.QueryRow(ctx, "SHOW server_version").Scan(&v) == nil {
			pg = "PostgreSQL " + v
		}
		conn.Close(ctx)
	}
	return fmt.Sprintf("Machine: %s, %d cores, %s/%s, %s, %s; load average before the run: %s", cpuModel(), runtime.NumCPU(),
		runtime.GOOS, runtime.GOARCH, runtime.Version(), pg, loadAverage())
}

// loadAverage is the 1-minute load average: other work on the machine
// takes CPU from the measurement.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
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
