package main

import (
	"io"
	"sync"
	"time"
)

// logBuffer coalesces log lines into fewer writes. Under load, the access log
// is a line per request; writing each with its own system call showed in the
// service's CPU profile. A line is written at once when nothing was written in the
// last interval (so a quiet service logs in real time), otherwise it joins a
// batch written at the next tick or when the batch reaches maxBatch. What is
// pending when the process is killed outright is lost: at most one interval.
type logBuffer struct {
	w        io.Writer
	interval time.Duration
	maxBatch int

	mu        sync.Mutex
	buf       []byte
	lastWrite time.Time
	stop      chan struct{}
	done      chan struct{}
}

func newLogBuffer(w io.Writer, interval time.Duration) *logBuffer {
	l := &logBuffer{w: w, interval: interval, maxBatch: 64 << 10, stop: make(chan struct{}), done: make(chan struct{})}
	go l.flushEvery()
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) >= l.maxBatch || time.Since(l.lastWrite) >= l.interval {
		l.flushLocked()
	}
	return len(p), nil
}

func (l *logBuffer) flushLocked() {
	if len(l.buf) > 0 {
		_, _ = l.w.Write(l.buf) // nowhere to report a failing log destination
		l.buf = l.buf[:0]
	}
	l.lastWrite = time.Now()
}

func (l *logBuffer) flushEvery() {
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			l.mu.Unlock()
		}
	}
}

// Close writes what is pending and stops the ticker.
func (l *logBuffer) Close() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	l.flushLocked()
	l.mu.Unlock()
}
