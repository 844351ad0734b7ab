package main

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Reminders (API.md "Recurring tasks and reminders"): a task's reminders are
// armed in the database whenever its due date, reminders, completion or trash
// state changes (the tasks_arm_reminders trigger), so every instance sees
// the same set. Every instance runs a scheduler that fires the due ones; a
// round is one transaction that claims its reminders in the database, so
// each fires once whichever instance gets there first, and one that came due
// while no instance ran fires at the next start if it is less than 24 hours
// late. A fired reminder takes the user's next feed position: the change
// notifier wakes the user's streams on every instance, and they send it as
// `event: reminder` in order with the changes. Its statements are in
// store_reminders.go.
//
// The scheduler asks the database only when there may be something to do:
// after a round it reads when the next armed reminder is due and sleeps
// until just after that second; a change, here or (over LISTEN) on another
// instance, may arm an earlier one, so it brings the next round forward to
// the next whole second. Rounds are at most a second apart under writes.
// With nothing due it looks again every reminderRecheck while it listens
// (an idle instance then asks the database almost nothing), and every
// second while it does not: then nothing tells it of a reminder armed through an
// instance that stops before the moment, and it must still fire within
// seconds (API.md).

// reminderScheduler fires due reminders on this instance.
type reminderScheduler struct {
	store *Store
	log   *slog.Logger
	now   func() time.Time
	tick  time.Duration // rounds run just after a whole tick, at most one per tick
	poke  chan struct{} // a change may have armed a reminder
	// recheck is how long to sleep with nothing armed; nil: reminderRecheck
	recheck func() time.Duration
	fired   atomic.Int64 // reminders this instance fired
	rounds  atomic.Int64 // rounds this instance ran

	onFired func(n int) // told how many a round fired (the metrics); nil: nobody
}

const (
	// reminderBatch is how many due reminders a round starts from.
	reminderBatch = 1000
	// reminderRecheck bounds the sleep with nothing due while the instance
	// listens: a reminder armed through an instance that stopped before its
	// moment, whose notification this one missed, fires at most this late.
	reminderRecheck = 10 * time.Minute
	// reminderAfterTick is how long after a whole second a round runs:
	// reminders are mostly set on whole minutes, so they fire within a few
	// tens of milliseconds of their moment, not anywhere up to a second.
	reminderAfterTick = 20 * time.Millisecond
)

func newReminderScheduler(store *Store, now func() time.Time, log *slog.Logger) *reminderScheduler {
	if now == nil {
		now = time.Now
	}
	return &reminderScheduler{store: store, log: log, now: now, tick: time.Second, poke: make(chan struct{}, 1)}
}

// Poke says that a change may have armed a reminder: the next round runs
// at the next whole second at the latest. It never blocks.
func (s *reminderScheduler) Poke() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Run fires due reminders until ctx ends: a round just after the next whole
// second (what came due while no instance ran), then as nextRound says.
func (s *reminderScheduler) Run(ctx context.Context) {
	at := s.justAfterTick(s.now())
	timer := time.NewTimer(at.Sub(s.now()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
			if soon := s.justAfterTick(s.now()); soon.Before(at) {
				at = soon
				timer.Reset(at.Sub(s.now()))
			}
			continue
		case <-timer.C:
		}
		now := s.now()
		due, err := s.round(ctx, now)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("could not fire due reminders; retrying in a second", "error", err)
		}
		at = s.nextRound(now, due, err)
		timer.Reset(at.Sub(s.now()))
	}
}

// round fires what is due at now and reads when the next armed reminder is.
func (s *reminderScheduler) round(ctx context.Context, now time.Time) (*time.Time, error) {
	s.rounds.Add(1)
	if _, err := s.fireDue(ctx, now); err != nil {
		return nil, err
	}
	return s.store.NextReminder(ctx, now)
}

