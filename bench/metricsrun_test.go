package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestMetricsIsARunOfItsOwn(t *testing.T) {
	if o, err := parseOptions([]string{"-metrics"}, io.Discard); err != nil || !o.metrics {
		t.Fatalf("-metrics: %+v, %v", o, err)
	}
	for _, args := range [][]string{{"-metrics", "-soak", "1m"}, {"-metrics", "-scale"}, {"-metrics", "-baseline", "HEAD"}} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
	}
}

func TestMetricsRunComparesMedians(t *testing.T) {
	turn := func(requests int, serviceCPU time.Duration) metricsTurn {
		return metricsTurn{st: stats{elapsed: time.Second, latencies: make([]time.Duration, requests)}, cpu: &cpuUse{service: serviceCPU}}
	}
	r := metricsRun{
		plain: []metricsTurn{turn(1000, 100*time.Millisecond), turn(3000, 300*time.Millisecond), turn(1100, 110*time.Millisecond)},
		with:  []metricsTurn{turn(1050, 110*time.Millisecond), turn(10, time.Millisecond), turn(1060, 115*time.Millisecond)},
	}
	if got := turnsMedian(r.plain, reqPerSec); got != 1100 {
		t.Errorf("median req/s without metrics %v, want 1100", got)
	}
	if got := turnsMedian(r.with, reqPerSec); got != 1050 {
		t.Errorf("median req/s with metrics %v, want 1050", got)
	}
	md := r.markdown()
	for _, want := range []string{"1100 req/s without metrics, 1050 with: -4.5 % throughput", "missed"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
}
