package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tasks-api/internal/testbed"
)

// -streams N (issue 11): N idle event streams on one instance, of N
// different users: the memory each costs, the CPU the instance spends at
// rest with them open, and how many queries an idle instance sends to
// PostgreSQL, with and without them, listening (LISTEN on a direct
// connection) and polling (behind a transaction-mode pooler without a
// direct URL).

const (
	rssPerStreamTarget = 40 // KiB
)

// notifierMode is how the measured instance runs: how it learns of other
// instances' changes, and its memory limit.
type notifierMode struct {
	name string
	// pooled: the instance is made to believe it is behind a pooler
	// without a direct URL, so it polls (see pollingURL).
	pooled bool
	// sized: GOMEMLIMIT is set for the streams (streamsMemoryLimit), not
	// left to the service (48 MiB, raised with what stays live: gctune.go).
	sized bool
}

var notifierModes = []notifierMode{
	{name: "LISTEN"},
	{name: "polling", pooled: true},
	{name: "LISTEN, GOMEMLIMIT sized", sized: true},
}

// streamsMemoryLimit is the GOMEMLIMIT docs/scale-out.md recommends for n
// streams: the default 48 MiB plus 64 KiB per stream. Below what the live
// heap needs, the garbage collector runs without pause (see the section).
func streamsMemoryLimit(n int) string {
	return fmt.Sprintf("%dMiB", 48+(64*n+1023)/1024)
}

// pollingURL is dbURL with a host name that says "-pooler", as Neon's
// pooled host does: the service then takes it for a transaction-mode
// pooler and, without DATABASE_URL_UNPOOLED, does not LISTEN but polls.
// The host= parameter still connects it straight to the cluster's socket.
func pollingURL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	if q.Get("host") == "" {
		q.Set("host", u.Hostname())
	}
	u.Host = "bench-pooler"
	u.RawQuery = q.Encode()
	return u.String()
}

// idleCost is what an instance and PostgreSQL did over a window in which
// no client sent a request.
type idleCost struct {
	window       time.Duration
	transactions int64         // committed in the service's database, the bench's own left out
	service      time.Duration // CPU
	postgres     time.Duration // CPU
}

func (c idleCost) perMinute() float64 { return float64(c.transactions) / c.window.Minutes() }

// serviceShare is the service's CPU as a share of one core.
func (c idleCost) serviceShare() float64 { return c.service.Seconds() / c.window.Seconds() }

func (c idleCost) postgresShare() float64 { return c.postgres.Seconds() / c.window.Seconds() }

// measureIdle watches for d: the transactions committed in the database
// (pg_stat_database.xact_commit; PostgreSQL 15 flushes a backend's counts
// within seconds, which a window of a minute absorbs) and the CPU of the
// service and of PostgreSQL.
func measureIdle(ctx context.Context, dbURL string, meter *cpuMeter, d time.Duration) (idleCost, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return idleCost{}, err
	}
	defer conn.Close(context.Background())
	commits := func() (int64, error) {
		var n int64
		err := conn.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
		return n, err
	}
	c := idleCost{window: d}
	before, err := commits()
	if err != nil {
		return c, err
	}
	use, err := meter.during(func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	})
	if err != nil {
		return c, err
	}
	after, err := commits()
	if err != nil {
		return c, err
	}
	c.transactions = after - before - 1 // the first read's own transaction
	if use != nil {
		c.service, c.postgres = use.service, use.postgres
	}
	return c, nil
}

// streamsRun is one notifier mode's measurements.
type streamsRun struct {
	mode        notifierMode
	openFiles   int // the service's limit
	opened      time.Duration
	rssBefore   int64 // kB
	rssAfter    int64 // kB
	liveBefore  int64 // bytes: the Go heap and stacks in use after a collection
	liveAfter   int64
	idleWithout idleCost
	idleWith    idleCost
	heartbeats  int64 // received by all streams while idle
	endedEarly  int   // streams that ended by themselves
	streams     int
}

func (r streamsRun) rssPerStream() float64 {
	return float64(r.rssAfter-r.rssBefore) / float64(r.streams)
}

