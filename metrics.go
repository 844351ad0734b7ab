package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics for operators (API.md "Operations"), in the Prometheus text format
// on a listener of their own (METRICS_ADDR). Names follow OpenTelemetry's
// HTTP conventions as Prometheus spells them. No label holds a user id or a
// raw path: route is the ServeMux pattern that served the request, or
// "unmatched", so random paths cannot grow the series.
type metrics struct {
	registry *prometheus.Registry

	requestDuration   *prometheus.HistogramVec
	inFlight          prometheus.Gauge
	authRefusals      *prometheus.CounterVec
	rateLimited       prometheus.Counter
	idempotentReplays prometheus.Counter
	remindersFired    prometheus.Counter
}

// newMetrics registers every metric; pool and events may be nil (tests).
func newMetrics(pool *pgxpool.Pool, events *eventStreams) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "How long requests took, by method, route (the ServeMux pattern, or unmatched) and status code. Event streams are not timed.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "route", "status_code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_server_active_requests", Help: "Requests being served now, event streams included.",
		}),
		authRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_auth_refusals_total",
			Help: "Requests refused authentication, by reason: unauthenticated (no token), invalid_token, keys_unavailable (the JWKS could not be fetched).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasks_rate_limited_total", Help: "Requests refused 429 for the user's request rate or number of event streams.",
		}),
		idempotentReplays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasks_idempotent_replays_total", Help: "Responses replayed for a repeated Idempotency-Key.",
		}),
		remindersFired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tasks_reminders_fired_total", Help: "Reminders this instance fired.",
		}),
	}
	m.registry.MustRegister(m.requestDuration, m.inFlight, m.authRefusals, m.rateLimited, m.idempotentReplays,
		m.remindersFired, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, reason := range []Code{CodeUnauthenticated, CodeInvalidToken, CodeKeysUnavailable} {
		m.authRefusals.WithLabelValues(reason.String()) // present at 0, so a rate can be taken from the start
	}
	if pool != nil {
		m.registry.MustRegister(poolCollector(pool))
	}
	if events != nil {
		m.registry.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tasks_event_streams_open", Help: "Event streams open on this instance."},
				func() float64 { return float64(events.open.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tasks_events_sent_total", Help: "Events sent on event streams."},
				func() float64 { return float64(events.sent.Load()) }))
	}
	return m
}

// poolCollector reports the database pool from pgxpool.Stat at each scrape.
func poolCollector(pool *pgxpool.Pool) prometheus.Collector {
	gauge := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	var (
		acquired = gauge("tasks_db_pool_acquired_connections", "Connections in use.")
		idle     = gauge("tasks_db_pool_idle_connections", "Connections idle in the pool.")
		total    = gauge("tasks_db_pool_connections", "Connections open, in use, idle or being made.")
		maxConns = gauge("tasks_db_pool_max_connections", "The pool's limit.")
		acquires = gauge("tasks_db_pool_acquires_total", "Connections handed out, ever.")
		waited   = gauge("tasks_db_pool_empty_acquires_total", "Acquires that had to wait for a connection.")
		waitSecs = gauge("tasks_db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection.")
	)
	return prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		s := pool.Stat()
		for _, v := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{d: acquired, t: prometheus.GaugeValue, v: float64(s.AcquiredConns())},
			{d: idle, t: prometheus.GaugeValue, v: float64(s.IdleConns())},
			{d: total, t: prometheus.GaugeValue, v: float64(s.TotalConns())},
			{d: maxConns, t: prometheus.GaugeValue, v: float64(s.MaxConns())},
			{d: acquires, t: prometheus.CounterValue, v: float64(s.AcquireCount())},
			{d: waited, t: prometheus.CounterValue, v: float64(s.EmptyAcquireCount())},
			{d: waitSecs, t: prometheus.CounterValue, v: s.EmptyAcquireWaitTime().Seconds()},
		} {
			ch <- prometheus.MustNewConstMetric(v.d, v.t, v.v)
		}
	})
}

// eventsRoute is not timed: a stream lasts as long as the client stays.
const eventsRoute = "GET /api/{user_id}/events"

// observe records one finished request (see logRequests).
func (m *metrics) observe(r *http.Request, ri *requestInfo, status int, took time.Duration, replayed bool) {
	route := ri.pattern
	if route == "" {
		route = "unmatched"
	}
	if route != eventsRoute {
		m.requestDuration.WithLabelValues(methodLabel(r.Method), route, strconv.Itoa(status)).Observe(took.Seconds())
	}
	if ri.err != nil {
		switch ri.err.Code {
		case CodeUnauthenticated, CodeInvalidToken, CodeKeysUnavailable:
			m.authRefusals.WithLabelValues(ri.err.Code.String()).Inc()
		case CodeRateLimited:
			m.rateLimited.Inc()
		}
	}
	if replayed {
		m.idempotentReplays.Inc()
	}
}

// methodLabel keeps the method label to the methods HTTP defines.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "other"
}

// serveMetrics serves /metrics on addr until stop is called.
func serveMetrics(addr string, m *metrics, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "error", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
