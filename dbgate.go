package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// dbGate fails requests fast while the database is down. Without it, a
// transaction-mode pooler in front of a dead server (Neon's -pooler, PgBouncer)
// makes every request wait out its whole deadline. When a request finds the
// database unavailable, the gate pings it: if the ping fails too, requests are
// answered 503 at once until a ping succeeds again. A single slow query (a
// lock wait, say) does not close the gate, because the ping then succeeds.
type dbGate struct {
	ping     func(context.Context) error
	interval time.Duration // between pings while the database is down
	timeout  time.Duration // a ping that takes longer has failed
	ctx      context.Context
	log      *slog.Logger

	probing atomic.Bool
	down    atomic.Bool
}

func newDBGate(ctx context.Context, ping func(context.Context) error, log *slog.Logger) *dbGate {
	return &dbGate{ping: ping, interval: 250 * time.Millisecond, timeout: time.Second, ctx: ctx, log: log}
}

// suspect starts checking the database, unless a check is already running.
func (g *dbGate) suspect() {
	if g.probing.CompareAndSwap(false, true) {
		go g.probe()
	}
}

func (g *dbGate) probe() {
	defer g.probing.Store(false)
	for {
		ctx, cancel := context.WithTimeout(g.ctx, g.timeout)
		err := g.ping(ctx)
		cancel()
		if err == nil {
			if g.down.CompareAndSwap(true, false) {
				g.log.Info("the database answers again")
			}
			return
		}
		if g.down.CompareAndSwap(false, true) {
			g.log.Warn("the database does not answer; failing requests fast until it does", "error", err)
		}
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(g.interval):
		}
	}
}

// failFastWhenDown answers 503 at once while the gate is closed, and tells the
// gate when a request found the database unavailable.
func failFastWhenDown(g *dbGate) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		if g == nil {
			return next
		}
		return func(w http.ResponseWriter, r *http.Request) error {
			if g.down.Load() {
				return errDatabaseUnavailable(nil)
			}
			err := next(w, r)
			if codeOf(err) == CodeUnavailable {
				g.suspect()
			}
			return err
		}
	}
}
