package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// -openloop (issue 14): latency at normal load. The table's closed loop (-conns
// connections, each sending its next request when the last is answered)
// measures throughput, but its latencies hide a stall: while the service
// stalls, the connections wait and send nothing, so the requests real
// clients would have sent meanwhile are never measured (coordinated
// omission). The open loop sends at a constant rate instead: request i at
// its intended time t0 + i/rate, whether the earlier ones have been answered
// or not, each timed from that intended time, as wrk2 does; a stall of the
// service, or of the generator itself, counts against every request it held
// up.

// openLoopShares are the constant rates, as shares of the capacity the
// closed loop measured; the goal is p99 ≤ p99Target at openLoopGoalShare.
var openLoopShares = []float64{0.25, 0.50, 0.75}

const openLoopGoalShare = 0.50

const (
	// lateBy: a request sent more than this after its intended time is
	// late, the generator's own lag; its latency includes the lag all the
	// same.
	lateBy = time.Millisecond
	// openLoopMaxInFlight bounds the requests in flight (the workers), each
	// on a connection of its own. A request that finds it reached waits for
	// one to end, and is counted.
	openLoopMaxInFlight = 1000
	// recorderShards spreads the recording of concurrent requests over
	// locks.
	recorderShards = 16
)

// openLoop sends a scenario's requests at a constant rate from a pool of
// workers, over a client that keeps a connection alive for each request
// that can be in flight (fastClient).
type openLoop struct {
	users       []user
	client      *fastClient
	maxInFlight int
}

func newOpenLoop(base string, users []user, maxInFlight int) (*openLoop, error) {
	c, err := newFastClient(base, maxInFlight)
	if err != nil {
		return nil, err
	}
	return &openLoop{users: users, client: c, maxInFlight: maxInFlight}, nil
}

// openLoopRun is one constant-rate run.
type openLoopRun struct {
	share    float64       // of the capacity the closed loop measured
	target   float64       // requests per second
	st       stats         // each latency from the request's intended start
	achieved float64       // requests sent per second, from the first intended start to the last send
	late     int           // sent more than lateBy after their intended time
	lag      time.Duration // p99 of the time from intended start to send
	capped   int           // found maxInFlight requests in flight and waited for one to end
	cpu      *cpuUse       // nil when not measured
	stalls   *hostStalls   // the host's stalls during the run (stall.go); nil when not measured
	alone    *stats        // PostgreSQL alone at the same rate (pgbench -R); nil when not run
}

// run sends rate requests a second for d: request i at t0 + i/rate. The
// dispatcher hands each to an idle worker, or starts one more, so that no
// request waits for another's answer unless maxInFlight are in flight.
// Workers live as long as the run: a goroutine per request would grow a
// fresh stack in the HTTP client every time, CPU taken from the service on
// a small machine.
func (ol *openLoop) run(ctx context.Context, s scenario, rate float64, d time.Duration) openLoopRun {
	r := openLoopRun{target: rate}
	n := int(rate * d.Seconds())
	rec := &recorder{shards: make([]shard, recorderShards)}
	lags := make([]time.Duration, n) // request i's, written by its worker alone
	type job struct {
		i        int
		intended time.Time
		u        *user
		req      request
	}
	jobs := make(chan job) // unbuffered: a send succeeds when a worker is idle
	work := func(j job) {
		defer rec.wg.Done()
		for ok := true; ok; j, ok = <-jobs {
			lags[j.i] = time.Since(j.intended)
			status, err := ol.client.send(ctx, j.u, j.req)
			rec.shards[j.i%len(rec.shards)].record(time.Since(j.intended), status, j.req, err)
		}
	}
	workers := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	t0 := time.Now()
	rec.since = t0
	last, sent := t0, 0
	pace := time.NewTimer(time.Hour) // one timer for the run, not one per request
	defer pace.Stop()
schedule:
	for i := range n {
		j := job{i: i, intended: t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))}
		if wait := time.Until(j.intended); wait > 0 {
			pace.Reset(wait)
			select {
			case <-ctx.Done():
				break schedule
			case <-pace.C:
			}
		}
		j.u = &ol.users[rng.IntN(len(ol.users))]
		j.req = s.pick(rng).build(rng, j.u)
		select {
		case jobs <- j:
		default:
			if workers < ol.maxInFlight {
				workers++
				rec.wg.Add(1)
				go work(j)
				break
			}
			r.capped++
			select {
			case jobs <- j:
			case <-ctx.Done():
				break schedule
			}
		}
		last, sent = time.Now(), i+1
	}
	close(jobs)
	rec.wait()
	r.st = rec.drain()
	slices.Sort(lags[:sent])
	for _, l := range lags[:sent] {
		if l > lateBy {
			r.late++
		}
	}
	r.lag = stats{latencies: lags[:sent]}.percentile(99)
	if sent > 0 {
		r.achieved = float64(sent) / (last.Sub(t0).Seconds() + 1/rate)
	}
	return r
}

