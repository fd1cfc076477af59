// Package dispatch is the long-poll layer over the phase-2 lease queue:
// an agent's Lease waits for work on its subnets until a wake-up arrives
// or its wait ends, always answering before the caller's deadline. One
// shared wake-up subscription per server process feeds every waiter. The
// Reaper returns expired leases to the queue and reports dead letters.
package dispatch

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
)

// Queue is the part of the lease queue that Lease needs.
type Queue interface {
	Lease(ctx context.Context, agentID string, subnets []netip.Prefix, max int, ttl time.Duration) ([]domain.Leased, error)
}

// Wakeups is a source of "subnet has work" notifications. It calls
// subscribed once it listens and wake for each notification, until ctx
// ends. store.LeaseQueue implements it with one Redis subscription.
type Wakeups interface {
	ListenWakeups(ctx context.Context, subscribed func(), wake func(netip.Prefix)) error
}

// Options tunes a Dispatcher. The zero value is usable.
type Options struct {
	// Recheck is how often a waiting Lease looks at the queue even
	// without a wake-up, covering wake-ups lost in a reconnect; default 5s.
	Recheck time.Duration
	// Margin is how long before the caller's context deadline a Lease
	// answers (empty if need be); default 1s.
	Margin time.Duration
	// MaxWait caps the wait a caller may ask for; default 30s.
	MaxWait time.Duration
	// Clock for deadlines; default time.Now. Timers are real.
	Clock func() time.Time
	Log   zerolog.Logger
}

// Dispatcher serves long-poll leases. Run must be running for wake-ups;
// without it a waiting Lease still finds work at each Recheck.
type Dispatcher struct {
	q     Queue
	w     Wakeups
	opts  Options
	ready chan struct{}
	once  sync.Once
	// stopping closes when Run ends, so that waiting leases answer at
	// once and the server's graceful stop does not wait out long-polls.
	stopping chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	waiters map[netip.Prefix]map[*waiter]struct{}
}

type waiter struct{ c chan struct{} }

// New builds a Dispatcher.
func New(q Queue, w Wakeups, o Options) *Dispatcher {
	if o.Recheck <= 0 {
		o.Recheck = 5 * time.Second
	}
	if o.Margin <= 0 {
		o.Margin = time.Second
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Dispatcher{q: q, w: w, opts: o, ready: make(chan struct{}), stopping: make(chan struct{}),
		waiters: make(map[netip.Prefix]map[*waiter]struct{})}
}

// Ready is closed once the wake-up subscription is first established.
func (d *Dispatcher) Ready() <-chan struct{} { return d.ready }

// Run holds the wake-up subscription and fans wake-ups out to waiting
// leases until ctx ends; it resubscribes after errors.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.stopOnce.Do(func() { close(d.stopping) })
	backoff := 100 * time.Millisecond
	for {
		err := d.w.ListenWakeups(ctx, func() {
			d.once.Do(func() { close(d.ready) })
			d.opts.Log.Debug().Msg("wake-up subscription ready")
		}, d.wake)
		if ctx.Err() != nil {
			return nil
		}
		d.opts.Log.Warn().Err(err).Dur("retry_in", backoff).Msg("wake-up subscription lost")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (d *Dispatcher) wake(p netip.Prefix) {
	p = p.Masked()
	d.mu.Lock()
	defer d.mu.Unlock()
	for w := range d.waiters[p] {
		select {
		case w.c <- struct{}{}:
		default: // already signalled
		}
	}
}

func (d *Dispatcher) register(subnets []netip.Prefix) *waiter {
	w := &waiter{c: make(chan struct{}, 1)}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range subnets {
		p = p.Masked()
		m := d.waiters[p]
		if m == nil {
			m = make(map[*waiter]struct{})
			d.waiters[p] = m
		}
		m[w] = struct{}{}
	}
	return w
}

func (d *Dispatcher) unregister(w *waiter, subnets []netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range subnets {
		p = p.Masked()
		delete(d.waiters[p], w)
		if len(d.waiters[p]) == 0 {
			delete(d.waiters, p)
		}
	}
}

// Waiting reports how many leases are waiting; for metrics and tests.
func (d *Dispatcher) Waiting() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := make(map[*waiter]struct{})
	for _, m := range d.waiters {
		for w := range m {
			seen[w] = struct{}{}
		}
	}
	return len(seen)
}

// Lease returns up to max jobs for the agent's subnets, waiting up to
// wait (capped by MaxWait) for work to arrive. It answers, possibly empty,
// at least Margin before ctx's deadline, so the caller's RPC never times
// out while a lease is being handed over.
func (d *Dispatcher) Lease(ctx context.Context, agentID string, subnets []netip.Prefix, max int, ttl, wait time.Duration) ([]domain.Leased, error) {
	if len(subnets) == 0 {
		return nil, fmt.Errorf("dispatch: lease: %w", domain.InvalidField("subnets", "", "at least one subnet is required"))
	}
	wait = min(wait, d.opts.MaxWait)
	end := d.opts.Clock().Add(wait)
	if dl, ok := ctx.Deadline(); ok {
		if e := dl.Add(-d.opts.Margin); e.Before(end) {
			end = e
		}
	}
	// Register before the first look so that a wake-up between the look
	// and the wait is not lost.
	w := d.register(subnets)
	defer d.unregister(w, subnets)
	for {
		jobs, err := d.q.Lease(ctx, agentID, subnets, max, ttl)
		if err != nil || len(jobs) > 0 {
			return jobs, err
		}
		left := end.Sub(d.opts.Clock())
		if left <= 0 {
			return nil, nil
		}
		t := time.NewTimer(min(left, d.opts.Recheck))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-w.c:
			t.Stop()
		case <-d.stopping:
			t.Stop()
			return nil, nil
		case <-t.C:
		}
	}
}
