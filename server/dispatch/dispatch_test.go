package dispatch

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/store"
)

var netA = netip.MustParsePrefix("10.1.2.0/24")

// The store's queue is what the server wires in.
var (
	_ Queue     = (*store.LeaseQueue)(nil)
	_ Wakeups   = (*store.LeaseQueue)(nil)
	_ ReapQueue = (*store.LeaseQueue)(nil)
)

type env struct {
	q     *store.LeaseQueue
	clock *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// backends runs fn against a private redis-server and against miniredis.
func backends(t *testing.T, qo store.QueueOptions, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range []struct {
		name  string
		start func(testing.TB) string
	}{{"redis", testpeers.Redis}, {"miniredis", testpeers.Miniredis}} {
		t.Run(b.name, func(t *testing.T) {
			addr := b.start(t)
			rdb, err := store.Dial(context.Background(), store.DialOptions{Addrs: []string{addr}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			sealer, err := secrets.New(bytes.Repeat([]byte{3}, 32))
			if err != nil {
				t.Fatal(err)
			}
			c := &clock{t: time.Now()}
			s := store.New(rdb, sealer, store.Options{Clock: c.Now})
			fn(t, &env{q: store.NewLeaseQueue(s, qo), clock: c})
		})
	}
}

// runDispatcher starts d.Run and waits for its subscription.
func runDispatcher(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-d.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("wake-up subscription not ready")
	}
}

func TestLongPoll(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, e *env, d *Dispatcher)
	}{
		{"work already queued is returned at once", func(t *testing.T, e *env, d *Dispatcher) {
			if _, err := e.q.Enqueue(context.Background(), netA, "j0", []byte("p")); err != nil {
				t.Fatal(err)
			}
			got, err := d.Lease(context.Background(), "a", []netip.Prefix{netA}, 5, time.Minute, time.Hour)
			if err != nil || len(got) != 1 || got[0].JobID != "j0" {
				t.Fatalf("lease %+v %v", got, err)
			}
		}},
		{"a waiting lease wakes on enqueue", func(t *testing.T, e *env, d *Dispatcher) {
			// Recheck is an hour: only the wake-up can deliver the job.
			type result struct {
				jobs []domain.Leased
				err  error
			}
			res := make(chan result, 1)
			go func() {
				jobs, err := d.Lease(context.Background(), "a", []netip.Prefix{netA}, 5, time.Minute, time.Hour)
				res <- result{jobs, err}
			}()
			waitFor(t, func() bool { return d.Waiting() == 1 })
			if _, err := e.q.Enqueue(context.Background(), netA, "j1", []byte("p")); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-res:
				if r.err != nil || len(r.jobs) != 1 || r.jobs[0].JobID != "j1" {
					t.Fatalf("woken lease %+v %v", r.jobs, r.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("lease not woken by enqueue")
			}
			if d.Waiting() != 0 {
				t.Fatalf("%d waiters left behind", d.Waiting())
			}
		}},
		{"empty answer before the caller's deadline", func(t *testing.T, e *env, d *Dispatcher) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			got, err := d.Lease(ctx, "a", []netip.Prefix{netA}, 5, time.Minute, time.Hour)
			if err != nil || len(got) != 0 {
				t.Fatalf("lease %+v %v, want empty and no error", got, err)
			}
			if ctx.Err() != nil {
				t.Fatal("answered after the caller's deadline")
			}
		}},
		{"no subnets is bad input", func(t *testing.T, e *env, d *Dispatcher) {
			var fe *domain.FieldError
			if _, err := d.Lease(context.Background(), "a", nil, 1, time.Minute, time.Hour); !errors.As(err, &fe) || fe.Field != "subnets" {
				t.Fatalf("lease without subnets: %v", err)
			}
		}},
		{"wait shorter than the deadline ends the poll", func(t *testing.T, e *env, d *Dispatcher) {
			got, err := d.Lease(context.Background(), "a", []netip.Prefix{netA}, 5, time.Minute, 50*time.Millisecond)
			if err != nil || len(got) != 0 {
				t.Fatalf("lease %+v %v", got, err)
			}
		}},
		{"many waiters share the one subscription", func(t *testing.T, e *env, d *Dispatcher) {
			const waiters = 8
			var g errgroup.Group
			var mu sync.Mutex
			var ids []string
			for range waiters {
				g.Go(func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					jobs, err := d.Lease(ctx, "a", []netip.Prefix{netA}, 1, time.Minute, 15*time.Second)
					mu.Lock()
					for _, j := range jobs {
						ids = append(ids, j.JobID)
					}
					mu.Unlock()
					return err
				})
			}
			waitFor(t, func() bool { return d.Waiting() == waiters })
			for i := range waiters {
				if _, err := e.q.Enqueue(context.Background(), netA, "m"+string(rune('a'+i)), []byte("p")); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			slices.Sort(ids)
			if len(slices.Compact(ids)) != waiters {
				t.Fatalf("waiters got %v, want %d distinct jobs", ids, waiters)
			}
		}},
	}
	backends(t, store.QueueOptions{}, func(t *testing.T, e *env) {
		// Stopping the dispatcher answers waiting leases at once, so a
		// server's graceful stop does not wait out the long-polls.
		t.Run("stopping answers waiting leases", func(t *testing.T) {
			d := New(e.q, e.q, Options{Recheck: time.Hour, MaxWait: time.Hour, Log: zerolog.Nop()})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			<-d.Ready()
			res := make(chan error, 1)
			go func() {
				jobs, err := d.Lease(context.Background(), "a", []netip.Prefix{netA}, 1, time.Minute, time.Hour)
				if err == nil && len(jobs) != 0 {
					err = errors.New("got jobs from an empty queue")
				}
				res <- err
			}()
			waitFor(t, func() bool { return d.Waiting() == 1 })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-res:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a waiting lease outlived the dispatcher")
			}
		})
	})
	backends(t, store.QueueOptions{}, func(t *testing.T, e *env) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				d := New(e.q, e.q, Options{Recheck: time.Hour, Margin: 100 * time.Millisecond, MaxWait: time.Hour, Log: zerolog.Nop()})
				runDispatcher(t, d)
				tc.run(t, e, d)
			})
		}
	})
}

// waitFor polls a condition that another goroutine makes true soon.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestReaper(t *testing.T) {
	backends(t, store.QueueOptions{MaxAttempts: 2}, func(t *testing.T, e *env) {
		ctx := context.Background()
		var mu sync.Mutex
		var dead []string
		r := NewReaper(e.q, ReaperOptions{Clock: e.clock.Now, Log: zerolog.Nop(),
			OnDead: func(_ context.Context, subnet netip.Prefix, ids []string) error {
				mu.Lock()
				defer mu.Unlock()
				if subnet != netA {
					t.Errorf("dead letters reported for %s", subnet)
				}
				dead = append(dead, ids...)
				return nil
			}})
		if _, err := e.q.Enqueue(ctx, netA, "j1", []byte("p")); err != nil {
			t.Fatal(err)
		}
		for attempt := 1; attempt <= 2; attempt++ {
			l, err := e.q.Lease(ctx, "a", []netip.Prefix{netA}, 1, 100*time.Millisecond)
			if err != nil || len(l) != 1 {
				t.Fatalf("attempt %d: lease %+v %v", attempt, l, err)
			}
			e.clock.Add(time.Second)
			if err := r.ReapOnce(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(dead, []string{"j1"}) {
			t.Fatalf("dead letters reported %v, want [j1]", dead)
		}

		// Run stops with its context.
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}
