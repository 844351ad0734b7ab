package main

import (
	"testing"
	"time"
)

// The probe sleeps stallProbeSleep at a time while it runs, and stops
// when asked.
func TestStallProbeRuns(t *testing.T) {
	p := startStallProbe()
	time.Sleep(100 * time.Millisecond)
	h := p.stop()
	// 100 sleeps of 1 ms at most; a loaded machine makes fewer.
	if h.wakeups < 5 || h.wakeups > 110 || h.max < 0 {
		t.Fatalf("%d wakeups, latest %s late, in 100 ms of 1 ms sleeps", h.wakeups, h.max)
	}
	if !h.realtime {
		t.Log("the probe ran at ordinary priority (no root or CAP_SYS_NICE): the report shows ?")
	}
}
