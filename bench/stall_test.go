package main

import (
	"testing"
	"time"
)

// A wakeup counts as a stall only past stallOver; the report's cell names
// the latest and the count, and says nothing for a probe that was not
// real-time.
func TestHostStallsTally(t *testing.T) {
	var h hostStalls
	for _, late := range []time.Duration{50 * time.Microsecond, stallOver, stallOver + 1, 12 * time.Millisecond, time.Millisecond} {
		h.add(late)
	}
	if h.wakeups != 5 || h.over != 2 || h.max != 12*time.Millisecond {
		t.Fatalf("%d wakeups, %d over %s, max %s; want 5, 2 and 12ms", h.wakeups, h.over, stallOver, h.max)
	}
	if h.String() != "?" {
		t.Fatalf("not real-time: %q, want ?", h.String())
	}
	h.realtime = true
	if got, want := h.String(), "12.00 ms (2)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := (*hostStalls)(nil).String(); got != "?" {
		t.Fatalf("nil: %q, want ?", got)
	}
}
