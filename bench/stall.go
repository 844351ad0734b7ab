package main

import (
	"fmt"
	"time"
)

// A run's p99 on a shared VM can be the host's: when the hypervisor or the
// kernel holds the machine's cores, every process on it waits, whatever it
// does. stallProbe tells those stalls apart from the service's and
// PostgreSQL's: a thread at real-time priority (stall_linux.go), which no
// ordinary process on the machine can keep waiting, sleeps stallProbeSleep
// at a time and records how late it wakes.

// stallProbeSleep is the probe's sleep: short enough to see a stall of a
// few milliseconds, long enough to cost the machine little (about a
// thousand wakeups a second).
const stallProbeSleep = time.Millisecond

// stallOver is the lateness from which a wakeup counts as a stall.
const stallOver = 5 * time.Millisecond

// hostStalls is what the probe saw during one run.
type hostStalls struct {
	realtime bool          // the probe ran at real-time priority
	wakeups  int           // its sleeps
	max      time.Duration // the latest it woke
	over     int           // wakeups later than stallOver
}

func (h *hostStalls) add(late time.Duration) {
	h.wakeups++
	h.max = max(h.max, late)
	if late > stallOver {
		h.over++
	}
}

// String is the report's cell: the latest wakeup and how many were later
// than stallOver; "?" when nothing was measured at real-time priority.
func (h *hostStalls) String() string {
	if h == nil || !h.realtime || h.wakeups == 0 {
		return "?"
	}
	return fmt.Sprintf("%s (%d)", ms(h.max), h.over)
}
