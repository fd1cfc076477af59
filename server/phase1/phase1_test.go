package phase1

import (
	"context"
	"errors"
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
				}}
			w := NewWorker(rdb, WorkerConfig{Concurrency: 4, ShutdownTimeout: time.Second}, s, s, zerolog.Nop())
			// Retry at once so the test does not wait for real backoff.
			w.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 4, Queues: Queues,
				RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 0 }, Logger: asynqLogger{zerolog.Nop()},
				DelayedTaskCheckInterval: 200 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-ran })

			client := asynq.NewClientFromRedisClient(rdb)
			enq := NewEnqueuer(client, 2, time.Minute)
			for _, dev := range []string{"transient", "permanent", "exhausted", "ok"} {
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
			wantFailed := map[string]bool{"permanent": true, "exhausted": true}
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
			if s.calls["transient"] != 2 {
				t.Errorf("transient: %d calls, want 2", s.calls["transient"])
			}
		})
	}
}