// nextRound is when the round after the one at now runs: just after the
// second of the next reminder due (next, nil: none armed), and never in the
// same second, nor later than the recheck; after a failed round, at the
// next second.
func (s *reminderScheduler) nextRound(now time.Time, next *time.Time, err error) time.Time {
	soonest := s.justAfterTick(now)
	if err != nil {
		return soonest
	}
	latest := now.Add(reminderRecheck)
	if s.recheck != nil {
		latest = now.Add(s.recheck())
	}
	if next == nil {
		return latest
	}
	at := s.justAfterTick(next.Add(-time.Nanosecond)) // a moment on a whole second: that second
	if at.Before(soonest) {
		return soonest
	}
	if at.After(latest) {
		return latest
	}
	return at
}

// listenOrPoll is the recheck of a scheduler beside notifier: reminderRecheck
// while it listens, a second while it does not.
func listenOrPoll(n *changeNotifier) func() time.Duration {
	return func() time.Duration {
		if n.Listening() {
			return reminderRecheck
		}
		return time.Second
	}
}

// justAfterTick is reminderAfterTick past the first whole tick after t.
func (s *reminderScheduler) justAfterTick(t time.Time) time.Time {
	return t.Truncate(s.tick).Add(s.tick + reminderAfterTick)
}

// fireDue fires every reminder due at now (and less than 24 hours late), in
// rounds of about reminderBatch, and returns how many this instance fired.
// Tests call it with the instant they want.
func (s *reminderScheduler) fireDue(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, err := s.store.FireReminders(ctx, now, reminderBatch)
		total += n
		s.fired.Add(int64(n))
		if s.onFired != nil && n > 0 {
			s.onFired(n)
		}
		if err != nil || n < reminderBatch {
			return total, err
		}
	}
}

// countRemindersFired adds to tasks_reminders_fired_total; m may be nil
// (no METRICS_ADDR).
func (m *metrics) countRemindersFired(n int) {
	if m != nil {
		m.remindersFired.Add(float64(n))
	}
}

// purgeReminders is the periodic purge of reminders no one needs any more.
func purgeReminders(ctx context.Context, store *Store, log *slog.Logger) {
	if n, err := store.PurgeReminders(ctx); err != nil {
		log.Warn("purging reminders", "error", err)
	} else if n > 0 {
		log.Info("purged old reminders", "count", n)
	}
}

var remindersParams = []string{"since"}

// handleReminders lists the user's reminders fired in the last 7 days
// (after ?since= when given), oldest first.
func handleReminders(w http.ResponseWriter, r *http.Request, q Queries) error {
	values, err := parseQuery(r, remindersParams...)
	if err != nil {
		return err
	}
	var since *time.Time
	if v, ok := values["since"]; ok {
		t, ok := parseTimestamp(v[0])
		if !ok {
			return invalid(FieldError{Field: "since", Message: "must be an RFC 3339 timestamp with an offset, such as 2026-11-26T09:00:00Z"})
		}
		since = &t
	}
	fired, err := q.ListReminders(r.Context(), userIDFrom(r.Context()), since)
	if err != nil {
		return err
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, '[')
	for i := range fired {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendReminder(b, &fired[i], true)
	}
	*buf = append(b, ']')
	writeJSON(w, r, http.StatusOK, *buf)
	return nil
}

// appendReminder appends a fired reminder as a stream's reminder event has
// it, and with fired_at as GET /reminders has it.
func appendReminder(b []byte, f *FiredReminder, withFiredAt bool) []byte {
	b = append(b, `{"task_id":`...)
	b = strconv.AppendInt(b, f.TaskID, 10)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, f.Title)
	b = append(b, `,"due_date":`...)
	b = appendTime(b, f.DueDate)
	b = append(b, `,"remind_at":`...)
	b = appendTime(b, f.RemindAt)
	if withFiredAt {
		b = append(b, `,"fired_at":`...)
		b = appendTime(b, f.FiredAt)
	}
	return append(b, '}')
}