// openLoopScenario is one scenario's capacity and its constant-rate runs.
type openLoopScenario struct {
	name     string
	capacity stats // the closed loop's run
	runs     []openLoopRun
}

func runOpenLoop(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	if o.cpuProfile != "" {
		if err := os.MkdirAll(o.cpuProfile, 0o755); err != nil {
			return err
		}
	}
	s, err := startSetup(ctx, o, w, o.cpuProfile != "", progress)
	if err != nil {
		return err
	}
	defer s.stop()
	rep := openLoopReport{host: describeHost(ctx, s.db.databaseURL(nil), s.bin), o: o, users: len(s.users)}
	var meter *cpuMeter
	if m, err := newCPUMeter(s.svc); err != nil {
		fmt.Fprintf(progress, "no CPU accounting: %v\n", err)
	} else {
		meter = &m
	}
	closed, err := newDriver(o, w, s.load(o.conns))
	if err != nil {
		return err
	}
	open, err := newOpenLoop(s.svc.base, s.users, openLoopMaxInFlight)
	if err != nil {
		return err
	}
	pg, err := newPgbench(w, s.db.socketDir(), aloneConns(o))
	if err != nil {
		return err
	}
	for _, name := range o.scenarios {
		r, err := measureOpenLoop(ctx, o, s, closed, open, pg, scenarioNamed(name), meter, progress)
		if err != nil {
			return err
		}
		rep.scenarios = append(rep.scenarios, r)
	}
	s.stop()

	fmt.Fprintf(stdout, "%s\n\n%s", rep.host, rep.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"openloop", rep.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	if missed := rep.missed(); missed != "" {
		return fmt.Errorf("%w: %s", errTargetsMissed, missed)
	}
	return nil
}

// measureOpenLoop measures the scenario's capacity with the closed loop, as
// the table does, then runs it at each share of that capacity: a warm-up at
// the same rate (which also opens the connections the rate needs), then the
// measured run. At the goal's share pgbench then runs the scenario's SQL
// alone at the same rate (runAlone). What the scenario consumes is prepared
// before each run, for its rate, and put away after it.
func measureOpenLoop(ctx context.Context, o options, s *setup, closed driver, open *openLoop, pg *pgbench, sc scenario, meter *cpuMeter, progress io.Writer) (openLoopScenario, error) {
	r := openLoopScenario{name: sc.name}
	prepare := func(rate float64) error {
		if sc.needs != nil && sc.needs.service != nil {
			return sc.needs.service(ctx, s, o, rate)
		}
		return nil
	}
	putAway := func() error {
		if sc.needs != nil && sc.needs.done != nil {
			return sc.needs.done(ctx, s)
		}
		return nil
	}
	check := func(err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", sc.name, err)
		case ctx.Err() != nil:
			return ctx.Err()
		case !s.svc.running():
			return fmt.Errorf("the service exited during %s (%v); the end of %s:\n%s", sc.name, s.svc.waitErr, s.svc.logPath, s.svc.logTail(30))
		}
		return nil
	}
	if err := check(prepare(0)); err != nil {
		return r, err
	}
	if _, _, err := closed.drive(ctx, sc, o.warmup); err != nil {
		return r, err
	}
	var err error
	if r.capacity, _, err = closed.drive(ctx, sc, o.duration); err != nil {
		return r, err
	}
	if err := check(putAway()); err != nil {
		return r, err
	}
	capacity := r.capacity.rate()
	fmt.Fprintf(progress, "%-8s capacity %6.0f req/s (closed loop, %d connections)  p50 %s  p99 %s  errors %d\n",
		sc.name, capacity, o.conns, ms(r.capacity.percentile(50)), ms(r.capacity.percentile(99)), r.capacity.errors())
	if capacity < 4 {
		return r, fmt.Errorf("%s: a capacity of %.1f req/s leaves no rate to run at (first error: %s)", sc.name, capacity, r.capacity.firstError)
	}
	for _, share := range openLoopShares {
		rate := share * capacity
		if err := check(prepare(rate)); err != nil {
			return r, err
		}
		open.run(ctx, sc, rate, o.warmup)
		var run openLoopRun
		profiled := make(chan error, 1)
		if o.cpuProfile != "" && share == openLoopGoalShare {
			go func() {
				profiled <- s.svc.cpuProfile(ctx, o.duration, filepath.Join(o.cpuProfile, sc.name+"-openloop.pprof"))
			}()
		} else {
			profiled <- nil
		}
		cpu, err := meter.during(func() error {
			probe := startStallProbe()
			run = open.run(ctx, sc, rate, o.duration)
			run.stalls = probe.stop()
			return ctx.Err()
		})
		if err := check(err); err != nil {
			return r, err
		}
		if err := <-profiled; err != nil {
			return r, err
		}
		if err := check(putAway()); err != nil {
			return r, err
		}
		run.share, run.cpu = share, cpu
		fmt.Fprintf(progress, "%-8s %3.0f %%  %6.0f req/s (sent %6.0f)  p50 %s  p99 %s  p99.9 %s  max %s  errors %d  late %d (p99 %s)  waited %d\n",
			sc.name, share*100, rate, run.achieved, ms(run.st.percentile(50)), ms(run.st.percentile(99)), ms(run.st.percentile(99.9)),
			ms(run.st.percentile(100)), run.st.errors(), run.late, ms(run.lag), run.capped)
		if share == openLoopGoalShare {
			alone, err := runAlone(ctx, o, s, pg, sc, rate)
			if err := check(err); err != nil {
				return r, err
			}
			run.alone = &alone
			fmt.Fprintf(progress, "%-8s %3.0f %%  PostgreSQL alone (pgbench -R %.0f -c %d)  p50 %s  p99 %s  p99.9 %s  failed %d\n",
				sc.name, share*100, rate, pg.conns, ms(alone.percentile(50)), ms(alone.percentile(99)), ms(alone.percentile(99.9)), alone.errors())
		}
		r.runs = append(r.runs, run)
	}
	return r, nil
}

