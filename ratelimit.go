package main

import (
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter keeps a token bucket per user: RATE_LIMIT requests per second,
// a burst of twice that, starting full. A bucket left idle long enough to be
// full again is the same as a new one, so the sweeper drops it: memory grows
// with active users only.
type rateLimiter struct {
	limit  rate.Limit
	burst  int
	refill time.Duration // how long an empty bucket takes to fill
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

// newRateLimiter returns nil (no limit) when perSecond is 0.
func newRateLimiter(perSecond float64, now func() time.Time) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	burst := max(1, int(math.Ceil(2*perSecond)))
	return &rateLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		refill:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		now:     now,
		buckets: map[string]*bucket{},
	}
}

// allow takes a token from user's bucket, or says how long until one is there.
func (l *rateLimiter) allow(user string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	b, ok := l.buckets[user]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[user] = b
	}
	b.lastSeen = now
	l.mu.Unlock()

	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused request takes nothing from the bucket
		return false, d
	}
	return true, 0
}

// sweep drops the buckets that have refilled completely.
func (l *rateLimiter) sweep() int {
	cutoff := l.now().Add(-l.refill)
	l.mu.Lock()
	defer l.mu.Unlock()
	for user, b := range l.buckets {
		if b.lastSeen.Before(cutoff) {
			delete(l.buckets, user)
		}
	}
	return len(l.buckets)
}

// limitRate refuses a user's request over their rate with 429 and
// Retry-After (whole seconds), before any work is done.
func limitRate(l *rateLimiter) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		if l == nil {
			return next
		}
		return func(w http.ResponseWriter, r *http.Request) error {
			if ok, wait := l.allow(userIDFrom(r.Context())); !ok {
				return errRateLimited(wait)
			}
			return next(w, r)
		}
	}
}

// errRateLimited is a request over the user's rate, which may be retried after wait.
func errRateLimited(wait time.Duration) *Error {
	return &Error{Code: CodeRateLimited, RetryAfter: wait,
		Message: "Too many requests for this user; retry after the number of seconds in Retry-After."}
}
