package agent_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/api/apitest"
)

// leaseTTL is short so that a lease the agent fails to extend is reaped
// within the test, yet long enough that a heartbeat at a third of it is
// not missed on a loaded 2-core machine (it still proves the agent does not
// wait for its 30 s default).
const leaseTTL = 3 * time.Second

// funcExecutor runs each attempt through run and counts attempts per job.
type funcExecutor struct {
	mu   sync.Mutex
	runs map[string]int
	run  func(ctx context.Context, attempt int, j *pb.Phase2Job, rep phase2.Reporter) phase2.Result
}

func (f *funcExecutor) Run(ctx context.Context, j *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
	f.mu.Lock()
	f.runs[j.GetLease().GetJobId()]++
	n := f.runs[j.GetLease().GetJobId()]
	f.mu.Unlock()
	return f.run(ctx, n, j, rep)
}

func (f *funcExecutor) attempts(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[id]
}

// work reports a step, then works for d unless ctx ends first.
func work(ctx context.Context, rep phase2.Reporter, d time.Duration) phase2.Result {
	rep.Step(ctx, "work", domain.OutcomeStarted, "")
	select {
	case <-ctx.Done():
		return phase2.Result{Err: ctx.Err(), ErrorStep: "work"}
	case <-time.After(d):
	}
	rep.Step(ctx, "work", domain.OutcomeOK, "")
	return phase2.Result{Facts: &pb.DeviceFacts{AmtVersion: "12.0"}}
}

// faults is a client interceptor standing in for a server that hangs on
// ReportProgress or cannot be reached for Heartbeat.
type faults struct {
	hangProgress, failHeartbeat atomic.Bool
	// failCompleteUntil (Unix ms) makes Complete fail as a restarting
	// server's would until then.
	failCompleteUntil atomic.Int64
}

func (f *faults) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch {
	case f.hangProgress.Load() && strings.HasSuffix(method, "/ReportProgress"):
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	case f.failHeartbeat.Load() && strings.HasSuffix(method, "/Heartbeat"):
		return status.Error(codes.Unavailable, "injected: server unreachable")
	case strings.HasSuffix(method, "/Complete") && time.Now().UnixMilli() < f.failCompleteUntil.Load():
		return status.Error(codes.Unavailable, "injected: server restarting")
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// leaseServer runs a server with a short lease TTL and its reaper.
func leaseServer(t *testing.T) *apitest.Server {
	t.Helper()
	return apitest.Start(t, apitest.Options{API: api.Options{LeaseTTL: leaseTTL}, Reap: 100 * time.Millisecond})
}

// startAgent runs an agent with ex and the fault interceptor until the
// test ends.
func startAgent(t *testing.T, s *apitest.Server, ex agent.Executor, f *faults) {
	t.Helper()
	cfg := agentConfig(t, s)
	cfg.Concurrency, cfg.LongPoll = 4, 200*time.Millisecond
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithExecutor(ex),
		agent.WithBootstrapToken(s.Token(t, "10.1.0.0/24")), agent.WithBackoff(10*time.Millisecond, 100*time.Millisecond),
		agent.WithShutdownGrace(100*time.Millisecond), agent.WithDialOptions(grpc.WithUnaryInterceptor(f.intercept)))
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, a)
}

// succeeded waits until batch has one success and no failure.
func succeeded(t *testing.T, s *apitest.Server, batch string) {
	t.Helper()
	waitFor(t, batch+" succeeded", func() bool {
		b, err := s.Store.GetBatch(context.Background(), batch)
		if err == nil && b.Failed > 0 {
			t.Fatalf("batch %s: %d failed", batch, b.Failed)
		}
		return err == nil && b.Succeeded == 1
	})
}

// A job that outlives several lease TTLs keeps its lease: the agent
// heartbeats at the TTL the server announced, not at its 30 s default,
// and a server hanging on progress reports does not hold up the
// heartbeat, nor the completion.
func TestLeaseOutlivesTTL(t *testing.T) {
	cases := []struct {
		name         string
		hangProgress bool
	}{
		{"heartbeat follows the announced TTL", false},
		{"progress reports hang", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := leaseServer(t)
			f := &faults{}
			f.hangProgress.Store(tc.hangProgress)
			ex := &funcExecutor{runs: map[string]int{}, run: func(ctx context.Context, _ int, _ *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
				return work(ctx, rep, 3*leaseTTL)
			}}
			startAgent(t, s, ex, f)
			id := s.Job(t, "long", "10.1.0.0/24", "10.1.0.20", domain.KindProvision)
			succeeded(t, s, "long")
			if n := ex.attempts(id); n != 1 {
				t.Errorf("job ran %d times, want once (the lease was lost)", n)
			}
		})
	}
}

