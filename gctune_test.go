package main

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

const miB = 1 << 20 // bytes in a MiB

// The limit stays at its base while little stays live, and rises with what
// stays live (10,000 idle streams hold ~370 MB), leaving room for garbage.
func TestMemoryLimitFollowsWhatStaysLive(t *testing.T) {
	for _, c := range []struct {
		footprint, want int64
	}{
		{0, 48 * miB},
		{20 * miB, 48 * miB}, // request load: the base
		{32 * miB, 48 * miB},
		{40 * miB, 56 * miB},   // 16 MiB of headroom at least
		{370 * miB, 462 * miB}, // a quarter above it
	} {
		if got := memoryLimitFor(c.footprint); got/miB != c.want/miB {
			t.Errorf("memoryLimitFor(%d MiB) = %d MiB, want %d MiB", c.footprint/miB, got/miB, c.want/miB)
		}
	}
}

// The limit moves only when it is off by more than an eighth: setting it
// stops the world, and the footprint moves a little at every collection.
func TestMemoryLimitMovesByMoreThanAnEighth(t *testing.T) {
	for _, c := range []struct {
		current, footprint, want int64
	}{
		{48 * miB, 10 * miB, 48 * miB},    // unchanged
		{48 * miB, 370 * miB, 462 * miB},  // streams opened: up at once
		{462 * miB, 360 * miB, 462 * miB}, // 450 MiB would do: within an eighth, kept
		{462 * miB, 300 * miB, 375 * miB}, // a fifth closed: down
		{462 * miB, 10 * miB, 48 * miB},   // all closed: back to the base
	} {
		if got := nextMemoryLimit(c.current, c.footprint); got/miB != c.want/miB {
			t.Errorf("nextMemoryLimit(%d MiB, %d MiB) = %d MiB, want %d MiB", c.current/miB, c.footprint/miB, got/miB, c.want/miB)
		}
	}
}

// adjustMemoryLimit sets each new limit once, and stops with its context.
func TestAdjustMemoryLimitSetsChangesAndStops(t *testing.T) {
	var mu sync.Mutex
	footprints := []int64{10 * miB, 370 * miB, 371 * miB, 10 * miB}
	var set []int64
	next := make(chan struct{}, len(footprints))
	footprint := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		f := footprints[0]
		if len(footprints) > 1 {
			footprints = footprints[1:]
		} else {
			next <- struct{}{}
		}
		return f
	}
	setLimit := func(v int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		set = append(set, v)
		return 0
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { adjustMemoryLimit(ctx, time.Millisecond, footprint, setLimit); close(done) }()
	select {
	case <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("the footprint was not read four times")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("adjustMemoryLimit did not return when its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(set) != 2 || set[0]/miB != 462 || set[1]/miB != 48 {
		t.Fatalf("limits set: %v MiB, want [462 48]", inMiB(set))
	}
}

func inMiB(v []int64) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = x / miB
	}
	return out
}

// The footprint is read from the runtime: it knows every metric, and what a
// collection leaves live shows in it.
func TestRuntimeFootprintCountsWhatStaysLive(t *testing.T) {
	runtime.GC()
	before := runtimeFootprint()
	if before <= 0 {
		t.Fatalf("runtimeFootprint() = %d: a metric is unknown to this runtime", before)
	}
	kept := make([][]byte, 64)
	for i := range kept {
		kept[i] = make([]byte, miB)
	}
	runtime.GC()
	after := runtimeFootprint()
	runtime.KeepAlive(kept)
	if grew := after - before; grew < 60*miB || grew > 80*miB {
		t.Fatalf("64 MiB kept live: the footprint grew by %d MiB (from %d to %d MiB)", grew/miB, before/miB, after/miB)
	}
}
