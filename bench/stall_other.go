//go:build !linux

package main

// stallProbe needs Linux's SCHED_FIFO; elsewhere the report says "?".
type stallProbe struct{}

func startStallProbe() *stallProbe { return &stallProbe{} }

func (*stallProbe) stop() *hostStalls { return nil }