// A stale attempt — its lease reaped while the agent could not reach the
// server, the job leased again to the same agent — stops as soon as the
// agent learns of the new lease, and its late cleanup does not take the
// new attempt's lease out of the heartbeat.
func TestStaleAttemptYieldsToNewLease(t *testing.T) {
	s := leaseServer(t)
	f := &faults{}
	second := make(chan struct{})
	var staleCancelled atomic.Bool
	ex := &funcExecutor{runs: map[string]int{}}
	ex.run = func(ctx context.Context, attempt int, _ *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
		switch attempt {
		case 1:
			// The server becomes unreachable for heartbeats: the lease is
			// reaped and the job leased again.
			f.failHeartbeat.Store(true)
			select {
			case <-ctx.Done():
			case <-second:
			case <-time.After(15 * time.Second):
			}
			// ctx must be done by the time the second attempt has started.
			select {
			case <-second:
				staleCancelled.Store(ctx.Err() != nil)
			case <-time.After(15 * time.Second):
			}
			// A device call in flight finishes late.
			time.Sleep(2 * leaseTTL)
			return phase2.Result{Err: context.Cause(ctx), ErrorStep: "work"}
		case 2:
			f.failHeartbeat.Store(false)
			close(second)
			return work(ctx, rep, 4*leaseTTL)
		}
		return phase2.Result{Err: context.Canceled, ErrorStep: "third attempt"}
	}
	startAgent(t, s, ex, f)
	id := s.Job(t, "stale", "10.1.0.0/24", "10.1.0.21", domain.KindProvision)
	succeeded(t, s, "stale")
	if !staleCancelled.Load() {
		t.Errorf("the stale attempt was still running when the new one started")
	}
	if n := ex.attempts(id); n != 2 {
		t.Errorf("job ran %d times, want 2 (the stale attempt and the one that succeeded)", n)
	}
}

// A result the server cannot take for longer than a quick retry (a
// restart, a Redis outage) is delivered once it can: the device is not
// done again (issue 14 item 7: the agent gave up after 15 s).
func TestCompleteOutlastsAnOutage(t *testing.T) {
	s := leaseServer(t)
	f := &faults{}
	f.failCompleteUntil.Store(time.Now().Add(17 * time.Second).UnixMilli())
	ex := &funcExecutor{runs: map[string]int{}, run: func(ctx context.Context, _ int, _ *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
		return work(ctx, rep, 10*time.Millisecond)
	}}
	startAgent(t, s, ex, f)
	id := s.Job(t, "outage", "10.1.0.0/24", "10.1.0.21", domain.KindProvision)
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, err := s.Store.GetBatch(context.Background(), "outage")
		if err == nil && b.Succeeded+b.Failed == 1 {
			if b.Failed != 0 {
				t.Fatalf("batch failed: %+v", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never completed")
		}
	}
	if n := ex.attempts(id); n != 1 {
		t.Errorf("job ran %d times, want once", n)
	}
	if time.Now().UnixMilli() < f.failCompleteUntil.Load() {
		t.Error("the job completed while Complete was failing")
	}
}

// An attempt whose lease runs out with no heartbeat extending it (the
// server unreachable, the agent frozen) stops by the agent's own clock
// before the server can lease the job again: a stale attempt never works
// the device alongside the new one (issue 14 item 4, seen as EOFs and
// refusals when a frozen agent resumed and both attempts ran).
func TestAttemptStopsWhenItsLeaseRunsOut(t *testing.T) {
	s := leaseServer(t)
	f := &faults{}
	var staleStopped, secondStarted atomic.Int64 // Unix µs
	ex := &funcExecutor{runs: map[string]int{}}
	ex.run = func(ctx context.Context, attempt int, _ *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
		if attempt == 1 {
			f.failHeartbeat.Store(true)
			select {
			case <-ctx.Done():
				staleStopped.Store(time.Now().UnixMicro())
			case <-time.After(4 * leaseTTL):
			}
			return phase2.Result{Err: context.Cause(ctx), ErrorStep: "work"}
		}
		secondStarted.Store(time.Now().UnixMicro())
		f.failHeartbeat.Store(false)
		return work(ctx, rep, 10*time.Millisecond)
	}
	startAgent(t, s, ex, f)
	id := s.Job(t, "fenced", "10.1.0.0/24", "10.1.0.22", domain.KindProvision)
	succeeded(t, s, "fenced")
	stopped, second := staleStopped.Load(), secondStarted.Load()
	if stopped == 0 || second == 0 || stopped >= second {
		t.Fatalf("stale attempt stopped at %d µs, the new one began at %d µs; want the stale one stopped first", stopped, second)
	}
	if n := ex.attempts(id); n != 2 {
		t.Errorf("job ran %d times, want 2", n)
	}
}
