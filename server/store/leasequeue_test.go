package store

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

var (
	netA = netip.MustParsePrefix("10.1.2.0/24")
	netB = netip.MustParsePrefix("fd00:1:2::/64")
)

func leaseOne(t *testing.T, e *env, agent string, ttl time.Duration) domain.Leased {
	t.Helper()
	got, err := e.q.Lease(e.ctx, agent, []netip.Prefix{netA}, 1, ttl)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("Lease returned %d jobs, want 1", len(got))
	}
	return got[0]
}

func enqueue(t *testing.T, e *env, subnet netip.Prefix, id string, payload string) {
	t.Helper()
	created, err := e.q.Enqueue(e.ctx, subnet, id, []byte(payload))
	if err != nil || !created {
		t.Fatalf("Enqueue %s: created=%v err=%v", id, created, err)
	}
}

func wantState(t *testing.T, e *env, id, state string, attempts int) {
	t.Helper()
	j, err := e.q.Job(e.ctx, netA, id)
	if err != nil {
		t.Fatalf("Job %s: %v", id, err)
	}
	if j.State != state || j.Attempts != attempts {
		t.Fatalf("job %s: state %s attempts %d, want %s %d", id, j.State, j.Attempts, state, attempts)
	}
}

func TestLeaseQueue(t *testing.T) {
	const ttl = 100 * time.Millisecond
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"lease opens the payload and counts the attempt", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "payload-1")
			l := leaseOne(t, e, "agent-1", ttl)
			if l.JobID != "j1" || string(l.Payload) != "payload-1" || l.Attempt != 1 || l.Subnet != netA {
				t.Fatalf("leased %+v", l)
			}
			if want := e.clock.Now().Add(ttl); !l.Deadline.Equal(want) {
				t.Fatalf("deadline %v, want %v", l.Deadline, want)
			}
			wantState(t, e, "j1", "leased", 1)
			if more, _ := e.q.Lease(e.ctx, "agent-2", []netip.Prefix{netA}, 5, ttl); len(more) != 0 {
				t.Fatalf("a leased job was handed out again: %+v", more)
			}
		}},
		{"enqueue is idempotent by job ID, also after completion", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "first")
			created, err := e.q.Enqueue(e.ctx, netA, "j1", []byte("second"))
			if err != nil || created {
				t.Fatalf("second Enqueue: created=%v err=%v", created, err)
			}
			if st, _ := e.q.Stats(e.ctx, netA); st.Pending != 1 {
				t.Fatalf("pending %d, want 1", st.Pending)
			}
			l := leaseOne(t, e, "a", ttl)
			if string(l.Payload) != "first" {
				t.Fatalf("payload %q, want the first one", l.Payload)
			}
			if err := e.q.Complete(e.ctx, netA, "j1", l.Token); err != nil {
				t.Fatal(err)
			}
			created, err = e.q.Enqueue(e.ctx, netA, "j1", []byte("third"))
			if err != nil || created {
				t.Fatalf("Enqueue after completion: created=%v err=%v", created, err)
			}
			if st, _ := e.q.Stats(e.ctx, netA); st != (domain.QueueStats{}) {
				t.Fatalf("stats %+v, want all zero", st)
			}
		}},
		{"expired lease returns to pending and the stale token is refused", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			first := leaseOne(t, e, "a", ttl)
			// Not yet expired: nothing to reap.
			if rr, err := e.q.Reap(e.ctx, netA, e.clock.Now().Add(ttl/2)); err != nil || rr.Requeued != 0 {
				t.Fatalf("early reap: %+v %v", rr, err)
			}
			e.clock.Add(2 * ttl)
			rr, err := e.q.Reap(e.ctx, netA, e.clock.Now())
			if err != nil || rr.Requeued != 1 || len(rr.Dead) != 0 {
				t.Fatalf("reap: %+v %v", rr, err)
			}
			wantState(t, e, "j1", "pending", 1)
			second := leaseOne(t, e, "b", ttl)
			if second.Attempt != 2 || second.Token == first.Token {
				t.Fatalf("re-lease %+v", second)
			}
			for name, call := range map[string]func() error{
				"complete": func() error { return e.q.Complete(e.ctx, netA, "j1", first.Token) },
				"extend":   func() error { _, err := e.q.Extend(e.ctx, netA, "j1", first.Token, ttl); return err },
				"release":  func() error { return e.q.Release(e.ctx, netA, "j1", first.Token) },
			} {
				if err := call(); !errors.Is(err, domain.ErrLeaseLost) {
					t.Errorf("%s with stale token: %v, want ErrLeaseLost", name, err)
				}
			}
			if err := e.q.Complete(e.ctx, netA, "j1", second.Token); err != nil {
				t.Fatalf("complete with current token: %v", err)
			}
		}},
		{"a deferred job comes back after the delay, not after a heartbeat's lease", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			l := leaseOne(t, e, "a", time.Hour)
			if err := e.q.Defer(e.ctx, netA, "j1", l.Token, ttl); err != nil {
				t.Fatal(err)
			}
			// The holder's heartbeat arrives after the failure was recorded.
			if _, err := e.q.Extend(e.ctx, netA, "j1", l.Token, time.Hour); !errors.Is(err, domain.ErrLeaseLost) {
				t.Fatalf("extend after defer: %v, want ErrLeaseLost", err)
			}
			if err := e.q.Defer(e.ctx, netA, "j1", l.Token, ttl); !errors.Is(err, domain.ErrLeaseLost) {
				t.Fatalf("second defer: %v", err)
			}
			e.clock.Add(2 * ttl)
			if rr, err := e.q.Reap(e.ctx, netA, e.clock.Now()); err != nil || rr.Requeued != 1 {
				t.Fatalf("reap after the delay: %+v %v", rr, err)
			}
			if again := leaseOne(t, e, "b", ttl); again.Attempt != 2 {
				t.Fatalf("re-lease %+v", again)
			}
		}},
		{"a token cannot complete twice", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			l := leaseOne(t, e, "a", ttl)
			if err := e.q.Complete(e.ctx, netA, "j1", l.Token); err != nil {
				t.Fatal(err)
			}
			if err := e.q.Complete(e.ctx, netA, "j1", l.Token); !errors.Is(err, domain.ErrAlreadyCompleted) {
				t.Fatalf("second complete: %v, want domain.ErrAlreadyCompleted", err)
			}
			if err := e.q.Complete(e.ctx, netA, "j1", "forged"); !errors.Is(err, domain.ErrLeaseLost) {
				t.Fatalf("complete with a forged token: %v, want ErrLeaseLost", err)
			}
			wantState(t, e, "j1", "completed", 1)
			ttlLeft, err := e.rdb.PTTL(e.ctx, e.q.jobKey(netA, "j1")).Result()
			if err != nil || ttlLeft <= 0 || ttlLeft > 24*time.Hour {
				t.Fatalf("completed job TTL %v (%v), want within the 24h retention", ttlLeft, err)
			}
			if p, _ := e.rdb.HExists(e.ctx, e.q.jobKey(netA, "j1"), "p").Result(); p {
				t.Fatal("completed job still holds its payload")
			}
		}},
		{"extend keeps the lease past its first deadline", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			l := leaseOne(t, e, "a", ttl)
			e.clock.Add(ttl / 2)
			dl, err := e.q.Extend(e.ctx, netA, "j1", l.Token, ttl)
			if err != nil || !dl.Equal(e.clock.Now().Add(ttl)) {
				t.Fatalf("extend: %v %v", dl, err)
			}
			if rr, _ := e.q.Reap(e.ctx, netA, l.Deadline); rr.Requeued != 0 {
				t.Fatalf("reaped an extended lease: %+v", rr)
			}
			if rr, _ := e.q.Reap(e.ctx, netA, dl); rr.Requeued != 1 {
				t.Fatalf("did not reap at the new deadline: %+v", rr)
			}
		}},
		{"extend many reports each lease", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			enqueue(t, e, netA, "j2", "p")
			l1, l2 := leaseOne(t, e, "a", ttl), leaseOne(t, e, "a", ttl)
			if err := e.q.Complete(e.ctx, netA, l2.JobID, l2.Token); err != nil {
				t.Fatal(err)
			}
			dl, errs, err := e.q.ExtendMany(e.ctx, []domain.LeaseRef{
				{Subnet: netA, JobID: l1.JobID, Token: l1.Token}, {Subnet: netA, JobID: l2.JobID, Token: l2.Token},
				{Subnet: netA, JobID: "j1", Token: "stale"}, {Subnet: netip.Prefix{}, JobID: "x", Token: "y"},
			}, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var fe *domain.FieldError
			if errs[0] != nil || !errors.Is(errs[1], domain.ErrAlreadyCompleted) || !errors.Is(errs[2], domain.ErrLeaseLost) || !errors.As(errs[3], &fe) {
				t.Fatalf("errs %v", errs)
			}
			if j, _ := e.q.Job(e.ctx, netA, "j1"); !j.Deadline.Equal(dl) {
				t.Fatalf("deadline %v, want %v", j.Deadline, dl)
			}
		}},
		{"release returns the job at once without burning the attempt", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			enqueue(t, e, netA, "j2", "p")
			l := leaseOne(t, e, "a", ttl)
			if err := e.q.Release(e.ctx, netA, l.JobID, l.Token); err != nil {
				t.Fatal(err)
			}
			wantState(t, e, "j1", "pending", 0)
			again := leaseOne(t, e, "b", ttl)
			if again.JobID != "j1" || again.Attempt != 1 {
				t.Fatalf("after release got %s attempt %d, want j1 attempt 1", again.JobID, again.Attempt)
			}
		}},
		{"dead letter after max attempts", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "j1", "p")
			for attempt := 1; attempt <= 3; attempt++ {
				l := leaseOne(t, e, "a", ttl)
				if l.Attempt != attempt {
					t.Fatalf("attempt %d, want %d", l.Attempt, attempt)
				}
				e.clock.Add(2 * ttl)
				rr, err := e.q.Reap(e.ctx, netA, e.clock.Now())
				if err != nil {
					t.Fatal(err)
				}
				wantDead := attempt == 3
				if wantDead != (len(rr.Dead) == 1) || !wantDead && rr.Requeued != 1 {
					t.Fatalf("attempt %d: reap %+v", attempt, rr)
				}
			}
			wantState(t, e, "j1", "dead", 3)
			dead, err := e.q.DeadLetters(e.ctx, netA)
			if err != nil || !slices.Equal(dead, []string{"j1"}) {
				t.Fatalf("dead letters %v %v", dead, err)
			}
			if got, _ := e.q.Lease(e.ctx, "a", []netip.Prefix{netA}, 1, ttl); len(got) != 0 {
				t.Fatalf("dead job leased again: %+v", got)
			}
			if created, _ := e.q.Enqueue(e.ctx, netA, "j1", []byte("p")); created {
				t.Fatal("dead job re-enqueued within the retention")
			}
		}},
		{"lease spans subnets and registers them for the reaper", func(t *testing.T, e *env) {
			enqueue(t, e, netA, "a1", "pa")
			enqueue(t, e, netB, "b1", "pb")
			got, err := e.q.Lease(e.ctx, "a", []netip.Prefix{netA, netB}, 10, ttl)
			if err != nil || len(got) != 2 {
				t.Fatalf("lease: %d jobs, %v", len(got), err)
			}
			for _, l := range got {
				want := map[string]string{"a1": "pa", "b1": "pb"}[l.JobID]
				if string(l.Payload) != want {
					t.Errorf("job %s payload %q, want %q", l.JobID, l.Payload, want)
				}
			}
			subnets, err := e.q.Subnets(e.ctx)
			slices.SortFunc(subnets, netip.Prefix.Compare)
			if err != nil || !slices.Equal(subnets, []netip.Prefix{netA, netB}) {
				t.Fatalf("subnets %v %v", subnets, err)
			}
		}},
		{"bad input names the field", func(t *testing.T, e *env) {
			_, err := e.q.Enqueue(e.ctx, netip.Prefix{}, "j", nil)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != "subnet" {
				t.Fatalf("enqueue with no subnet: %v", err)
			}
			if _, err := e.q.Lease(e.ctx, "a", []netip.Prefix{netA}, 0, ttl); !errors.As(err, &fe) || fe.Field != "max_jobs" {
				t.Fatalf("lease max 0: %v", err)
			}
		}},
	}
	backends(t, QueueOptions{MaxAttempts: 3}, func(t *testing.T, e0 *env) {
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				// One server per backend; a prefix per case keeps cases apart.
				e := *e0
				e.s = New(e0.rdb, e0.s.sealer, Options{Prefix: fmt.Sprintf("t%d", i), Clock: e0.clock.Now})
				e.clock = e0.clock
				e.q = NewLeaseQueue(e.s, QueueOptions{MaxAttempts: 3})
				tc.run(t, &e)
			})
		}
	})
}