// aloneConns is how many connections pgbench opens for PostgreSQL alone:
// as many as the service's pool, which bounds the transactions the service
// runs at once.
func aloneConns(o options) int {
	if o.pool > 0 {
		return o.pool
	}
	return defaultServicePool()
}

// runAlone runs the scenario's statements on PostgreSQL alone at rate, as
// the service's run just did through HTTP: pgbench -R on the service's pool
// size, with the search index's pending list merged beside it every
// searchIndexMergeEvery, as the service merges it while it writes (without,
// an insert that finds the list full merges everyone's keys itself).
func runAlone(ctx context.Context, o options, s *setup, pg *pgbench, sc scenario, rate float64) (stats, error) {
	o.conns = pg.conns // pgbench's clients, whom a pool's numbering and check follow
	var vars map[string]string
	if sc.needs != nil && sc.needs.ceiling != nil {
		var err error
		if vars, err = sc.needs.ceiling(ctx, s, o); err != nil {
			return stats{}, err
		}
	}
	var st stats
	err := mergeSearchIndexWhile(ctx, s.db.databaseURL(nil), func() (err error) {
		st, err = pg.atRate(ctx, sc, rate, o.duration, pg.conns, vars)
		return err
	})
	if err != nil {
		return stats{}, err
	}
	if sc.needs != nil && sc.needs.after != nil {
		if err := sc.needs.after(ctx, s, o, len(st.latencies)); err != nil {
			return stats{}, err
		}
	}
	return st, nil
}

