package dispatch

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/store"
)

var _ UnservedQueue = (*store.LeaseQueue)(nil)

// Jobs fail only on a subnet whose agents have been silent (or absent)
// for longer than the deadline, and only those that waited that long.
func TestUnservedJobsFail(t *testing.T) {
	backends(t, store.QueueOptions{}, func(t *testing.T, e *env) {
		ctx := context.Background()
		start := e.clock.Now()
		var (
			live   = netip.MustParsePrefix("10.7.1.0/24") // its agent heartbeats
			gone   = netip.MustParsePrefix("10.7.2.0/24") // its agent went silent long ago
			never  = netip.MustParsePrefix("10.7.3.0/24") // no agent at all
			recent = netip.MustParsePrefix("10.7.4.0/24") // its agent went silent a moment ago
		)
		enqueue := func(p netip.Prefix, id string) {
			t.Helper()
			if _, err := e.q.Enqueue(ctx, p, id, []byte("payload")); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []netip.Prefix{live, gone, never, recent} {
			enqueue(p, "b1:old-"+p.Addr().String())
		}
		e.clock.Add(50 * time.Minute)
		enqueue(never, "b2:young")
		now := e.clock.Now()
		agents := []domain.Agent{
			{ID: "a-live", Subnets: []netip.Prefix{live}, LastHeartbeat: now.Add(-10 * time.Second)},
			{ID: "a-gone", Subnets: []netip.Prefix{gone}, LastHeartbeat: start.Add(-time.Hour)},
			{ID: "a-recent", Subnets: []netip.Prefix{recent}, LastHeartbeat: now.Add(-5 * time.Minute)},
		}
		failed := map[netip.Prefix][]string{}
		reasons := map[netip.Prefix]string{}
		u := NewUnserved(e.q, UnservedOptions{Deadline: 30 * time.Minute, LiveWithin: 2 * time.Minute, Clock: e.clock.Now,
			Agents: func(context.Context) ([]domain.Agent, error) { return agents, nil },
			OnFailed: func(_ context.Context, p netip.Prefix, ids []string, reason string) error {
				failed[p], reasons[p] = append(failed[p], ids...), reason
				return nil
			}})
		if err := u.Once(ctx); err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(func(yield func(string) bool) {
			for p, ids := range failed {
				for _, id := range ids {
					if !yield(p.String() + "=" + id) {
						return
					}
				}
			}
		}); strings.Join(got, " ") != "10.7.2.0/24=b1:old-10.7.2.0 10.7.3.0/24=b1:old-10.7.3.0" {
			t.Fatalf("failed %v", got)
		}
		sum, details, _ := strings.Cut(reasons[gone], "\n")
		if sum != "no live agent serves 10.7.2.0/24" || !strings.Contains(details, "30m0s (phase2.unserved_deadline)") ||
			!strings.Contains(details, "last seen") || !strings.Contains(reasons[never], "no agent serving it has ever been seen") {
			t.Errorf("reasons %q", reasons)
		}
		for p, want := range map[netip.Prefix]int64{live: 1, gone: 0, never: 1, recent: 1} {
			st, err := e.q.Stats(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Pending != want {
				t.Errorf("%s: %d pending, want %d", p, st.Pending, want)
			}
		}
		if dead, _ := e.q.DeadLetters(ctx, gone); len(dead) != 1 {
			t.Errorf("dead letters of %s: %v", gone, dead)
		}
		// A second pass finds nothing more to fail.
		clear(failed)
		if err := u.Once(ctx); err != nil || len(failed) != 0 {
			t.Errorf("second pass: %v %v", failed, err)
		}
	})
}
