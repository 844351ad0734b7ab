package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

const soakSampleEvery = 10 * time.Second

// soakSample is the service's state at one moment of the soak, and the
// requests of the interval that ended then.
type soakSample struct {
	at         time.Duration
	rssKB      int64
	goroutines int
	poolInUse  int
	poolTotal  int
	interval   stats
}

// runSoak runs the mixed load for o.soak and checks that the service holds
// up: no 5xx (nor dropped connections), memory that levels off, no
// goroutines piling up.
func runSoak(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	s, err := startSetup(ctx, o, w, true, progress)
	if err != nil {
		return err
	}
	defer s.stop()
	host := machine(ctx, s.db.databaseURL(nil))
	fmt.Fprintf(progress, "soak: mixed load at %d connections for %s, sampling every %s\n", o.conns, o.soak, soakSampleEvery)

	start := time.Now()
	rec := s.load(o.conns).start(ctx, scenarioNamed("mixed"), start.Add(o.soak))
	samples, err := sampleSoak(ctx, s.svc, rec, start, o.soak, progress)
	rec.wait()
	if err != nil {
		return err
	}
	parts := []stats{rec.drain()} // the requests after the last sample
	for _, smp := range samples {
		parts = append(parts, smp.interval)
	}
	total := merge(parts...)
	peak, err := memoryKB(s.svc.pid(), "VmHWM")
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, host)
	return reportSoak(stdout, o, samples, total, peak)
}

// sampleSoak reads RSS and /debug/vars every soakSampleEvery while the load runs.
func sampleSoak(ctx context.Context, svc *service, rec *recorder, start time.Time, d time.Duration, progress io.Writer) ([]soakSample, error) {
	var samples []soakSample
	tick := time.NewTicker(soakSampleEvery)
	defer tick.Stop()
	// Every sample is taken under full load: none in the last interval,
	// whose requests the caller drains when the load has stopped.
	for time.Since(start)+soakSampleEvery < d {
		select {
		case <-ctx.Done():
			return samples, ctx.Err()
		case <-tick.C:
		}
		if !svc.running() {
			return samples, fmt.Errorf("the service exited during the soak (%v); the end of %s:\n%s", svc.waitErr, svc.logPath, svc.logTail(30))
		}
		smp := soakSample{at: time.Since(start).Round(time.Second), interval: rec.drain()}
		rss, err := memoryKB(svc.pid(), "VmRSS")
		if err != nil {
			return samples, err
		}
		vars, err := svc.debugVars(ctx)
		if err != nil {
			return samples, err
		}
		smp.rssKB, smp.goroutines = rss, vars.TasksAPI.Goroutines
		smp.poolInUse, smp.poolTotal = vars.TasksAPI.DBPool.AcquiredConns, vars.TasksAPI.DBPool.TotalConns
		fmt.Fprintf(progress, "%6s  %6.0f req/s  p99 %s  5xx %d  RSS %s  goroutines %d\n", smp.at, smp.interval.rate(),
			ms(smp.interval.percentile(99)), smp.interval.failed.server, mb(smp.rssKB), smp.goroutines)
		samples = append(samples, smp)
	}
	return samples, nil
}

// soakVerdict holds the pass/fail criteria of a soak.
type soakVerdict struct {
	baseline, end soakSample
	fiveXX        int
	transport     int
}

// baselineAt is when the service is taken to have warmed up: after the first
// minute, or a third of a shorter soak.
func baselineAt(d time.Duration) time.Duration { return min(time.Minute, d/3) }

func (v soakVerdict) rssOK() bool { return float64(v.end.rssKB) <= 1.2*float64(v.baseline.rssKB) }

// goroutinesOK allows the jitter of connections coming and going; a leak of
// one goroutine per request would add thousands.
func (v soakVerdict) goroutinesOK() bool {
	return v.end.goroutines <= v.baseline.goroutines+max(10, v.baseline.goroutines/10)
}

func (v soakVerdict) failed() bool {
	return v.fiveXX > 0 || v.transport > 0 || !v.rssOK() || !v.goroutinesOK()
}

func reportSoak(w io.Writer, o options, samples []soakSample, total stats, peakKB int64) error {
	if len(samples) == 0 {
		return fmt.Errorf("the soak (%s) was shorter than one sample (%s)", o.soak, soakSampleEvery)
	}
	v := soakVerdict{end: samples[len(samples)-1], fiveXX: total.failed.server, transport: total.failed.transport}
	v.baseline = samples[0]
	for _, smp := range samples {
		if smp.at >= baselineAt(o.soak) {
			v.baseline = smp
			break
		}
	}

	fmt.Fprintf(w, "Soak: mixed load, %d connections, %s, %s\n\n", o.conns, o.soak, poolDescription(o))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\treq/s\tp50\tp99\t5xx\terrors\tRSS\tgoroutines\tdb conns in use/open\t")
	for _, smp := range samples {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%d\t%s\t%d\t%d/%d\t\n", smp.at, smp.interval.rate(),
			ms(smp.interval.percentile(50)), ms(smp.interval.percentile(99)), smp.interval.failed.server,
			smp.interval.errors(), mb(smp.rssKB), smp.goroutines, smp.poolInUse, smp.poolTotal)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nrequests: %d, p50 %s, p99 %s; peak RSS (VmHWM) %s\n", total.requests(),
		ms(total.percentile(50)), ms(total.percentile(99)), mb(peakKB))
	check := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAILED"
	}
	fmt.Fprintf(w, "5xx: %d (must be 0): %s\n", v.fiveXX, check(v.fiveXX == 0))
	fmt.Fprintf(w, "requests without a response: %d (must be 0): %s\n", v.transport, check(v.transport == 0))
	fmt.Fprintf(w, "other unexpected statuses: %d\n", total.failed.unexpected)
	fmt.Fprintf(w, "RSS at %s %s, at the end %s (must be within +20%%): %s\n",
		v.baseline.at, mb(v.baseline.rssKB), mb(v.end.rssKB), check(v.rssOK()))
	fmt.Fprintf(w, "goroutines at %s %d, at the end %d (must not grow): %s\n",
		v.baseline.at, v.baseline.goroutines, v.end.goroutines, check(v.goroutinesOK()))
	if total.firstError != "" {
		fmt.Fprintf(w, "first error: %s\n", total.firstError)
	}
	if v.failed() {
		return fmt.Errorf("soak: %w", errTargetsMissed)
	}
	return nil
}
