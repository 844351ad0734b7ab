package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reminders fire once each, on whichever instance gets there first, as
// event: reminder on every stream of the user and in GET /reminders. The
// tests move time by calling fireDue with the instant they want (the
// schedulers' own loops run on real time, and the reminders here are hours
// ahead of it), except TestReminderInRealTime.

// startTestScheduler runs a test API's reminder scheduler, on real time
// (tests call fireDue with the instant they want), over a pool of its own:
// its rounds then never show in the API pool's statistics, by which tests
// check that idle streams and long polls hold no connection. It tells the
// API's notifier and metrics what it fires, and hears of changes from the
// notifier, as serve wires it.
func startTestScheduler(t testing.TB, ctx context.Context, dbURL string, api *Store, feed *syncFeed, m *metrics, log *slog.Logger) *reminderScheduler {
	t.Helper()
	pool, err := openPool(ctx, dbURL, servicePoolOptions(), discardLog())
	if err != nil {
		t.Fatalf("open the scheduler's pool: %v", err)
	}
	t.Cleanup(pool.Close)
	store := newStore(pool, storeOptions{StatementTimeout: 10 * time.Second, LockTimeout: 5 * time.Second})
	store.onChange = api.onChange
	s := newReminderScheduler(store, time.Now, log)
	s.onFired = m.countRemindersFired
	s.recheck = listenOrPoll(feed.notifier)
	feed.notifier.OnAnyChange(s.Poke)
	go s.Run(ctx)
	return s
}

// reminderJSON is a fired reminder as GET /reminders and a stream send it.
type reminderJSON struct {
	TaskID   int64  `json:"task_id"`
	Title    string `json:"title"`
	DueDate  string `json:"due_date"`
	RemindAt string `json:"remind_at"`
	FiredAt  string `json:"fired_at"`
}

// twoInstances are two APIs on a database of the test's own, so that firing
// "everything due" fires only the test's reminders.
func twoInstances(t *testing.T) (*testAPI, *testAPI) {
	t.Helper()
	db := newDatabase(t, true)
	a := startAPI(t, func(o *apiOptions) { o.dbURL = db })
	b := startAPI(t, func(o *apiOptions) { o.dbURL = db })
	return a, b
}

// fireAt fires what is due at now on a's scheduler and returns how many fired.
func fireAt(t *testing.T, a *testAPI, now time.Time) int {
	t.Helper()
	n, err := a.reminders.fireDue(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func listReminders(t *testing.T, a *testAPI, tok, query string) []reminderJSON {
	t.Helper()
	var out []reminderJSON
	mustStatus(t, a.do(t, "GET", "/api/me/reminders"+query, nil, bearer(tok)), http.StatusOK).decode(t, &out)
	return out
}

// nextReminder is the stream's next reminder event, decoded.
func (s *sseStream) nextReminder(t *testing.T, timeout time.Duration) (sseEvent, reminderJSON) {
	t.Helper()
	ev, ok := s.next(t, timeout, false)
	if !ok || ev.Event != "reminder" || ev.ID == "" {
		t.Fatalf("want a reminder event, got %+v (open: %v)", ev, ok)
	}
	var r reminderJSON
	if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
		t.Fatalf("reminder data %q: %v", ev.Data, err)
	}
	return ev, r
}

// noEvent checks that the stream sends no event for a while.
func (s *sseStream) noEvent(t *testing.T, wait time.Duration) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return
			}
			if ev.Comment == "" && ev.Retry == "" {
				t.Fatalf("unexpected event %+v", ev)
			}
		case <-deadline:
			return
		}
	}
}

func readyStream(t *testing.T, a *testAPI, tok string, headers ...string) *sseStream {
	t.Helper()
	h := bearerHeader(tok)
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	s := openStream(t, a, "/api/me/events", h)
	if s.Status != http.StatusOK {
		t.Fatalf("stream: %d %s", s.Status, s.body)
	}
	if ev, _ := s.next(t, 5*time.Second, false); ev.Event != "ready" {
		t.Fatalf("want ready, got %+v", ev)
	}
	return s
}

func dueIn(d time.Duration) (time.Time, string) {
	due := time.Now().Add(d).UTC().Truncate(time.Second)
	return due, due.Format(time.RFC3339)
}

