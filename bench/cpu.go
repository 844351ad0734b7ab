package main

import "time"

// On a machine shared by the load generator, the service and PostgreSQL,
// throughput follows from the CPU each spends per request. cpuMeter reads
// those times from /proc (cpu_linux.go); elsewhere the table has no CPU part.

// cpuUse is the CPU time spent so far by each part of a measurement.
type cpuUse struct {
	service  time.Duration // the service process
	postgres time.Duration // the postmaster and its children, exited ones included
	bench    time.Duration // this process: the load generator
	machine  time.Duration // every CPU's busy time, whoever spent it
	stolen   time.Duration // the part of machine the hypervisor gave to other guests
	backends int           // the postmaster's live children
}

func (u cpuUse) sub(v cpuUse) cpuUse {
	return cpuUse{service: u.service - v.service, postgres: u.postgres - v.postgres, bench: u.bench - v.bench,
		machine: u.machine - v.machine, stolen: u.stolen - v.stolen, backends: u.backends}
}

// during runs f and returns the CPU time each part spent meanwhile; nil
// without a meter.
func (m *cpuMeter) during(f func() error) (*cpuUse, error) {
	if m == nil {
		return nil, f()
	}
	before, err := m.read()
	if err != nil {
		return nil, err
	}
	if err := f(); err != nil {
		return nil, err
	}
	// A client's backends exit after it has gone, and their time moves into
	// the postmaster's account as it reaps them: read once they have gone,
	// so that none is counted twice or not at all.
	after, err := m.read()
	for deadline := time.Now().Add(2 * time.Second); err == nil && after.backends > before.backends && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		after, err = m.read()
	}
	if err == nil {
		time.Sleep(50 * time.Millisecond)
		after, err = m.read()
	}
	if err != nil {
		return nil, err
	}
	d := after.sub(before)
	return &d, nil
}

// cpuSplit is CPU time per request, in milliseconds.
type cpuSplit struct {
	service, postgres, client float64
	other                     float64 // the rest of the machine's busy time
}

func newCPUSplit(service, postgres, client, machine time.Duration, requests int) cpuSplit {
	return cpuSplit{
		service:  perRequest(service, requests),
		postgres: perRequest(postgres, requests),
		client:   perRequest(client, requests),
		other:    perRequest(machine-service-postgres-client, requests),
	}
}

func (c cpuSplit) total() float64 { return c.service + c.postgres + c.client + c.other }

// percentOfMachine is d as a percentage of the time cores cores had over
// elapsed seconds; 0 when either is unknown.
func percentOfMachine(d time.Duration, elapsed float64, cores int) float64 {
	if elapsed <= 0 || cores <= 0 {
		return 0
	}
	return 100 * d.Seconds() / elapsed / float64(cores)
}

// perRequest is a duration per request in milliseconds.
func perRequest(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(n)
}
