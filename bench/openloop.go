package main

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// -openloop (issue 14): latency at normal load. The table's closed loop (32
// connections, each sending its next request when the last is answered)
// measures throughput, but its latencies hide a stall: while the service
// stalls, the connections wait and send nothing, so the requests real
// clients would have sent meanwhile are never measured (coordinated
// omission). The open loop sends at a constant rate instead: request i at
// its intended time t0 + i/rate, whether the earlier ones have been answered
// or not, each timed from that intended time, as wrk2 does; a stall of the
// service, or of the generator itself, counts against every request it held
// up.

const (
	// lateBy: a request sent more than this after its intended time is
	// late, the generator's own lag; its latency includes the lag all the
	// same.
	lateBy = time.Millisecond
	// openLoopMaxInFlight bounds the requests in flight, each on a
	// connection of its own. A request that finds it reached waits for one
	// to end, and is counted.
	openLoopMaxInFlight = 1000
	// recorderShards spreads the recording of concurrent requests over
	// locks.
	recorderShards = 16
)

// openLoop sends a scenario's requests at a constant rate, one goroutine a
// request, over a client that keeps a connection alive for each request
// that can be in flight.
type openLoop struct {
	*load
	maxInFlight int
}

func newOpenLoop(s *setup, maxInFlight int) *openLoop {
	return &openLoop{load: &load{client: newClient(maxInFlight), base: s.svc.base, users: s.users}, maxInFlight: maxInFlight}
}

// openLoopRun is one constant-rate run.
type openLoopRun struct {
	share    float64 // of the capacity the closed loop measured
	target   float64 // requests per second
	st       stats   // each latency from the request's intended start
	achieved float64 // requests sent per second, from the first intended start to the last send
	late     int     // sent more than lateBy after their intended time
	capped   int     // found maxInFlight requests in flight and waited for one to end
	cpu      *cpuUse // nil when not measured
}

// run sends rate requests a second for d: request i at t0 + i/rate, each
// from a goroutine of its own, so that no request waits for another's
// answer unless maxInFlight are in flight.
func (ol *openLoop) run(ctx context.Context, s scenario, rate float64, d time.Duration) openLoopRun {
	r := openLoopRun{target: rate}
	n := int(rate * d.Seconds())
	rec := &recorder{shards: make([]shard, recorderShards)}
	slots := make(chan struct{}, ol.maxInFlight)
	var late atomic.Int64
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	t0 := time.Now()
	rec.since = t0
	last, sent := t0, 0
schedule:
	for i := range n {
		intended := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(intended); wait > 0 {
			select {
			case <-ctx.Done():
				break schedule
			case <-time.After(wait):
			}
		}
		select {
		case slots <- struct{}{}:
		default:
			r.capped++
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				break schedule
			}
		}
		u := &ol.users[rng.IntN(len(ol.users))]
		req := s.pick(rng).build(rng, u)
		sh := &rec.shards[i%len(rec.shards)]
		rec.wg.Add(1)
		go func() {
			defer rec.wg.Done()
			if time.Since(intended) > lateBy {
				late.Add(1)
			}
			status, err := ol.send(ctx, u, req)
			sh.record(time.Since(intended), status, req, err)
			<-slots
		}()
		last, sent = time.Now(), i+1
	}
	rec.wait()
	r.st, r.late = rec.drain(), int(late.Load())
	if sent > 0 {
		r.achieved = float64(sent) / (last.Sub(t0).Seconds() + 1/rate)
	}
	return r
}
