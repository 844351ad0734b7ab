package main

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// serveDebug exposes pprof and expvar (goroutines, pool statistics) on addr,
// a separate listener that should stay private (e.g. 127.0.0.1:6060). It is
// off unless DEBUG_ADDR is set.
func serveDebug(addr string, pool *pgxpool.Pool, log *slog.Logger) (stop func(), err error) {
	debugPool.Store(pool)
	publishVars.Do(func() {
		vars := expvar.NewMap("tasks_api")
		vars.Set("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
		vars.Set("db_pool", expvar.Func(poolStats))
	})

	mux := http.NewServeMux()

	mux.Handle("GET /debug/vars", expvar.Handler())
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("DEBUG_ADDR: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug listener", "error", err)
		}
	}()
	log.Info("debug endpoints (pprof, expvar) listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// expvar names are process-wide and can be published once; they read the
// pool of the server that is running.
var (
	publishVars sync.Once
	debugPool   atomic.Pointer[pgxpool.Pool]
)

func poolStats() any {
	pool := debugPool.Load()
	if pool == nil {
		return nil
	}
	s := pool.Stat()
	return map[string]any{
		"total_conns": s.TotalConns(), "idle_conns": s.IdleConns(), "acquired_conns": s.AcquiredConns(),
		"max_conns": s.MaxConns(), "acquire_count": s.AcquireCount(), "empty_acquire_count": s.EmptyAcquireCount(),
		"acquire_duration_ms": s.AcquireDuration().Milliseconds(),
	}
}