// Two instances fire at the same instant: each reminder fires once, on one
// of them, and reaches every stream of the user, on both instances, once.
func TestRemindersFireOnceAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	_, tok := a.newUser(t)
	_, otherTok := a.newUser(t)
	onA, onB := readyStream(t, a, tok), readyStream(t, b, tok)
	other := readyStream(t, b, otherTok)

	due, dueText := dueIn(2 * time.Hour)
	var ids []int64
	for i := range 5 {
		ids = append(ids, a.createTask(t, tok, fmt.Sprintf(`{"title":"t%d","due_date":"%s","reminders":["PT1H","PT30M","P1D"]}`, i, dueText)).ID)
	}
	for range ids { // the creates
		onA.nextChange(t)
		onB.nextChange(t)
	}
	// P1D before is already past: never armed. PT1H is due at +1h.
	at := due.Add(-time.Hour)
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i, api := range []*testAPI{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i] = fireAt(t, api, at)
		}()
	}
	wg.Wait()
	if counts[0]+counts[1] != 5 {
		t.Fatalf("fired %v, want 5 in all", counts)
	}
	for _, s := range []*sseStream{onA, onB} {
		seen := map[int64]bool{}
		for range ids {
			_, r := s.nextReminder(t, 5*time.Second)
			if seen[r.TaskID] || r.RemindAt != at.Format(timeLayout) || r.DueDate != due.Format(timeLayout) || !strings.HasPrefix(r.Title, "t") {
				t.Fatalf("reminder %+v (seen %v)", r, seen)
			}
			seen[r.TaskID] = true
		}
	}
	if n := fireAt(t, a, at) + fireAt(t, b, at.Add(time.Second)); n != 0 {
		t.Fatalf("fired %d more at the same moment", n)
	}
	onA.noEvent(t, 300*time.Millisecond)
	other.noEvent(t, 10*time.Millisecond) // another user's stream hears nothing

	// The second reminder of each task, half an hour later.
	if n := fireAt(t, b, due.Add(-30*time.Minute)); n != 5 {
		t.Fatalf("fired %d, want 5", n)
	}
	if got := listReminders(t, a, tok, ""); len(got) != 10 || got[0].FiredAt != at.Format(timeLayout) {
		t.Fatalf("GET /reminders: %d %+v", len(got), got)
	}
	if got := listReminders(t, b, tok, "?since="+url.QueryEscape(at.Format(time.RFC3339))); len(got) != 5 || got[0].RemindAt != due.Add(-30*time.Minute).Format(timeLayout) {
		t.Fatalf("GET /reminders?since: %+v", got)
	}
	if got := listReminders(t, a, otherTok, ""); len(got) != 0 {
		t.Fatalf("another user's reminders: %+v", got)
	}
	p := mustStatus(t, a.do(t, "GET", "/api/me/reminders?since=yesterday", nil, bearer(tok)), http.StatusUnprocessableEntity).problem(t)
	if len(p.Errors) != 1 || p.Errors[0].Field != "since" {
		t.Fatalf("bad since: %+v", p)
	}
	mustStatus(t, a.do(t, "GET", "/api/me/reminders?limit=3", nil, bearer(tok)), http.StatusUnprocessableEntity)
}

