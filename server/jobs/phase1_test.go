package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// scripted fails each device's first calls as told, then succeeds.
type scripted struct {
	mu         sync.Mutex
	calls      map[string]int
	errs       map[string][]error
	done       chan string
	failed     chan string
	failureErr map[string]error
}

func (s *scripted) Handle(_ context.Context, t Task) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.calls[t.DeviceID]
	s.calls[t.DeviceID]++
	if n < len(s.errs[t.DeviceID]) {
		return s.errs[t.DeviceID][n]
	}
	s.done <- t.DeviceID
	return nil
}

func (s *scripted) FailJob(_ context.Context, t Task, err error) error {
	s.mu.Lock()
	s.failureErr[t.DeviceID] = err
	s.mu.Unlock()
	s.failed <- t.DeviceID
	return nil
}

func backends(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"redis":    func(t *testing.T) string { return testpeers.Redis(t) },
		"embedded": func(t *testing.T) string { return testpeers.Miniredis(t) },
	}
}

func TestWorker(t *testing.T) {
	for name, addr := range backends(t) {
		t.Run(name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: addr(t)})
			t.Cleanup(func() { rdb.Close() })
			s := &scripted{calls: map[string]int{}, done: make(chan string, 10), failed: make(chan string, 10),
				failureErr: map[string]error{},
				errs: map[string][]error{
					"transient": {errors.New("directory busy")},
					"permanent": {domain.Permanent(errors.New("duplicate SPN"))},
					"exhausted": {errors.New("x"), errors.New("y"), errors.New("z")},
					// A cancelled call inside the handler (an LDAP or CA
					// request) is a failure like any other, though its
					// error wraps context.Canceled: it is counted and
					// ends the job, never retried uncounted forever.
					"inner-cancel": {fmt.Errorf("ldap: %w", context.Canceled), fmt.Errorf("ldap: %w", context.Canceled),
						fmt.Errorf("ldap: %w", context.Canceled)},
				}}
			// The production server and classifier; only the retry delay
			// is shortened so the test does not wait for real backoff.
			w := NewWorker(rdb, WorkerConfig{Concurrency: 4, ShutdownTimeout: time.Second,
				RetryDelay: func(int) time.Duration { return 0 }, RetryCheck: 200 * time.Millisecond}, s, s, zerolog.Nop())
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-ran })

			client := asynq.NewClientFromRedisClient(rdb)
			enq := NewEnqueuer(client, 2, time.Minute)
			for _, dev := range []string{"transient", "permanent", "exhausted", "inner-cancel", "ok"} {
				task := Task{JobID: "b1:" + dev, BatchID: "b1", DeviceID: dev, Kind: domain.KindProvision}
				if err := enq.Enqueue(ctx, task, QueueDefault); err != nil {
					t.Fatalf("enqueue %s: %v", dev, err)
				}
			}
			// Task IDs are per job: the same job queued again is a duplicate.
			dup := Task{JobID: "b1:ok", BatchID: "b1", DeviceID: "ok", Kind: domain.KindProvision}
			if err := enq.Enqueue(ctx, dup, QueueDefault); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("duplicate enqueue: %v, want ErrDuplicate", err)
			}
			if err := enq.Enqueue(ctx, Task{JobID: "x", DeviceID: "d", Kind: "reboot"}, QueueDefault); err == nil {
				t.Fatal("bad kind accepted")
			}

			wantDone := map[string]bool{"transient": true, "ok": true}
			wantFailed := map[string]bool{"permanent": true, "exhausted": true, "inner-cancel": true}
			deadline := time.After(60 * time.Second)
			for len(wantDone)+len(wantFailed) > 0 {
				select {
				case d := <-s.done:
					if !wantDone[d] {
						t.Fatalf("%s succeeded unexpectedly", d)
					}
					delete(wantDone, d)
				case d := <-s.failed:
					if !wantFailed[d] {
						t.Fatalf("%s failed unexpectedly", d)
					}
					delete(wantFailed, d)
				case <-deadline:
					t.Fatalf("still waiting: done %v failed %v", wantDone, wantFailed)
				}
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.calls["permanent"] != 1 {
				t.Errorf("permanent error retried: %d calls", s.calls["permanent"])
			}
			if s.calls["exhausted"] != 3 {
				t.Errorf("exhausted: %d calls, want 3 (1 + max_retry 2)", s.calls["exhausted"])
			}
			if s.calls["inner-cancel"] != 3 {
				t.Errorf("inner-cancel: %d calls, want 3 (1 + max_retry 2)", s.calls["inner-cancel"])
			}
			if s.calls["transient"] != 2 {
				t.Errorf("transient: %d calls, want 2", s.calls["transient"])
			}
		})
	}
}

// The production backoff through the real server: a task that fails once
// comes back after Backoff(0), between 1 s and 2 s, not at once and not
// after the next step of the ladder.
func TestWorkerBackoff(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	s := &timed{scripted: scripted{calls: map[string]int{}, done: make(chan string, 1), failed: make(chan string, 1),
		failureErr: map[string]error{}, errs: map[string][]error{"d": {errors.New("directory busy")}}}}
	w := NewWorker(rdb, WorkerConfig{Concurrency: 1, ShutdownTimeout: time.Second, RetryCheck: 100 * time.Millisecond}, s, s, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	if err := NewEnqueuer(asynq.NewClientFromRedisClient(rdb), 3, time.Minute).Enqueue(ctx,
		Task{JobID: "b1:d", BatchID: "b1", DeviceID: "d", Kind: domain.KindProvision}, QueueDefault); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-s.failed:
		t.Fatal("one transient failure ended the job")
	case <-time.After(30 * time.Second):
		t.Fatal("the retry never came")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.at) != 2 {
		t.Fatalf("%d calls, want 2", len(s.at))
	}
	// Backoff(0) is 1–2 s (TestBackoff checks the bounds). asynq keeps a
	// retry's time in whole seconds, so the retry may come up to a second
	// sooner, and the 100 ms check adds a little. What this proves is that
	// the production backoff is in use, not asynq's default of minutes.
	if gap := s.at[1].Sub(s.at[0]); gap <= 0 || gap > 3*time.Second {
		t.Fatalf("retry after %v, want Backoff(0) (1–2 s) less asynq's sub-second truncation, plus the 100 ms check", gap)
	}
}

// timed records when each call came.
type timed struct {
	scripted
	at []time.Time
}

func (s *timed) Handle(ctx context.Context, t Task) error {
	s.mu.Lock()
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	return s.scripted.Handle(ctx, t)
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int
		min, max time.Duration
	}{
		{"first retry", 0, time.Second, 2 * time.Second},
		{"third retry", 2, 4 * time.Second, 8 * time.Second},
		{"capped", 8, 150 * time.Second, 5 * time.Minute},
		{"far past the cap", 50, 150 * time.Second, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for range 50 {
				d := Backoff(tc.n)
				if d < tc.min || d > tc.max {
					t.Fatalf("Backoff(%d) = %v, want %v to %v", tc.n, d, tc.min, tc.max)
				}
				seen[d] = true
			}
			if len(seen) < 2 {
				t.Fatalf("Backoff(%d) has no jitter: %v", tc.n, seen)
			}
		})
	}
}
