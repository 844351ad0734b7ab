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
// thread's waits too. The thread is not unlocked, so the runtime discards it
// with its priority when the probe ends.
func startStallProbe() *stallProbe {
	p := &stallProbe{quit: make(chan struct{}), done: make(chan hostStalls, 1)}
	go func() {
		runtime.LockOSThread()
		var h hostStalls
		h.realtime = unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 50}, 0) == nil
		sleep := unix.NsecToTimespec(stallProbeSleep.Nanoseconds())
		for {
			select {
			case <-p.quit:
				p.done <- h
				return
			default:
			}
			start := time.Now()
			if err := unix.Nanosleep(&sleep, nil); err != nil && err != unix.EINTR {
				p.done <- hostStalls{}
				return
			}
			h.add(time.Since(start) - stallProbeSleep)
		}
	}()
	return p
}

func (p *stallProbe) stop() *hostStalls {
	close(p.quit)
	h := <-p.done
	return &h
}
