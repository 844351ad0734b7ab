package main

import (
	"io"
	"sync"
	"time"
)

// logBuffer coalesces log lines into fewer writes, and keeps the writes off
// the request's path. Under load, the access log is a line per request;
// writing each with its own system call showed in the service's CPU
// profile. And a line is logged before net/http sends the response, so a
// write that stalled (the destination's pipe full, the disk's writeback
// throttled) held every response that logged meanwhile: with the writes in
// the requests, the open loop's p99 at half capacity was 10-26 ms for get,
// 2-3 ms with the access log off (docs/performance.md, seventh pass).
//
// Write only appends, under a lock, and one goroutine writes the batches.
// A line goes out at once when nothing was written in the last interval
// (a quiet service logs in real time); otherwise it joins a batch written an
// interval after the last, or as soon as the batch reaches maxBatch. An idle
// service's writer sleeps: no timer ticks. Past maxPending unwritten bytes
// Write waits for the writer, so a stuck destination costs bounded memory.
// What is pending when the process is killed outright is lost: at most one
// interval.
type logBuffer struct {
	w          io.Writer
	interval   time.Duration
	maxBatch   int
	maxPending int

	mu        sync.Mutex
	drained   *sync.Cond // a batch was written
	buf       []byte
	lastWrite time.Time
	closed    bool // Close ran: Write writes through
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
}

func newLogBuffer(w io.Writer, interval time.Duration) *logBuffer {
	l := &logBuffer{w: w, interval: interval, maxBatch: 64 << 10, maxPending: 1 << 20,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	l.drained = sync.NewCond(&l.mu)
	go l.writeBatches()
	return l
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	for len(l.buf) >= l.maxPending && !l.closed {
		l.kickWriter()
		l.drained.Wait()
	}
	if l.closed {
		defer l.mu.Unlock()
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	now := len(l.buf) >= l.maxBatch || time.Since(l.lastWrite) >= l.interval
	l.mu.Unlock()
	if now {
		l.kickWriter()
	}
	return len(p), nil
}

// kickWriter has the pending lines written now.
func (l *logBuffer) kickWriter() {
	select {
	case l.kick <- struct{}{}:
	default: // a write is already due
	}
}

// writeBatches writes what is pending when kicked, then once an interval
// while lines keep coming; idle, it sleeps until the next kick.
func (l *logBuffer) writeBatches() {
	defer close(l.done)
	t := time.NewTimer(l.interval)
	t.Stop()
	var spare []byte
	for {
		select {
		case <-l.stop:
			return
		case <-l.kick:
		case <-t.C:
		}
		var wrote bool
		if spare, wrote = l.writePending(spare); wrote {
			t.Reset(l.interval) // what comes meanwhile is written then
		}
	}
}

// writePending writes what is pending, outside the lock, swapping in spare
// as the buffer; it returns the written batch's memory for the next swap,
// and whether there was anything to write.
func (l *logBuffer) writePending(spare []byte) ([]byte, bool) {
	l.mu.Lock()
	batch := l.buf
	if len(batch) == 0 { // nothing came: the next line is written at once
		l.mu.Unlock()
		return spare, false
	}
	l.buf = spare[:0]
	l.lastWrite = time.Now()
	l.mu.Unlock()
	_, _ = l.w.Write(batch) // nowhere to report a failing log destination
	l.drained.Broadcast()
	return batch, true
}

// Close writes what is pending and stops the writer; later lines are
// written as they come.
func (l *logBuffer) Close() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	l.closed = true
	if len(l.buf) > 0 { // under the lock: later lines come after these
		_, _ = l.w.Write(l.buf)
		l.buf = nil
	}
	l.mu.Unlock()
	l.drained.Broadcast()
}