// searchIndexMergeEvery is how often the service merges the search index's
// pending list while it writes (searchIndexCleanEvery in searchclean.go).
const searchIndexMergeEvery = 100 * time.Millisecond

// mergeSearchIndexWhile merges the search index's pending list every
// searchIndexMergeEvery on a connection of its own while fn runs.
func mergeSearchIndexWhile(ctx context.Context, databaseURL string, fn func() error) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	stop, merged := make(chan struct{}), make(chan error, 1)
	go func() {
		tick := time.NewTicker(searchIndexMergeEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				merged <- nil
				return
			case <-tick.C:
			}
			if _, err := conn.Exec(ctx, `SELECT gin_clean_pending_list('task_search_keys_gin')`); err != nil {
				merged <- fmt.Errorf("merge the search index's pending list: %w", err)
				return
			}
		}
	}()
	err = fn()
	close(stop)
	return errors.Join(err, <-merged)
}

// goalRun is the run the goal applies to.
func (r openLoopScenario) goalRun() (openLoopRun, bool) {
	for _, run := range r.runs {
		if run.share == openLoopGoalShare {
			return run, true
		}
	}
	return openLoopRun{}, false
}

type openLoopReport struct {
	host      host
	o         options
	users     int
	scenarios []openLoopScenario
}

// missed names what failed: the goal, or requests; "" when nothing did.
func (rep openLoopReport) missed() string {
	var goal, failed []string
	for _, r := range rep.scenarios {
		if run, ok := r.goalRun(); ok && run.st.percentile(99) > p99Target {
			goal = append(goal, r.name)
		}
		n := r.capacity.errors()
		for _, run := range r.runs {
			n += run.st.errors()
		}
		if n > 0 {
			failed = append(failed, fmt.Sprintf("%s %d", r.name, n))
		}
	}
	var out []string
	if len(goal) > 0 {
		out = append(out, fmt.Sprintf("p99 > %s at %.0f %% of capacity: %s", ms(p99Target), openLoopGoalShare*100, strings.Join(goal, ", ")))
	}
	if len(failed) > 0 {
		out = append(out, "failed requests: "+strings.Join(failed, ", "))
	}
	return strings.Join(out, "; ")
}

