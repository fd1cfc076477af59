package discovery

import (
	"context"
	"sync"
	"time"
)

// Limiter paces new connections; Wait returns when the caller may open
// one, or with ctx's error.
type Limiter interface {
	Wait(ctx context.Context) error
}

// RateLimiter spaces calls evenly, perSecond a second, with no burst: a
// sweep must not flood a subnet's switches or IDS, so even spacing is
// what we want. Safe for concurrent use.
type RateLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	next time.Time // the earliest moment the next caller may go
}

// NewLimiter paces to perSecond calls a second (at least 1). now is the
// clock; nil means time.Now.
func NewLimiter(perSecond int, now func() time.Time) *RateLimiter {
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{interval: time.Second / time.Duration(max(perSecond, 1)), now: now}
}

// reserve books the next slot and says how long until it comes.
func (l *RateLimiter) reserve() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.next.Before(now) {
		l.next = now
	}
	d := l.next.Sub(now)
	l.next = l.next.Add(l.interval)
	return d
}

// Wait blocks until the caller's slot. A cancelled waiter's slot stays
// used, which only makes the pace slower.
func (l *RateLimiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := l.reserve()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