func TestConcurrentLeasersNeverShareAJob(t *testing.T) {
	const jobs, leasers = 300, 32
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		for i := range jobs {
			enqueue(t, e, netA, fmt.Sprintf("job-%03d", i), "p")
		}
		var mu sync.Mutex
		seen := make(map[string]string)
		var errs []error
		fail := func(err error) {
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
		}
		var wg sync.WaitGroup
		for w := range leasers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				agent := fmt.Sprintf("agent-%d", w)
				for range jobs { // bounded: never more rounds than jobs
					got, err := e.q.Lease(e.ctx, agent, []netip.Prefix{netA}, 3, time.Minute)
					if err != nil {
						fail(err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, l := range got {
						if prev, dup := seen[l.JobID]; dup {
							errs = append(errs, fmt.Errorf("job %s leased by %s and %s", l.JobID, prev, agent))
						}
						seen[l.JobID] = agent
					}
					mu.Unlock()
					for _, l := range got {
						if err := e.q.Complete(e.ctx, l.Subnet, l.JobID, l.Token); err != nil {
							fail(err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs[:min(len(errs), 5)] {
			t.Error(err)
		}
		if len(seen) != jobs {
			t.Fatalf("%d distinct jobs leased, want %d", len(seen), jobs)
		}
	})
}

func TestConcurrentEnqueueSameID(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := e.q.Enqueue(e.ctx, netA, "same", []byte("p"))
				if err != nil {
					t.Error(err)
				}
				if c {
					mu.Lock()
					created++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		st, _ := e.q.Stats(e.ctx, netA)
		if created != 1 || st.Pending != 1 {
			t.Fatalf("created %d times, %d pending; want 1 and 1", created, st.Pending)
		}
	})
}
