package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tasks-api/internal/testbed"
)

// -fanout N (issue 11): N open streams of N users on instance A; each user
// writes once through A, then once through instance B (another process on
// the same database): the time from each write's 2xx to its event on the
// user's stream.

var (
	fanoutSameTarget  = 100 * time.Millisecond
	fanoutOtherTarget = time.Second
)

const fanoutWriters = 8

// fanoutRun is one round of writes.
type fanoutRun struct {
	via       string // "the same instance" or "another instance"
	target    time.Duration
	delays    []time.Duration // sorted
	early     int             // events that came before the write's 2xx had been read
	missing   int             // events that never came (within 30 s)
	writeRate float64
}

func (r fanoutRun) percentile(p float64) time.Duration {
	return stats{latencies: r.delays}.percentile(p)
}

func runFanout(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	n := o.fanout.n
	if limit, err := raiseOpenFiles(n + 1024); err != nil || limit < n+256 {
		return fmt.Errorf("the limit on open files (%d) is too low for %d streams: %v", limit, n, err)
	}
	fmt.Fprintln(progress, "building the service")
	bin, err := testbed.BuildService(ctx, w.dir)
	if err != nil {
		return err
	}
	secret := newSecret()
	dataDir := filepath.Join(w.dir, "data")
	fmt.Fprintln(progress, "starting instance A on a fresh embedded PostgreSQL, and instance B on A's database")
	a, err := startService(ctx, w, serviceSpec{name: "instance-a", bin: bin, secret: secret, dataDir: dataDir})
	if err != nil {
		return err
	}
	defer a.stop()
	b, err := startService(ctx, w, serviceSpec{name: "instance-b", bin: bin, secret: secret, dataDir: dataDir,
		databaseURL: a.databaseURL(nil)})
	if err != nil {
		return err
	}
	defer b.stop()
	h := describeHost(ctx, a.databaseURL(nil), bin)

	users, err := streamUsers(secret, "fan-", n)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	arrived := map[int64]time.Time{}
	fmt.Fprintf(progress, "opening %d streams on A\n", n)
	streams, err := openEventStreams(ctx, streamClient(), a.base, users, 32, func(c changeArrival) {
		mu.Lock()
		arrived[c.task] = c.at
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer closeEventStreams(streams)

	client := newClient(fanoutWriters)
	var runs []fanoutRun
	for _, via := range []struct {
		name   string
		base   string
		target time.Duration
	}{{"the same instance", a.base, fanoutSameTarget}, {"another instance", b.base, fanoutOtherTarget}} {
		fmt.Fprintf(progress, "each user writes once through %s\n", via.name)
		acked, rate, err := writeOncePerUser(ctx, client, via.base, users)
		if err != nil {
			return err
		}
		r := fanoutRun{via: via.name, target: via.target, writeRate: rate}
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			missing := 0
			for id := range acked {
				if _, ok := arrived[id]; !ok {
					missing++
				}
			}
			mu.Unlock()
			if missing == 0 || time.Now().After(deadline) {
				r.missing = missing
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		for id, at := range acked {
			if got, ok := arrived[id]; ok {
				d := got.Sub(at)
				if d < 0 {
					r.early++
					d = 0
				}
				r.delays = append(r.delays, d)
			}
		}
		mu.Unlock()
		slices.Sort(r.delays)
		fmt.Fprintf(progress, "through %s: p50 %s, p99 %s, max %s; %d missing\n", via.name, ms(r.percentile(50)),
			ms(r.percentile(99)), ms(r.percentile(100)), r.missing)
		runs = append(runs, r)
	}
	for _, s := range streams {
		if s.ended.Load() {
			return fmt.Errorf("a stream ended by itself: %v", s.err)
		}
	}
	report := fanoutReport{host: h, n: n, runs: runs}
	fmt.Fprint(stdout, report.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"fanout", report.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	for _, r := range runs {
		if r.missing > 0 || r.percentile(99) > r.target {
			return fmt.Errorf("%w: through %s, p99 %s (goal %s), %d events missing", errTargetsMissed, r.via, ms(r.percentile(99)), r.target, r.missing)
		}
	}
	return nil
}

// writeOncePerUser creates one task for each user through base, from
// fanoutWriters writers, and returns when each create's 2xx arrived, by
// task id, and the writes per second.
func writeOncePerUser(ctx context.Context, c *http.Client, base string, users []user) (map[int64]time.Time, float64, error) {
	acked := make(map[int64]time.Time, len(users))
	var mu sync.Mutex
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range fanoutWriters {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(users) || ctx.Err() != nil {
					return
				}
				u := &users[i]
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/"+u.id+"/tasks",
					strings.NewReader(`{"title":"fan out"}`))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				req.Header.Set("Authorization", u.auth)
				req.Header.Set("Content-Type", "application/json")
				res, err := c.Do(req)
				at := time.Now() // the 2xx's status line and headers have arrived
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				var task struct{ ID int64 }
				if err != nil || res.StatusCode != http.StatusCreated || json.Unmarshal(body, &task) != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("create for %s: status %d: %s (%v)", u.id, res.StatusCode, body, err))
					return
				}
				mu.Lock()
				acked[task.ID] = at
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return nil, 0, err
	}
	return acked, float64(len(users)) / time.Since(start).Seconds(), ctx.Err()
}

type fanoutReport struct {
	host host
	n    int
	runs []fanoutRun
}

func (f fanoutReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d streams of %d users, all on instance A; each user creates one task through A, then one through B "+
		"(another instance on the same database, which tells A by NOTIFY), from %d writers. Each delay is from the moment "+
		"the write's 201 arrived to the moment its event arrived on the user's stream (an event that came first counts as 0).\n\n",
		f.n, f.n, fanoutWriters)
	b.WriteString("| written through | writes/s | p50 | p99 | max | events before the 201 | missing | goal (p99) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range f.runs {
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %d | %d | ≤ %s: %s |\n", r.via, r.writeRate, ms(r.percentile(50)),
			ms(r.percentile(99)), ms(r.percentile(100)), r.early, r.missing, r.target, met(r.missing == 0 && r.percentile(99) <= r.target))
	}
	return b.String()
}

func (f fanoutReport) section(command string) string {
	return section("Fan-out: from a write to its event (issue 11)", f.host, command, f.markdown())
}