// A reminder event has a feed token as its id: a stream resumed after it
// neither repeats it nor skips the changes around it, and the change feed
// goes on past its position.
func TestReminderEventsResume(t *testing.T) {
	a, _ := twoInstances(t)
	_, tok := a.newUser(t)
	s := readyStream(t, a, tok)
	feedToken := syncAll(t, a, tok, "")
	due, dueText := dueIn(2 * time.Hour)
	task := a.createTask(t, tok, `{"title":"call","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	s.nextChange(t)
	if n := fireAt(t, a, due.Add(-time.Hour)); n != 1 {
		t.Fatalf("fired %d", n)
	}
	ev, r := s.nextReminder(t, 5*time.Second)
	if r.TaskID != task.ID || r.Title != "call" {
		t.Fatalf("reminder %+v", r)
	}
	mustStatus(t, a.do(t, "PATCH", taskURL(task.ID), `{"title":"call back"}`, bearer(tok)), http.StatusOK)
	_, c := s.nextChange(t)
	if c.Task.Title != "call back" {
		t.Fatalf("change %+v", c)
	}
	// Resumed right after the reminder: the change, and no reminder again.
	resumed := readyStream(t, a, tok, "Last-Event-ID", ev.ID)
	if _, c := resumed.nextChange(t); c.Task.ID != task.ID || c.Task.Title != "call back" {
		t.Fatalf("resumed with %+v", c)
	}
	resumed.noEvent(t, 300*time.Millisecond)
	// Resumed from before the reminder: the reminder, then the change.
	older := readyStream(t, a, tok, "Last-Event-ID", feedToken)
	if again, r := older.nextReminder(t, 5*time.Second); r.TaskID != task.ID {
		t.Fatalf("replayed %+v", again)
	}
	if _, c := older.nextChange(t); c.Task.ID != task.ID || c.Task.Title != "call back" { // the create, in its latest state
		t.Fatalf("replay %+v", c)
	}
	// The change feed skips the reminder's position.
	changes := changesSince(t, a, tok, feedToken)
	if len(changes) != 1 || changes[0].Task.Title != "call back" {
		t.Fatalf("feed after the reminder: %+v", changes)
	}
	f := pullChanges(t, a, tok, ev.ID)
	if len(f.Changes) != 1 || f.HasMore {
		t.Fatalf("feed from the reminder's token: %+v", f)
	}
	if f := pullChanges(t, a, tok, f.Next); len(f.Changes) != 0 || f.HasMore {
		t.Fatalf("feed at its end: %+v", f)
	}
}

// Changing the due date or the reminders re-arms them; completing or
// trashing the task cancels them, and reopening or restoring re-arms those
// still ahead.
func TestRemindersRearmAndCancel(t *testing.T) {
	a, _ := twoInstances(t)
	_, tok := a.newUser(t)
	due, dueText := dueIn(2 * time.Hour)
	moved := a.createTask(t, tok, `{"title":"moved","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	changed := a.createTask(t, tok, `{"title":"changed","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	done := a.createTask(t, tok, `{"title":"done","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	trashed := a.createTask(t, tok, `{"title":"trashed","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	cleared := a.createTask(t, tok, `{"title":"cleared","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	later := due.Add(time.Hour)
	mustStatus(t, a.do(t, "PATCH", taskURL(moved.ID), `{"due_date":"`+later.Format(time.RFC3339)+`"}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "PATCH", taskURL(changed.ID), `{"reminders":["PT30M"]}`, bearer(tok)), http.StatusOK)
	complete(t, a, tok, done.ID)
	mustStatus(t, a.do(t, "DELETE", taskURL(trashed.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "PATCH", taskURL(cleared.ID), `{"due_date":null,"reminders":[]}`, bearer(tok)), http.StatusOK)

	if n := fireAt(t, a, due.Add(-time.Hour)); n != 0 {
		t.Fatalf("fired %d at the old moment", n)
	}
	if n := fireAt(t, a, due.Add(-30*time.Minute)); n != 1 {
		t.Fatalf("fired %d at the changed reminder's moment, want 1", n)
	}
	if n := fireAt(t, a, later.Add(-time.Hour)); n != 1 {
		t.Fatalf("fired %d at the moved due date's reminder, want 1", n)
	}
	got := listReminders(t, a, tok, "")
	if len(got) != 2 || got[0].TaskID != changed.ID || got[1].TaskID != moved.ID || got[1].DueDate != later.Format(timeLayout) {
		t.Fatalf("fired %+v", got)
	}
	// Reopened and restored, their reminders are armed again.
	mustStatus(t, a.do(t, "PATCH", taskURL(done.ID)+"/complete", `{"completed":false}`, bearer(tok)), http.StatusOK)
	mustStatus(t, a.do(t, "POST", fmt.Sprintf("/api/me/trash/%d/restore", trashed.ID), nil, bearer(tok)), http.StatusOK)
	if n := fireAt(t, a, due.Add(-time.Hour)); n != 2 {
		t.Fatalf("fired %d after reopen and restore, want 2", n)
	}
	// Deleted for good, a task's reminders go with it.
	mustStatus(t, a.do(t, "DELETE", taskURL(trashed.ID), nil, bearer(tok)), http.StatusNoContent)
	mustStatus(t, a.do(t, "DELETE", fmt.Sprintf("/api/me/trash/%d", trashed.ID), nil, bearer(tok)), http.StatusNoContent)
	var left int
	if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM task_reminders WHERE task_id = $1`, trashed.ID).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d reminders of a task deleted for good (%v)", left, err)
	}
}

// After a stop, the next start fires the reminders that came due meanwhile
// if they are less than 24 hours late, and never the older ones, which the
// purge then forgets.
func TestRemindersAfterAStop(t *testing.T) {
	a, _ := twoInstances(t)
	_, tok := a.newUser(t)
	due, dueText := dueIn(2 * time.Hour)
	stale := a.createTask(t, tok, `{"title":"stale","due_date":"`+dueText+`","reminders":["PT1H"]}`)
	recent := a.createTask(t, tok, `{"title":"recent","due_date":"`+due.Add(2*time.Hour).Format(time.RFC3339)+`","reminders":["PT1H"]}`)
	// The stale one came due at +1h, the recent one at +3h; the instance
	// starts again at +26h: 25 and 23 hours late.
	if n := fireAt(t, a, due.Add(24*time.Hour)); n != 1 {
		t.Fatalf("fired %d, want 1 (the one less than 24 hours late)", n)
	}
	if got := listReminders(t, a, tok, ""); len(got) != 1 || got[0].TaskID != recent.ID {
		t.Fatalf("fired %+v", got)
	}
	// The purge forgets the armed reminders that can no longer fire (moved
	// back here to be a day late by the database's clock) and the ones that
	// fired more than 7 days ago.
	ctx := context.Background()
	if _, err := a.pool.Exec(ctx, `UPDATE task_reminders SET remind_at = now() - interval '25 hours' WHERE task_id = $1`, stale.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pool.Exec(ctx, `UPDATE task_reminders SET fired_at = now() - interval '8 days' WHERE task_id = $1`, recent.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := a.store.PurgeReminders(ctx); err != nil || n != 2 {
		t.Fatalf("purged %d (%v), want 2", n, err)
	}
}

// End to end, in real time, with both instances' schedulers running: a
// reminder two seconds ahead reaches a stream within 5 seconds of its
// moment, once.
func TestReminderInRealTime(t *testing.T) {
	a, b := twoInstances(t)
	_, tok := a.newUser(t)
	s := readyStream(t, b, tok)
	due := time.Now().Add(2 * time.Second).UTC().Truncate(time.Millisecond)
	task := a.createTask(t, tok, `{"title":"now","due_date":"`+due.Format(time.RFC3339Nano)+`","reminders":["PT0S"]}`)
	s.nextChange(t)
	_, r := s.nextReminder(t, 8*time.Second)
	late := time.Since(due)
	if r.TaskID != task.ID || late > 5*time.Second || late < 0 {
		t.Fatalf("reminder %+v arrived %s after its moment", r, late)
	}
	t.Logf("arrived %s after its moment", late.Round(time.Millisecond))
	s.noEvent(t, 2*time.Second)
	if got := listReminders(t, a, tok, ""); len(got) != 1 {
		t.Fatalf("fired %+v", got)
	}
	if fired := a.reminders.fired.Load() + b.reminders.fired.Load(); fired != 1 {
		t.Fatalf("the two instances fired %d", fired)
	}
}

// The scheduler's cost with 100,000 armed reminders: a round at rest (none
// due: what an instance pays each second while writes poke it), and a round that fires 1,000
// due in the same second, with the plans of both statements:
//
//	go test -run '^$' -bench ReminderScheduler -benchtime 20x -v
func BenchmarkReminderScheduler(b *testing.B) {
	if testing.Short() {
		b.Skip("builds 100,000 tasks")
	}
	db := newDatabase(b, true)
	pool, err := openPool(context.Background(), db, poolOptions{}, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	ctx := context.Background()
	// 100,000 tasks of 1,000 users, each with a reminder armed (by the
	// trigger) between one and two days ahead.
	if _, err := pool.Exec(ctx, `INSERT INTO task_counts (user_id, tasks, seq) SELECT 'user-' || u, 100, 100 FROM generate_series(1, 1000) u`); err != nil {
		b.Fatal(err)
	}
	for from := 1; from <= 100000; from += 10000 { // in steps, each well inside the statement timeout
		if _, err := pool.Exec(ctx, `INSERT INTO tasks (user_id, title, due_date, reminders, change_seq)
		 SELECT 'user-' || (i % 1000 + 1), 'task ' || i, now() + interval '1 day' + i * interval '1 second', '{PT1H}', i
		 FROM generate_series($1::int, $1 + 9999) i`, from); err != nil {
			b.Fatal(err)
		}
	}
	for _, sql := range []string{`VACUUM ANALYZE tasks`, `VACUUM ANALYZE task_reminders`, `VACUUM ANALYZE task_counts`} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	var armed int
	var soonest time.Time
	if err := pool.QueryRow(ctx, `SELECT count(*), min(remind_at) FROM task_reminders WHERE fired_at IS NULL`).Scan(&armed, &soonest); err != nil || armed != 100000 {
		b.Fatalf("%d armed (%v)", armed, err)
	}
	store := newStore(pool, storeOptions{})
	s := newReminderScheduler(store, time.Now, discardLog())
	explain := func(sql string, args ...any) {
		rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
		if err != nil {
			b.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("EXPLAIN (ANALYZE, BUFFERS)\n%s", strings.Join(lines, "\n"))
	}

	// At rest: nothing due.
	now := time.Now()
	explain(sqlLockDueUsers, now, reminderBatch)
	start := time.Now()
	const restRounds = 60
	for range restRounds {
		if n, err := s.fireDue(ctx, now); err != nil || n != 0 {
			b.Fatalf("fired %d at rest (%v)", n, err)
		}
	}
	perRound := time.Since(start) / restRounds
	b.Logf("at rest: %s a round, so %s of rounds a minute for each instance", perRound, perRound*60)
	b.ReportMetric(float64(perRound.Microseconds()), "µs/rest-round")

	// 1,000 due in the same second, one per user, fired in one round.
	at := soonest.Add(-time.Minute) // before every other armed reminder
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if _, err := pool.Exec(ctx, `UPDATE task_reminders SET fired_at = NULL, seq = NULL, remind_at = remind_at + interval '2 days' WHERE fired_at IS NOT NULL`); err != nil {
			b.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE task_reminders SET remind_at = $1 WHERE task_id IN (SELECT id FROM tasks ORDER BY id LIMIT 1000 OFFSET $2)`,
			at, (i%50)*1000); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			explain(sqlLockDueUsers, at, reminderBatch)
			rows, _ := pool.Query(ctx, `SELECT DISTINCT user_id FROM task_reminders WHERE remind_at = $1`, at)
			users, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				b.Fatal(err)
			}
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			pool := tx // the plan of the firing statement, rolled back
			explain := func(sql string, args ...any) {
				rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
				if err != nil {
					b.Fatal(err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("EXPLAIN (ANALYZE, BUFFERS)\n%s", strings.Join(lines, "\n"))
			}
			explain(sqlTakePositions, at, users)
			explain(sqlMarkFired, at, users)
			_ = tx.Rollback(ctx)
		}
		b.StartTimer()
		n, err := s.fireDue(ctx, at)
		if err != nil || n != 1000 {
			b.Fatalf("fired %d (%v), want 1000", n, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/1000-fired")
}

// When the round after one runs: just after the second of the next reminder,
// never twice in a second, never later than reminderRecheck, and a second
// after a failure.
func TestReminderRoundsFollowTheNextReminder(t *testing.T) {
	s := newReminderScheduler(nil, time.Now, discardLog())
	now := time.Date(2026, 12, 2, 9, 0, 0, 20_000_000, time.UTC) // a round just ran
	at := func(d time.Duration) *time.Time { t := now.Truncate(time.Second).Add(d); return &t }
	nextSecond := time.Date(2026, 12, 2, 9, 0, 1, 20_000_000, time.UTC)
	for _, c := range []struct {
		name string
		next *time.Time
		err  error
		want time.Time
	}{
		{"none armed: the recheck", nil, nil, now.Add(reminderRecheck)},
		{"on a whole minute: just after it", at(time.Minute), nil, now.Truncate(time.Second).Add(time.Minute + reminderAfterTick)},
		{"within a second: just after the next", at(1500 * time.Millisecond), nil, now.Truncate(time.Second).Add(2*time.Second + reminderAfterTick)},
		{"due already (another instance held the round): the next second", at(-time.Second), nil, nextSecond},
		{"due this very second: the next", at(0), nil, nextSecond},
		{"in a day: the recheck first", at(24 * time.Hour), nil, now.Add(reminderRecheck)},
		{"the round failed: the next second", at(time.Hour), errors.New("connection refused"), nextSecond},
	} {
		if got := s.nextRound(now, c.next, c.err); !got.Equal(c.want) {
			t.Errorf("%s: next round at %s, want %s", c.name, got.Format(time.StampMilli), c.want.Format(time.StampMilli))
		}
	}

	// Without LISTEN nothing tells it of a reminder armed through another
	// instance: with nothing armed it looks again every second.
	n := newChangeNotifier(nil, "", time.Second, discardLog())
	s.recheck = listenOrPoll(n)
	if got := s.nextRound(now, nil, nil); !got.Equal(now.Add(time.Second)) {
		t.Errorf("not listening, none armed: next round at %s, want a second later", got.Format(time.StampMilli))
	}
	if got := s.nextRound(now, at(time.Minute), nil); !got.Equal(now.Add(time.Second)) {
		t.Errorf("not listening, one armed in a minute: next round at %s, want a second later", got.Format(time.StampMilli))
	}
	n.listening.Store(true)
	if got := s.nextRound(now, nil, nil); !got.Equal(now.Add(reminderRecheck)) {
		t.Errorf("listening, none armed: next round at %s, want the recheck", got.Format(time.StampMilli))
	}
}

// An idle scheduler asks the database nothing after its first round; a poke
// (a change that may have armed a reminder) brings one round at the next
// second however many pokes come; and an armed reminder fires at its moment
// with no round in between.
func TestIdleReminderSchedulerAsksNothing(t *testing.T) {
	db := newDatabase(t, true)
	ctx := t.Context()
	pool, err := openPool(ctx, db, poolOptions{}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := newReminderScheduler(newStore(pool, storeOptions{}), time.Now, discardLog())
	go s.Run(ctx)
	waitRounds := func(want int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for s.rounds.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := s.rounds.Load(); got != want {
			t.Fatalf("%d rounds, want %d", got, want)
		}
	}
	waitRounds(1, 3*time.Second) // the round at start
	time.Sleep(2500 * time.Millisecond)
	if n := s.rounds.Load(); n != 1 {
		t.Fatalf("%d rounds in 2.5 s with nothing armed, want the first alone", n)
	}

	for range 50 {
		s.Poke()
	}
	waitRounds(2, 1500*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	if n := s.rounds.Load(); n != 2 {
		t.Fatalf("%d rounds after 50 pokes, want one", n)
	}

	// A reminder armed 2-3 s ahead (by the trigger), then a poke as the
	// notifier gives it: one round reads its moment, the next fires it.
	due := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	if _, err := pool.Exec(ctx, `INSERT INTO task_counts (user_id, tasks, seq) VALUES ('idle', 1, 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tasks (user_id, title, due_date, reminders) VALUES ('idle', 'soon', $1, '{PT0S}')`, due); err != nil {
		t.Fatal(err)
	}
	s.Poke()
	waitRounds(3, 1500*time.Millisecond)
	deadline := due.Add(time.Second)
	for s.fired.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	firedAt := time.Now()
	if s.fired.Load() != 1 {
		t.Fatalf("the reminder due at %s had not fired a second later", due.Format(time.StampMilli))
	}
	if late := firedAt.Sub(due); late < 0 || late > 500*time.Millisecond {
		t.Fatalf("fired %s after its moment", late)
	}
	if n := s.rounds.Load(); n != 4 {
		t.Fatalf("%d rounds: want the one at start, one for the 50 pokes, one for the last poke (it read the moment) and the one that fired", n)
	}
}

// A change made through another instance pokes this one's scheduler (its
// notification arrives over LISTEN): the change may have armed a reminder
// that this instance should fire if the other goes away.
func TestAnotherInstancesChangePokesTheScheduler(t *testing.T) {
	a, b := twoInstances(t)
	_, tok := a.newUser(t)
	settled := func(s *reminderScheduler) int64 {
		for n := s.rounds.Load(); ; {
			time.Sleep(1200 * time.Millisecond)
			m := s.rounds.Load()
			if m == n && m > 0 {
				return m
			}
			n = m
		}
	}
	before := settled(b.reminders)
	a.createTask(t, tok, `{"title":"through a"}`)
	deadline := time.Now().Add(3 * time.Second)
	for b.reminders.rounds.Load() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if b.reminders.rounds.Load() == before {
		t.Fatal("b's scheduler ran no round after a change made through a")
	}
}
