package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"tasks-api/internal/testbed"
)

// -metrics (issue 14): what serving Prometheus metrics costs the list. Two
// instances of the same binary on one database, identical but for
// METRICS_ADDR, take the list load in turns (A B B A A B ...: each comes
// first as often as second, so a drift of the machine weighs on both), and
// while the one with metrics is loaded a scraper reads /metrics every
// second, as a busy Prometheus would. The overhead is the drop of the
// median req/s, and the difference of the service's CPU per request.

// metricsRounds is how many times each instance is measured.
const metricsRounds = 3

// metricsTurn is one measured turn of one instance.
type metricsTurn struct {
	st      stats
	cpu     *cpuUse
	scrapes scrapeStats
}

// scrapeStats are the scrapes made during a turn.
type scrapeStats struct {
	ok, failed int
	bytes      int
	took       []time.Duration
}

type metricsRun struct {
	host        host
	conns       int
	duration    time.Duration
	plain, with []metricsTurn
}

func runMetrics(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	fmt.Fprintln(progress, "building the service")
	bin, err := testbed.BuildService(ctx, w.dir)
	if err != nil {
		return err
	}
	s := &setup{bin: bin, secret: newSecret(), client: newClient(o.conns)}
	spec := serviceSpec{name: "embedded-db", bin: bin, secret: s.secret, dataDir: filepath.Join(w.dir, "data")}
	fmt.Fprintln(progress, "starting an instance that runs the embedded PostgreSQL (idle during the measurements)")
	if s.db, err = startService(ctx, w, spec); err != nil {
		return err
	}
	defer s.db.stop()
	spec.databaseURL = s.db.databaseURL(nil)
	spec.name = "plain"
	plain, err := startService(ctx, w, spec)
	if err != nil {
		return err
	}
	defer plain.stop()
	port, err := testbed.FreePort()
	if err != nil {
		return err
	}
	metricsAddr := "127.0.0.1:" + strconv.Itoa(port)
	spec.name, spec.env = "metrics", map[string]string{"METRICS_ADDR": metricsAddr}
	withMetrics, err := startService(ctx, w, spec)
	if err != nil {
		return err
	}
	defer withMetrics.stop()
	fmt.Fprintf(progress, "seeding %d users × %d tasks through the API\n", seedUsers, seedTasksPerUser)
	if s.users, err = seed(ctx, s.client, plain.base, s.secret, true); err != nil {
		return err
	}

	run := metricsRun{host: describeHost(ctx, s.db.databaseURL(nil), bin), conns: o.conns, duration: o.duration}
	list := scenarioNamed("list")
	turn := func(svc *service, scrape bool) (metricsTurn, error) {
		var t metricsTurn
		meter, err := newCPUMeter(svc)
		if err != nil {
			return t, err
		}
		l := &load{client: s.client, base: svc.base, users: s.users, conns: o.conns}
		l.run(ctx, list, o.warmup)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if scrape {
			wg.Go(func() { t.scrapes = scrapeEverySecond(ctx, "http://"+metricsAddr+"/metrics", stop) })
		}
		t.cpu, err = meter.during(func() error {
			t.st = l.run(ctx, list, o.duration)
			return ctx.Err()
		})
		close(stop)
		wg.Wait()
		if err == nil && t.st.errors() > 0 {
			err = fmt.Errorf("%s: %d requests failed", svc.name, t.st.errors())
		}
		return t, err
	}
	for i := range metricsRounds {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, metrics := range order {
			svc := plain
			if metrics {
				svc = withMetrics
			}
			t, err := turn(svc, metrics)
			if err != nil {
				return err
			}
			fmt.Fprintf(progress, "round %d, %-7s %6.0f req/s  service CPU %.3f ms per request  scrapes %d\n",
				i+1, svc.name, t.st.rate(), perRequest(t.cpu.service, len(t.st.latencies)), t.scrapes.ok)
			if metrics {
				run.with = append(run.with, t)
			} else {
				run.plain = append(run.plain, t)
			}
		}
	}
	fmt.Fprint(stdout, run.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"metrics", run.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	if run.failedScrapes() > 0 {
		return fmt.Errorf("%w: %d scrapes of /metrics failed under load", errTargetsMissed, run.failedScrapes())
	}
	return nil
}

// scrapeEverySecond reads url once a second until stop is closed.
func scrapeEverySecond(ctx context.Context, url string, stop <-chan struct{}) scrapeStats {
	var s scrapeStats
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return s
		case <-ctx.Done():
			return s
		case <-tick.C:
		}
		start := time.Now()
		res, err := client.Get(url)
		if err != nil {
			s.failed++
			continue
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || !strings.Contains(string(body), "http_server_request_duration_seconds") {
			s.failed++
			continue
		}
		s.ok++
		s.bytes = len(body)
		s.took = append(s.took, time.Since(start))
	}
}

func (r metricsRun) failedScrapes() int {
	n := 0
	for _, t := range r.with {
		n += t.scrapes.failed
	}
	return n
}

// turnsMedian is the median of f over the turns.
func turnsMedian(turns []metricsTurn, f func(metricsTurn) float64) float64 {
	v := make([]float64, len(turns))
	for i, t := range turns {
		v[i] = f(t)
	}
	return median(v)
}

func reqPerSec(t metricsTurn) float64 { return t.st.rate() }

func serviceCPU(t metricsTurn) float64 {
	if t.cpu == nil {
		return 0
	}
	return perRequest(t.cpu.service, len(t.st.latencies))
}

func (r metricsRun) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "The list scenario (%d connections, %s per turn after a warm-up) on two instances of the same binary on "+
		"one database, one without and one with `METRICS_ADDR`, in turns (A B B A A B); while the second is loaded, "+
		"/metrics is scraped every second.\n\n", r.conns, r.duration)
	b.WriteString("| instance | turn | req/s | p50 | p99 | service CPU per request | scrapes (failed) | scrape time, max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, side := range []struct {
		name  string
		turns []metricsTurn
	}{{"without metrics", r.plain}, {"with METRICS_ADDR", r.with}} {
		for i, t := range side.turns {
			scrapes, took := "–", "–"
			if side.name != "without metrics" {
				scrapes = fmt.Sprintf("%d (%d)", t.scrapes.ok, t.scrapes.failed)
				if len(t.scrapes.took) > 0 {
					took = ms(slices.Max(t.scrapes.took))
				}
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %.3f ms | %s | %s |\n", side.name, i+1, t.st.rate(),
				ms(t.st.percentile(50)), ms(t.st.percentile(99)), serviceCPU(t), scrapes, took)
		}
	}
	plainRate, withRate := turnsMedian(r.plain, reqPerSec), turnsMedian(r.with, reqPerSec)
	plainCPU, withCPU := turnsMedian(r.plain, serviceCPU), turnsMedian(r.with, serviceCPU)
	drop := 1 - withRate/plainRate
	fmt.Fprintf(&b, "\nMedians: %.0f req/s without metrics, %.0f with: %+.1f %% throughput (goal: a drop of at most 3 %%: %s). "+
		"Service CPU per request %.3f ms without, %.3f ms with (%+.1f %%).", plainRate, withRate, -100*drop,
		met(drop <= 0.03), plainCPU, withCPU, 100*(withCPU/plainCPU-1))
	if len(r.with) > 0 && r.with[0].scrapes.bytes > 0 {
		fmt.Fprintf(&b, " A scrape is %d bytes.", r.with[len(r.with)-1].scrapes.bytes)
	}
	b.WriteString("\n")
	return b.String()
}

func (r metricsRun) section(command string) string {
	return section("What the metrics cost (issue 14)", r.host, command, r.markdown())
}
