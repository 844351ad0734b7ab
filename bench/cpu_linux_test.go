package main

import (
	"testing"
	"time"
)

// /proc/stat's first line: busy is all but idle and iowait, steal included;
// stolen is steal alone.
func TestParseCPULine(t *testing.T) {
	busy, stolen, err := parseCPULine("cpu  338760 1 134088 458537 8401 2 17706 11342 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Duration(338760+1+134088+2+17706+11342) * clockTick; busy != want {
		t.Errorf("busy %v, want %v", busy, want)
	}
	if want := 11342 * clockTick; stolen != want {
		t.Errorf("stolen %v, want %v", stolen, want)
	}
	for _, line := range []string{"cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3", ""} {
		if _, _, err := parseCPULine(line); err == nil {
			t.Errorf("%q parsed", line)
		}
	}
}
