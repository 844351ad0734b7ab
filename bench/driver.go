package main

import (
	"context"
	"fmt"
	"time"
)

// driver sends a scenario's requests for a while, as many connections
// each one request at a time, and returns what it saw and the CPU time it
// spent in processes of its own (wrk's; the Go client runs in this
// process, whose time the CPU meter reads as the load generator's).
type driver interface {
	drive(ctx context.Context, s scenario, d time.Duration) (stats, time.Duration, error)
}

func (l *load) drive(ctx context.Context, s scenario, d time.Duration) (stats, time.Duration, error) {
	st := l.run(ctx, s, d)
	return st, 0, ctx.Err()
}

// wrkDriver sends with wrk what wrk can send, and the rest (delete, whose
// requests are made as they go) with the Go client.
type wrkDriver struct {
	wrk      *wrkLoad
	goClient *load
}

func (w wrkDriver) drive(ctx context.Context, s scenario, d time.Duration) (stats, time.Duration, error) {
	if !w.wrk.supports(s) {
		return w.goClient.drive(ctx, s, d)
	}
	return w.wrk.run(ctx, s, d)
}

// clients are the load generators -client names.
var clients = []string{"go", "wrk"}

// newDriver is -client's load generator for l's service.
func newDriver(o options, w *workspace, l *load) (driver, error) {
	switch o.client {
	case "wrk":
		wl, err := newWrkLoad(w.dir, l)
		if err != nil {
			return nil, fmt.Errorf("-client wrk: %w", err)
		}
		return wrkDriver{wrk: wl, goClient: l}, nil
	default:
		return l, nil
	}
}

// clientDescription says which load generator sent the requests.
func clientDescription(o options) string {
	if o.client == "wrk" {
		return fmt.Sprintf("load generator wrk (-t %d -c %d; the requests built ahead by the Go client's code, see bench/wrk.go; "+
			"delete, whose requests are made as they go, by the Go client)", wrkThreads(o.conns), o.conns)
	}
	return "load generator the Go client (net/http, bench/load.go)"
}
