package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateWriter records the writes it is given; while closed, a write waits.
type gateWriter struct {
	mu     sync.Mutex
	writes []string
	open   chan struct{} // closed: writes pass
}

func newGateWriter(open bool) *gateWriter {
	g := &gateWriter{open: make(chan struct{})}
	if open {
		close(g.open)
	}
	return g
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes = append(g.writes, string(p))
	return len(p), nil
}

func (g *gateWriter) text() (string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.writes, ""), len(g.writes)
}

// A quiet service's line goes out at once, not at the next tick.
func TestLogBufferWritesAQuietLineAtOnce(t *testing.T) {
	g := newGateWriter(true)
	l := newLogBuffer(g, time.Hour) // no tick during the test
	defer l.Close()
	_, _ = l.Write([]byte("first\n"))
	waitFor(t, "the line to be written", func() bool { s, _ := g.text(); return s == "first\n" })
}

// Under a burst, lines are batched: fewer writes than lines, in order.
func TestLogBufferBatchesABurst(t *testing.T) {
	g := newGateWriter(true)
	l := newLogBuffer(g, time.Hour)
	l.maxBatch = 1 << 10
	var want strings.Builder
	for i := range 1000 {
		line := fmt.Sprintf("line %04d\n", i)
		want.WriteString(line)
		_, _ = l.Write([]byte(line))
	}
	l.Close()
	got, writes := g.text()
	if got != want.String() {
		t.Fatalf("the lines came out changed or out of order:\n%.200s", got)
	}
	if writes > 100 {
		t.Fatalf("%d writes for 1000 lines of 10 bytes in batches of 1 KiB", writes)
	}
}

// A destination that stalls does not stall the lines written meanwhile (a
// request logs before its response is sent), up to maxPending; past it,
// Write waits for the destination.
func TestLogBufferDoesNotWaitForAStalledDestination(t *testing.T) {
	g := newGateWriter(false)
	l := newLogBuffer(g, time.Hour)
	l.maxPending = 4 << 10
	line := []byte(strings.Repeat("x", 99) + "\n")
	_, _ = l.Write(line) // the writer takes it, and stalls
	time.Sleep(50 * time.Millisecond)

	returned := make(chan struct{})
	go func() {
		for range 30 { // 3,000 bytes: under maxPending
			_, _ = l.Write(line)
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Write waited for a stalled destination")
	}

	blocked := make(chan struct{})
	go func() {
		for range 20 { // past maxPending
			_, _ = l.Write(line)
		}
		close(blocked)
	}()
	select {
	case <-blocked:
		t.Fatal("Write kept buffering past maxPending")
	case <-time.After(200 * time.Millisecond):
	}
	close(g.open)
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("Write still waits after the destination came back")
	}
	l.Close()
	if got, _ := g.text(); len(got) != 51*len(line) {
		t.Fatalf("%d bytes written, want %d", len(got), 51*len(line))
	}
}

// Close writes what is pending; lines after it are written through.
func TestLogBufferClose(t *testing.T) {
	g := newGateWriter(true)
	l := newLogBuffer(g, time.Hour)
	l.maxBatch = 1 << 20
	_, _ = l.Write([]byte("a\n")) // at once (quiet)
	waitFor(t, "the first line", func() bool { s, _ := g.text(); return s == "a\n" })
	_, _ = l.Write([]byte("b\n")) // pending: within the interval of the last write
	l.Close()
	_, _ = l.Write([]byte("c\n"))
	if got, _ := g.text(); got != "a\nb\nc\n" {
		t.Fatalf("got %q", got)
	}
}

// An idle tick does not count as a write, so the next line after a quiet
// spell still goes out at once rather than at the next tick.
func TestLogBufferIdleTicksAreNoWrites(t *testing.T) {
	g := newGateWriter(true)
	l := newLogBuffer(g, 20*time.Millisecond)
	defer l.Close()
	_, _ = l.Write([]byte("a\n"))
	waitFor(t, "the first line", func() bool { s, _ := g.text(); return s == "a\n" })
	last := func() time.Time { l.mu.Lock(); defer l.mu.Unlock(); return l.lastWrite }
	written := last()
	time.Sleep(100 * time.Millisecond) // idle ticks
	if got := last(); !got.Equal(written) {
		t.Fatalf("idle ticks moved the last write from %s to %s", written, got)
	}
}