// markdown is the method, the results, the CPU per request at the goal's
// load, and the goal.
func (rep openLoopReport) markdown() string {
	var b strings.Builder
	o := rep.o
	fmt.Fprintf(&b, "Each scenario's capacity is measured first as the table measures it: %d keep-alive connections, each "+
		"sending its next request when its last is answered, a random user of %d per request, %s of warm-up, then %s; "+
		"capacity is that run's req/s (%s). Then the scenario runs at a constant 25, 50 and 75 %% of it, each for %s after "+
		"%s at the same rate (not measured; it also opens the connections the rate needs). Service: RATE_LIMIT=0, %s.\n\n",
		o.conns, rep.users, o.warmup, o.duration, clientDescription(o), o.duration, o.warmup, poolDescription(o))
	fmt.Fprintf(&b, "*How the rate is held constant.* One goroutine computes request i's intended start, t0 + i/rate from "+
		"the start of the run (never from the previous send, so delays do not add up), sleeps until then and hands the "+
		"request to an idle worker, or starts one more; it never waits for an answer. When it wakes late it sends every "+
		"request that is due at once, and the schedule stays where it was. Up to %d workers, so requests, may be in "+
		"flight, each on a kept-alive connection of its own (fasthttp's client, up to %d connections: it costs a fraction of "+
		"net/http's CPU per request, which the service would lose); *waited* counts requests that found "+
		"%d in flight and waited for one to end, *late* those that started more than %s after their intended time "+
		"and *lag p99* the 99th percentile of that delay: the generator's own lag (timers here wake up to a millisecond late, "+
		"more when the machine is busy), which the latencies include. *Sent*: requests sent per "+
		"second, from the first intended start to the last send.\n\n",
		openLoopMaxInFlight, openLoopMaxInFlight, openLoopMaxInFlight, lateBy)
	b.WriteString("*How coordinated omission is avoided.* Each latency runs from the request's intended start to the " +
		"end of its answer's body, not from the moment it was sent: a stall of the service, or of the generator, counts " +
		"against every request it held up, as wrk2 corrects it (Gil Tene's coordinated omission). Percentiles are " +
		"nearest-rank over all of a run's requests; with fewer than 1,000 requests, p99.9 is the maximum. delete gets a " +
		"fresh pool before each run, sized for twice its rate over warm-up and run, and what is left of it goes to the " +
		"trash afterwards; list-304 reads the users' current ETags before each run.\n\n")

	b.WriteString("| scenario | capacity req/s | load | rate req/s | sent req/s | requests | p50 | p99 | p99.9 | max | errors | late > 1 ms | lag p99 | waited | CPU busy | stolen | host stall |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.scenarios {
		for i, run := range r.runs {
			name, capacity := "", ""
			if i == 0 {
				name, capacity = r.name, fmt.Sprintf("%.0f", r.capacity.rate())
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f %% | %.0f | %.0f | %d | %s | %s | %s | %s | %d | %d | %s | %d | %s | %s | %s |\n", name, capacity,
				run.share*100, run.target, run.achieved, run.st.requests(), ms(run.st.percentile(50)), ms(run.st.percentile(99)),
				ms(run.st.percentile(99.9)), ms(run.st.percentile(100)), run.st.errors(), run.late, ms(run.lag), run.capped,
				rep.ofMachine(run, func(c *cpuUse) time.Duration { return c.machine }),
				rep.ofMachine(run, func(c *cpuUse) time.Duration { return c.stolen }), run.stalls)
		}
	}
	b.WriteString("\n*CPU busy*: the machine's busy time during the run over all its cores' time (/proc/stat). *Stolen*: the " +
		"part of it the hypervisor ran other guests on this machine's cores (steal in /proc/stat): time the service, " +
		"PostgreSQL and the generator were ready to run and could not; their latencies include it. ")
	fmt.Fprintf(&b, "*Host stall*: the latest a thread at real-time priority (SCHED_FIFO), sleeping %s at a time beside the "+
		"run, woke, and in brackets how many times it woke more than %s late: stalls of the host (the hypervisor, the "+
		"kernel), which every process on the machine waited through, whatever its priority; ? where it could not run at "+
		"that priority (it needs root or CAP_SYS_NICE, and Linux). Its own CPU, about a thousand wakeups a second, is "+
		"counted with the load generator's.", stallProbeSleep, stallOver)
	if rep.anyCapped() {
		fmt.Fprintf(&b, " A run whose requests *waited* asked for more than the machine serves at a constant rate: requests "+
			"queued until %d were in flight, and latencies grew with the queue for the rest of the run.", openLoopMaxInFlight)
	}
	b.WriteString("\n")
	if rep.cpuMeasured() {
		fmt.Fprintf(&b, "\n### CPU per request at %.0f %% of capacity\n\nIn ms, during the run: the service, PostgreSQL, the load "+
			"generator and everything else the machine did (other work on it, the kernel).\n\n", openLoopGoalShare*100)
		b.WriteString("| scenario | service | PostgreSQL | load generator | other | total |\n|---|---:|---:|---:|---:|---:|\n")
		for _, r := range rep.scenarios {
			run, _ := r.goalRun()
			c := newCPUSplit(run.cpu.service, run.cpu.postgres, run.cpu.bench, run.cpu.machine, run.st.requests())
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f |\n", r.name, c.service, c.postgres, c.client, c.other, c.total())
		}
	}
	rep.writeAlone(&b)
	fmt.Fprintf(&b, "\n### Goal of issue 14: p99 ≤ %s at %.0f %% of capacity\n\n", ms(p99Target), openLoopGoalShare*100)
	ok := 0
	for _, r := range rep.scenarios {
		run, ran := r.goalRun()
		if !ran {
			continue
		}
		p99 := run.st.percentile(99)
		if p99 <= p99Target {
			ok++
		}
		alone := ""
		if run.alone != nil {
			alone = fmt.Sprintf(" (PostgreSQL alone at that rate: %s)", ms(run.alone.percentile(99)))
		}
		fmt.Fprintf(&b, "- %s: p99 %s at %.0f req/s%s: %s.\n", r.name, ms(p99), run.target, alone, met(p99 <= p99Target))
	}
	fmt.Fprintf(&b, "\n%d of %d scenarios met the goal.\n", ok, len(rep.scenarios))
	return b.String()
}

