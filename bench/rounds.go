package main

import (
	"fmt"
	"slices"
	"strings"
)

// On a shared machine a scenario's throughput drifts by tens of percent
// between runs minutes apart, and a ratio between two scenarios measured
// once each carries that drift. With -rounds N the table measures every
// scenario N times in turns (A B C, A B C, …): each round gives its own
// ratios from runs close in time, and their spread shows the noise.

// pooledRows puts each scenario's rounds together: requests and latencies
// merged, CPU times added, pgbench's tps averaged over its runs of equal
// length. rounds holds one row per scenario per round, in the same order.
func pooledRows(rounds [][]row) []row {
	if len(rounds) == 1 {
		return rounds[0]
	}
	pooled := make([]row, len(rounds[0]))
	for i := range pooled {
		runs := make([]row, len(rounds))
		for k, rows := range rounds {
			runs[k] = rows[i]
		}
		pooled[i] = poolRow(runs)
	}
	return pooled
}

func poolRow(runs []row) row {
	p := row{scenario: runs[0].scenario}
	var sts, baseSts []stats
	var baseCPU *cpuUse
	for k, r := range runs {
		first := k == 0
		sts = append(sts, r.st)
		p.ceiling.tps += r.ceiling.tps / float64(len(runs))
		p.ceiling.transactions += r.ceiling.transactions
		p.ceiling.cpu += r.ceiling.cpu
		p.cpu = addCPU(p.cpu, r.cpu, first)
		p.ceilingCPU = addCPU(p.ceilingCPU, r.ceilingCPU, first)
		if r.base != nil {
			baseSts = append(baseSts, r.base.st)
			baseCPU = addCPU(baseCPU, r.base.cpu, len(baseSts) == 1)
		}
	}
	p.st = merge(sts...)
	if baseSts != nil {
		p.base = &besideRun{st: merge(baseSts...), cpu: baseCPU}
	}
	return p
}

// addCPU is sum+u; nil when any run went unmetered.
func addCPU(sum, u *cpuUse, first bool) *cpuUse {
	if u == nil || (sum == nil && !first) {
		return nil
	}
	if first {
		c := *u
		return &c
	}
	c := *sum
	c.service += u.service
	c.postgres += u.postgres
	c.bench += u.bench
	c.machine += u.machine
	return &c
}

// round is the table of round k alone.
func (t table) round(k int) table {
	r := t
	r.rows, r.rounds = t.rounds[k], nil
	return r
}

// perRound is f of each round's table, when there was more than one round;
// a round where f has no value is left out.
func (t table) perRound(f func(table) (float64, bool)) []float64 {
	if len(t.rounds) < 2 {
		return nil
	}
	var values []float64
	for k := range t.rounds {
		if v, ok := f(t.round(k)); ok {
			values = append(values, v)
		}
	}
	return values
}

// median of values, which is not empty.
func median(values []float64) float64 {
	s := slices.Clone(values)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// roundsNote says a ratio's value in every round and their median, after
// the pooled value: " pooled; per round 0.93, 1.05, 0.98 (median 0.98)";
// "" for one round.
func roundsNote(values []float64, format string) string {
	if len(values) == 0 {
		return ""
	}
	return " pooled; per round " + listRounds(values, format)
}

// listRounds is "0.93, 1.05, 0.98 (median 0.98)"; "" without values.
func listRounds(values []float64, format string) string {
	if len(values) == 0 {
		return ""
	}
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprintf(format, v)
	}
	return fmt.Sprintf("%s (median "+format+")", strings.Join(parts, ", "), median(values))
}
