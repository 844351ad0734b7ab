package main

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// stallProbe is a probe running on a thread of its own; stop ends it and
// returns what it saw.
type stallProbe struct {
	quit chan struct{}
	done chan hostStalls
}

// startStallProbe starts the probe on a thread it locks and raises to
// SCHED_FIFO (it needs root or CAP_SYS_NICE; without, the probe still runs,
// and its report says it was not real-time). It sleeps in nanosleep(2), not
// in the Go runtime's timers: a goroutine's timer is fired by whichever
// thread runs the scheduler, at ordinary priority, and would measure that
// thread's waits too.
//
// When it ends it puts the thread back at ordinary priority and unlocks it,
// before stop returns. Ending locked would have the runtime discard the
// thread, and the bench starts the service with a parent-death signal
// (dieWithParent), which Linux sends when the thread that forked the child
// exits: that thread may be this one. A first version ended locked, and
// stopped the measured service in the middle of a run.
func startStallProbe() *stallProbe {
	p := &stallProbe{quit: make(chan struct{}), done: make(chan hostStalls, 1)}
	go func() {
		runtime.LockOSThread()
		var h hostStalls
		h.realtime = unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 50}, 0) == nil
		seen := probeUntil(p.quit, h)
		if h.realtime && unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0) != nil {
			p.done <- seen
			select {} // never hand a real-time thread back to the runtime, nor let it exit
		}
		runtime.UnlockOSThread()
		p.done <- seen
	}()
	return p
}

// probeUntil sleeps stallProbeSleep at a time until quit is closed, and
// records how late each wakeup came.
func probeUntil(quit <-chan struct{}, h hostStalls) hostStalls {
	sleep := unix.NsecToTimespec(stallProbeSleep.Nanoseconds())
	for {
		select {
		case <-quit:
			return h
		default:
		}
		start := time.Now()
		if err := unix.Nanosleep(&sleep, nil); err != nil && err != unix.EINTR {
			return hostStalls{}
		}
		h.add(time.Since(start) - stallProbeSleep)
	}
}

func (p *stallProbe) stop() *hostStalls {
	close(p.quit)
	h := <-p.done
	return &h
}
