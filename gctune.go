package main

import (
	"context"
	rtmetrics "runtime/metrics"
	"time"
)

// The soft memory limit the service keeps when GOMEMLIMIT does not set one.
//
// tuneGC sets GOGC=400 and a 48 MiB soft limit: under request load the live
// heap is a few MB, so the collector runs rarely and the process stays
// inside a small container. A fixed limit stops being soft once what stays
// live outgrows it, though: each open event stream holds about 37 KiB
// (docs/performance.md), so past a thousand streams the collector started a
// cycle as soon as the last one ended (10,000 idle streams: 69 % of a core).
// adjustMemoryLimit raises the limit with what the last collection left
// live, and lowers it again when that shrinks.

const (
	baseMemoryLimit    = 48 << 20 // the limit while little stays live
	minMemoryHeadroom  = 16 << 20 // room for garbage above what stays live, at least
	memoryLimitEvery   = time.Second
	memoryLimitSlack   = 8 // the limit moves when it is off by more than 1/8 (setting it stops the world)
	memoryLimitMetrics = 5
)

// memoryLimitFor is the limit for a footprint (what stays live, stacks and
// runtime metadata included): the base, or the footprint with a quarter of
// it, and at least minMemoryHeadroom, for garbage.
func memoryLimitFor(footprint int64) int64 {
	return max(baseMemoryLimit, footprint+max(footprint/4, minMemoryHeadroom))
}

// nextMemoryLimit is the limit to keep after reading footprint, when the
// limit is current: current itself while it is within an eighth of the one
// the footprint calls for.
func nextMemoryLimit(current, footprint int64) int64 {
	want := memoryLimitFor(footprint)
	if diff := want - current; diff > current/memoryLimitSlack || -diff > current/memoryLimitSlack {
		return want
	}
	return current
}

// adjustMemoryLimit reads the footprint every interval and moves the limit
// with set (debug.SetMemoryLimit) until ctx ends. It starts from the base,
// which tuneGC set.
func adjustMemoryLimit(ctx context.Context, interval time.Duration, footprint func() int64, set func(int64) int64) {
	current := int64(baseMemoryLimit)
	every(ctx, interval, func(context.Context) {
		if next := nextMemoryLimit(current, footprint()); next != current {
			set(next)
			current = next
		}
	})
}

// footprintMetrics are what runtimeFootprint reads, in its order.
var footprintMetrics = [memoryLimitMetrics]string{
	"/gc/heap/live:bytes",                 // heap objects the last collection found live
	"/memory/classes/total:bytes",         // everything the runtime has mapped
	"/memory/classes/heap/released:bytes", // returned to the OS
	"/memory/classes/heap/objects:bytes",  // heap objects, live or garbage
	"/memory/classes/heap/free:bytes",     // free heap the OS still backs
}

// runtimeFootprint is what the memory limit has to hold besides garbage: the
// heap the last collection found live, and everything the runtime keeps
// that is not heap objects (goroutine stacks, span metadata, unused parts of
// spans). It is 0 when the runtime does not know one of the metrics.
func runtimeFootprint() int64 {
	var samples [memoryLimitMetrics]rtmetrics.Sample
	for i, name := range footprintMetrics {
		samples[i].Name = name
	}
	rtmetrics.Read(samples[:])
	var v [memoryLimitMetrics]int64
	for i, s := range samples {
		if s.Value.Kind() != rtmetrics.KindUint64 {
			return 0
		}
		v[i] = int64(s.Value.Uint64())
	}
	live, total, released, objects, free := v[0], v[1], v[2], v[3], v[4]
	return live + total - released - objects - free
}
