//go:build !race

package main

// raceEnabled: the race detector slows CPU-bound tests tenfold; they check
// fewer cases under it.
const raceEnabled = false
