//go:build !unix

package main

import "time"

// processCPU is not measured here; benchmarks leave out what needs it.
func processCPU() time.Duration { return 0 }