// livePerStream is what each stream holds after a garbage collection: heap
// and goroutine stacks, in KiB.
func (r streamsRun) livePerStream() float64 {
	return float64(r.liveAfter-r.liveBefore) / 1024 / float64(r.streams)
}

// liveMemory is the service's Go heap and stacks in use right after a
// garbage collection.
func liveMemory(ctx context.Context, svc *service) (int64, error) {
	if err := svc.collectGarbage(ctx); err != nil {
		return 0, err
	}
	v, err := svc.debugVars(ctx)
	if err != nil {
		return 0, err
	}
	return v.Memstats.HeapInuse + v.Memstats.StackInuse, nil
}

// settle is how long the bench waits after the instance's last work before
// an idle window: PostgreSQL 15 reports an idle backend's transactions up to
// 10 s late.
const settle = 12 * time.Second

func runStreams(ctx context.Context, o options, w *workspace, stdout, progress io.Writer) error {
	n := o.streams.n
	limit, err := raiseOpenFiles(n + 1024)
	if err != nil {
		return fmt.Errorf("raise the limit on open files: %w", err)
	}
	if limit < n+256 {
		return fmt.Errorf("the limit on open files is %d, too few for %d streams (raise the hard limit: ulimit -Hn)", limit, n)
	}
	fmt.Fprintln(progress, "building the service")
	bin, err := testbed.BuildService(ctx, w.dir)
	if err != nil {
		return err
	}
	secret := newSecret()
	dataDir := filepath.Join(w.dir, "data")
	fmt.Fprintln(progress, "starting an instance on a fresh embedded PostgreSQL, to hold the database")
	db, err := startService(ctx, w, serviceSpec{name: "embedded-db", bin: bin, secret: secret, dataDir: dataDir})
	if err != nil {
		return err
	}
	defer db.stop()
	users, err := streamUsers(secret, "stream-", n)
	if err != nil {
		return err
	}
	h := describeHost(ctx, db.databaseURL(nil), bin)
	var runs []streamsRun
	for _, mode := range notifierModes {
		r, err := measureStreams(ctx, o, w, bin, secret, db, mode, users, progress)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	db.stop()
	report := streamsReport{host: h, n: n, idle: o.idle, runs: runs}
	fmt.Fprint(stdout, report.markdown())
	if o.out != "" {
		if err := writeSections(o.out, [2]string{"streams", report.section(o.command)}); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	for _, r := range runs {
		if r.endedEarly > 0 {
			return fmt.Errorf("%w: %d streams ended by themselves (%s)", errTargetsMissed, r.endedEarly, r.mode.name)
		}
	}
	return nil
}

// measureStreams starts an instance on db's database in the given mode, and
// measures it idle, then with a stream open for every user.
func measureStreams(ctx context.Context, o options, w *workspace, bin string, secret []byte, db *service, mode notifierMode,
	users []user, progress io.Writer) (streamsRun, error) {
	r := streamsRun{mode: mode, streams: len(users)}
	dbURL := db.databaseURL(nil)
	svcURL := dbURL
	if mode.pooled {
		svcURL = pollingURL(dbURL)
	}
	name := "service-" + strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(mode.name))
	spec := serviceSpec{name: name, bin: bin, secret: secret, dataDir: db.dataDir, databaseURL: svcURL, debug: true}
	if mode.sized {
		spec.env = map[string]string{"GOMEMLIMIT": streamsMemoryLimit(len(users))}
	}
	fmt.Fprintf(progress, "starting the measured instance (%s)\n", mode.name)
	svc, err := startService(ctx, w, spec)
	if err != nil {
		return r, err
	}
	defer svc.stop()
	if r.openFiles, err = openFilesLimit(svc.pid()); err != nil {
		return r, err
	}
	if r.openFiles < len(users)+256 {
		return r, fmt.Errorf("the service may open only %d files, too few for %d streams", r.openFiles, len(users))
	}
	meter, err := newCPUMeter(svc)
	if err != nil {
		return r, err
	}
	time.Sleep(settle)
	fmt.Fprintf(progress, "idle without streams for %s\n", o.idle)
	if r.idleWithout, err = measureIdle(ctx, dbURL, &meter, o.idle); err != nil {
		return r, err
	}
	if r.rssBefore, err = memoryKB(svc.pid(), "VmRSS"); err != nil {
		return r, err
	}
	if r.liveBefore, err = liveMemory(ctx, svc); err != nil {
		return r, err
	}
	fmt.Fprintf(progress, "opening %d streams\n", len(users))
	start := time.Now()
	streams, err := openEventStreams(ctx, streamClient(), svc.base, users, 64, nil)
	if err != nil {
		return r, err
	}
	defer closeEventStreams(streams)
	r.opened = time.Since(start)
	fmt.Fprintf(progress, "opened in %s; settling\n", r.opened.Round(100*time.Millisecond))
	time.Sleep(settle)
	if r.rssAfter, err = memoryKB(svc.pid(), "VmRSS"); err != nil {
		return r, err
	}
	if r.liveAfter, err = liveMemory(ctx, svc); err != nil {
		return r, err
	}
	var beats int64
	for _, s := range streams {
		beats += s.heartbeats.Load()
	}
	fmt.Fprintf(progress, "idle with %d streams for %s\n", len(users), o.idle)
	if r.idleWith, err = measureIdle(ctx, dbURL, &meter, o.idle); err != nil {
		return r, err
	}
	for _, s := range streams {
		r.heartbeats += s.heartbeats.Load()
		if s.ended.Load() {
			r.endedEarly++
		}
	}
	r.heartbeats -= beats
	if !svc.running() {
		return r, fmt.Errorf("the service exited (%v); the end of %s:\n%s", svc.waitErr, svc.logPath, svc.logTail(30))
	}
	fmt.Fprintf(progress, "%s: RSS %s → %s (%.1f KiB per stream; %.1f KiB of Go heap and stacks in use after a collection); at rest the service used %.2f%% of a core, PostgreSQL %.2f%%; "+
		"%.0f transactions/min without streams, %.0f with\n", mode.name, mb(r.rssBefore), mb(r.rssAfter), r.rssPerStream(), r.livePerStream(),
		100*r.idleWith.serviceShare(), 100*r.idleWith.postgresShare(), r.idleWithout.perMinute(), r.idleWith.perMinute())
	return r, nil
}

type streamsReport struct {
	host host
	n    int
	idle time.Duration
	runs []streamsRun
}

func (s streamsReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d idle streams of %d users on one instance (RSS: VmRSS with them open, %s after the last opened, minus "+
		"VmRSS before; live: the Go heap and stacks in use right after a garbage collection, with minus without; at rest: %s "+
		"with no request, the streams sending their heartbeats (SSE_HEARTBEAT, default 15 s)). "+
		"Queries: transactions committed in the database (pg_stat_database.xact_commit) per minute; an idle instance's "+
		"statements each run in a transaction of their own. The service runs with its defaults (GOGC=400, and a soft memory limit of 48 MiB that it raises with what stays live, gctune.go), "+
		"except in the last row, GOMEMLIMIT=%s; one instance besides it holds the embedded database and stays idle.\n\n",
		s.n, s.n, settle, s.idle, streamsMemoryLimit(s.n))
	b.WriteString("| notifier | max open files | opened in | RSS before | RSS with the streams | per stream | goal | live per stream | " +
		"service CPU at rest | PostgreSQL CPU at rest | queries/min, no stream | queries/min, with the streams |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, r := range s.runs {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %.1f KiB | ≤ %d KiB: %s | %.1f KiB | %.2f %% of a core | %.2f %% | %.1f | %.1f |\n",
			r.mode.name, r.openFiles, r.opened.Round(100*time.Millisecond), mb(r.rssBefore), mb(r.rssAfter), r.rssPerStream(),
			rssPerStreamTarget, met(r.rssPerStream() <= rssPerStreamTarget), r.livePerStream(), 100*r.idleWith.serviceShare(),
			100*r.idleWith.postgresShare(), r.idleWithout.perMinute(), r.idleWith.perMinute())
	}
	b.WriteString("\nWithout streams, the instance's CPU at rest was ")
	for i, r := range s.runs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.2f %% of a core (%s)", 100*r.idleWithout.serviceShare(), r.mode.name)
	}
	b.WriteString(".\n")
	return b.String()
}

func (s streamsReport) section(command string) string {
	return section("Idle event streams (issue 11)", s.host, command, s.markdown())
}
