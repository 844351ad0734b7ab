package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// runTable measures every scenario against the service and then pgbench,
// in the same run on the same database, and prints one table.
func runTable(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
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
	pg, err := newPgbench(w, s.db.socketDir(), o.conns)
	if err != nil {
		return err
	}
	t := table{
		host: describeHost(ctx, s.db.databaseURL(nil), s.bin),
		settings: fmt.Sprintf("Load: %d connections with keep-alive, a random user of %d per request, %s per scenario after %s of warm-up; %s. "+
			"Service: RATE_LIMIT=0 (the default 50 requests/s per user would refuse this load), %s, request log at info level to a file. "+
			"Ceiling: pgbench -c %d -j %d -M prepared, the same SQL on the same database.",
			o.conns, len(s.users), o.duration, o.warmup, clientDescription(o), poolDescription(o), o.conns, min(2, o.conns)),
	}
	if o.rounds > 1 {
		t.settings += fmt.Sprintf(" Rounds: %d, in turns (every scenario once per round, in the order of the table); "+
			"the table pools the rounds, and each ratio between two scenarios is also taken within each round.", o.rounds)
	}
	drv, err := newDriver(o, w, s.load(o.conns))
	if err != nil {
		return err
	}
	var meter *cpuMeter
	if m, err := newCPUMeter(s.svc); err != nil {
		fmt.Fprintf(progress, "no CPU accounting: %v\n", err)
	} else {
		meter = &m
	}
	var base *setup
	var baseDrv driver
	var baseMeter *cpuMeter
	if o.baseline != "" {
		var rev string
		if base, rev, err = startBaseline(ctx, o, w, s.secret, progress); err != nil {
			return err
		}
		defer base.stop()
		if baseDrv, err = newDriver(o, w, base.load(o.conns)); err != nil {
			return err
		}
		t.baseline = o.baseline + " (" + rev[:12] + ")"
		if meter != nil {
			m, err := newCPUMeter(base.svc)
			if err != nil {
				return err
			}
			baseMeter = &m
		}
	}
	for round := range o.rounds {
		if o.rounds > 1 {
			fmt.Fprintf(progress, "round %d of %d\n", round+1, o.rounds)
		}
		var rows []row
		for _, name := range o.scenarios {
			sc := scenarioNamed(name)
			r, err := measureScenario(ctx, o, s, drv, pg, sc, meter, progress)
			if err != nil {
				return err
			}
			if base != nil && sc.write {
				if r.base, err = measureBaseline(ctx, o, base, baseDrv, sc.atBaseline(), baseMeter, progress); err != nil {
					return err
				}
			}
			rows = append(rows, r)
		}
		t.rounds = append(t.rounds, rows)
	}
	t.rows = pooledRows(t.rounds)
	if t.peakRSS, err = memoryKB(s.svc.pid(), "VmHWM"); err != nil {
		return fmt.Errorf("peak RSS: %w", err)
	}
	s.stop()
	if base != nil {
		base.stop()
	}

	t.write(stdout)
	if o.out != "" {
		sections := [][2]string{{"table", t.section(o.command)}}
		if base != nil {
			sections = append(sections, [2]string{"writes", t.writesSection(o.command)})
		}
		if err := writeSections(o.out, sections...); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	failed := 0
	for _, r := range t.rows {
		failed += r.st.errors()
		if r.base != nil {
			failed += r.base.st.errors()
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d requests failed", errTargetsMissed, failed)
	}
	return nil
}

// measureScenario warms up, loads the service, then runs pgbench likewise,
// metering the CPU of each run when meter is not nil.
func measureScenario(ctx context.Context, o options, s *setup, drv driver, pg *pgbench, sc scenario, meter *cpuMeter, progress io.Writer) (row, error) {
	r := row{scenario: sc.name}
	if sc.needs != nil && sc.needs.service != nil {
		if err := sc.needs.service(ctx, s, o, 0); err != nil {
			return r, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	if _, _, err := drv.drive(ctx, sc, o.warmup); err != nil {
		return r, err
	}
	profiled := make(chan error, 1)
	if o.cpuProfile != "" {
		go func() { profiled <- s.svc.cpuProfile(ctx, o.duration, filepath.Join(o.cpuProfile, sc.name+".pprof")) }()
	} else {
		profiled <- nil
	}
	var err error
	var driverCPU time.Duration
	r.cpu, err = meter.during(func() (err error) {
		r.st, driverCPU, err = drv.drive(ctx, sc, o.duration)
		return err
	})
	if err != nil {
		return r, err
	}
	if r.cpu != nil {
		r.cpu.bench += driverCPU
	}
	if err := <-profiled; err != nil {
		return r, err
	}
	if !s.svc.running() {
		return r, fmt.Errorf("the service exited during %s (%v); the end of %s:\n%s", sc.name, s.svc.waitErr, s.svc.logPath, s.svc.logTail(30))
	}
	// pgbench needs no warm-up: the service's run has just warmed the
	// database, and its tps leaves out the time spent connecting.
	var vars map[string]string
	if sc.needs != nil && sc.needs.ceiling != nil {
		if vars, err = sc.needs.ceiling(ctx, s, o); err != nil {
			return r, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	r.ceilingCPU, err = meter.during(func() (err error) {
		r.ceiling, err = pg.run(ctx, sc, o.duration, vars)
		return err
	})
	if err != nil {
		return r, err
	}
	if sc.needs != nil && sc.needs.after != nil {
		if err := sc.needs.after(ctx, s, o, r.ceiling.transactions); err != nil {
			return r, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	fmt.Fprintf(progress, "%-7s service %6.0f req/s  p50 %s  p99 %s  errors %d | pgbench %6.0f tps | ratio %.2f\n",
		sc.name, r.st.rate(), ms(r.st.percentile(50)), ms(r.st.percentile(99)), r.st.errors(), r.ceiling.tps, r.ratio())
	return r, nil
}

// cpuProfile saves a CPU profile of the service over (most of) d, taken
// through DEBUG_ADDR while the load runs.
func (s *service) cpuProfile(ctx context.Context, d time.Duration, path string) error {
	secs := max(1, int(d.Seconds())-1)
	url := "http://" + s.debug + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: status %d", res.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	return f.Close()
}

// measureBaseline runs a write scenario against the -baseline service, as
// measureScenario runs it against the measured one.
func measureBaseline(ctx context.Context, o options, b *setup, drv driver, sc scenario, meter *cpuMeter, progress io.Writer) (*besideRun, error) {
	if sc.needs != nil && sc.needs.service != nil {
		if err := sc.needs.service(ctx, b, o, 0); err != nil {
			return nil, fmt.Errorf("%s at the baseline: %w", sc.name, err)
		}
	}
	r, err := driveMetered(ctx, o, b.svc, "the baseline", drv, sc, meter)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "%-7s baseline %6.0f req/s  p50 %s  p99 %s  errors %d\n",
		sc.name, r.st.rate(), ms(r.st.percentile(50)), ms(r.st.percentile(99)), r.st.errors())
	return r, nil
}

// driveMetered warms svc up with sc, then loads it for o.duration, metering
// the CPU (the driver's own added to the bench's), and checks that svc (what:
// its name in the error) still runs.
func driveMetered(ctx context.Context, o options, svc *service, what string, drv driver, sc scenario, meter *cpuMeter) (*besideRun, error) {
	if _, _, err := drv.drive(ctx, sc, o.warmup); err != nil {
		return nil, err
	}
	r := &besideRun{}
	var err error
	var driverCPU time.Duration
	r.cpu, err = meter.during(func() (err error) {
		r.st, driverCPU, err = drv.drive(ctx, sc, o.duration)
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.cpu != nil {
		r.cpu.bench += driverCPU
	}
	if !svc.running() {
		return nil, fmt.Errorf("%s exited during %s (%v); the end of %s:\n%s", what, sc.name, svc.waitErr, svc.logPath, svc.logTail(30))
	}
	return r, nil
}