// writeAlone is the table of PostgreSQL alone at the goal's rates, beside
// the service's run at the same rate.
func (rep openLoopReport) writeAlone(b *strings.Builder) {
	conns := 0
	for _, r := range rep.scenarios {
		if run, ok := r.goalRun(); ok && run.alone != nil {
			conns = aloneConns(rep.o)
		}
	}
	if conns == 0 {
		return
	}
	fmt.Fprintf(b, "\n### PostgreSQL alone at the same rate\n\nRight after each scenario's run at %.0f %%, pgbench runs the "+
		"scenario's statements (the table's ceiling) straight against the database at the same rate (`pgbench -R`, prepared "+
		"statements) for %s, on %d connections: as many as the service's pool, which bounds the transactions the service "+
		"runs at once. Like the table's ceiling it has no warm-up of its own: the service's run has just warmed the database. "+
		"pgbench times each transaction from its scheduled start, so one that waited for a free connection counts its wait, "+
		"as the service's requests do; but its schedule is random (a Poisson process at the rate), where the open loop's is "+
		"even, so its arrivals bunch more. Beside it a connection merges the search index's pending list every %s, as the "+
		"service does while it writes. Neither run bounds the other: PostgreSQL alone says what tail the database itself "+
		"has at that rate on this machine at that moment.\n\n", openLoopGoalShare*100, rep.o.duration, conns, searchIndexMergeEvery)
	b.WriteString("| scenario | rate req/s | service p50 | service p99 | service p99.9 | PostgreSQL alone: transactions | p50 | p99 | p99.9 | failed |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.scenarios {
		run, ok := r.goalRun()
		if !ok || run.alone == nil {
			continue
		}
		a := run.alone
		fmt.Fprintf(b, "| %s | %.0f | %s | %s | %s | %d | %s | %s | %s | %d |\n", r.name, run.target,
			ms(run.st.percentile(50)), ms(run.st.percentile(99)), ms(run.st.percentile(99.9)),
			a.requests(), ms(a.percentile(50)), ms(a.percentile(99)), ms(a.percentile(99.9)), a.errors())
	}
}

func (rep openLoopReport) anyCapped() bool {
	for _, r := range rep.scenarios {
		for _, run := range r.runs {
			if run.capped > 0 {
				return true
			}
		}
	}
	return false
}

func (rep openLoopReport) cpuMeasured() bool {
	for _, r := range rep.scenarios {
		if run, ok := r.goalRun(); !ok || run.cpu == nil {
			return false
		}
	}
	return len(rep.scenarios) > 0
}

// ofMachine is the share of the machine's CPU time during the run that
// part (of the run's CPU use) took.
func (rep openLoopReport) ofMachine(run openLoopRun, part func(*cpuUse) time.Duration) string {
	if run.cpu == nil || run.st.elapsed <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f %%", percentOfMachine(part(run.cpu), run.st.elapsed.Seconds(), rep.host.cores))
}

func (rep openLoopReport) section(command string) string {
	return section("Latency at normal load: a constant rate (issue 14)", rep.host, command, rep.markdown())
}
