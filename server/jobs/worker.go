package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Handler does the phase-1 work of one task. It must be idempotent: asynq
// may run it again after a crash or a retry.
type Handler interface {
	Handle(ctx context.Context, t Task) error
}

// Recorder records a task's final failure on its job and device.
type Recorder interface {
	FailJob(ctx context.Context, t Task, err error) error
}

// Worker serves the phase-1 queues.
type Worker struct {
	srv      *asynq.Server
	extra    map[string]asynq.Handler
	handler  Handler
	recorder Recorder
	log      zerolog.Logger
}

// WorkerConfig tunes the worker.
type WorkerConfig struct {
	Concurrency     int
	ShutdownTimeout time.Duration
	// Extra serves other task types on the same queues and workers, keyed
	// by asynq task type (the auto-provisioning sweep: sweep.TaskType).
	// They must not use a "phase1:" type.
	Extra map[string]asynq.Handler
	// RetryDelay is the wait before retry n+1 of a failed task; default
	// Backoff. Tests shorten it; the failure classifier stays the same.
	RetryDelay func(n int) time.Duration
	// RetryCheck is how often retries that are due go back on their
	// queue; default asynq's 5s.
	RetryCheck time.Duration
}

// errTaskCancelled marks a handler error that came from its task's own
// context being cancelled (asynq's CancelProcessing): asynq retries it
// without counting an attempt. Any other error, even one wrapping
// context.Canceled (a cancelled LDAP or CA call), is a failure and counts.
var errTaskCancelled = errors.New("phase1: task cancelled")

// isFailure is the worker's failure classifier. asynq itself reports a
// cancelled task context as the bare context.Canceled.
func isFailure(err error) bool { return err != context.Canceled && !errors.Is(err, errTaskCancelled) }

// NewWorker builds a worker on rdb. The caller owns rdb.
func NewWorker(rdb redis.UniversalClient, cfg WorkerConfig, h Handler, rec Recorder, log zerolog.Logger) *Worker {
	w := &Worker{handler: h, recorder: rec, log: log, extra: cfg.Extra}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	delay := cfg.RetryDelay
	if delay == nil {
		delay = Backoff
	}
	w.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   Queues,
		RetryDelayFunc:           func(n int, _ error, _ *asynq.Task) time.Duration { return delay(n) },
		IsFailure:                isFailure,
		DelayedTaskCheckInterval: cfg.RetryCheck,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
	})
	return w
}

// Backoff is exponential from 2 s, capped at 5 min, with jitter so that a
// directory outage does not come back as a thundering herd: retry n+1
// waits between half and all of min(2 s·2ⁿ, 5 min).
func Backoff(n int) time.Duration {
	d := 2 * time.Second * time.Duration(math.Pow(2, float64(min(n, 8))))
	d = min(d, 5*time.Minute)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Run serves until ctx is done, then shuts down gracefully.
func (w *Worker) Run(ctx context.Context) error {
	mux := asynq.NewServeMux()
	for _, k := range []domain.JobKind{domain.KindProvision, domain.KindUpdate, domain.KindRemoveConfig, domain.KindRemoveAll} {
		mux.HandleFunc(TaskType(k), w.process)
	}
	for typ, h := range w.extra {
		if strings.HasPrefix(typ, "phase1:") || h == nil {
			return fmt.Errorf("phase1: start worker: extra handler %q: type taken or handler nil", typ)
		}
		mux.Handle(typ, h)
	}
	if err := w.srv.Start(mux); err != nil {
		return fmt.Errorf("phase1: start worker: %w", err)
	}
	<-ctx.Done()
	w.srv.Shutdown()
	return nil
}

func (w *Worker) process(ctx context.Context, at *asynq.Task) error {
	var t Task
	if err := json.Unmarshal(at.Payload(), &t); err != nil {
		// Nothing to record it on: drop it loudly.
		w.log.Error().Str("type", at.Type()).Msg("phase-1 task payload undecodable")
		return fmt.Errorf("phase1: decode task: %w: %w", err, asynq.SkipRetry)
	}
	if err := t.Validate(); err != nil {
		w.log.Error().Err(err).Str("type", at.Type()).Msg("phase-1 task invalid")
		return fmt.Errorf("phase1: %w: %w", err, asynq.SkipRetry)
	}
	err := w.handler.Handle(ctx, t)
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && errors.Is(ctx.Err(), context.Canceled) {
		// The task was cancelled: asynq puts it back; not a failure.
		return fmt.Errorf("%w: %w", errTaskCancelled, err)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := domain.IsPermanent(err) || retried >= maxRetry
	ev := w.log.Warn().Err(err).Str("job", t.JobID).Str("device", t.DeviceID).Str("phase", "1").Int("retried", retried)
	if !final {
		ev.Msg("phase-1 task failed; will retry")
		return err
	}
	ev.Bool("permanent", domain.IsPermanent(err)).Msg("phase-1 task failed for good")
	if rerr := w.recorder.FailJob(context.WithoutCancel(ctx), t, err); rerr != nil {
		// Retry so the failure is not lost; FailJob is idempotent.
		return fmt.Errorf("phase1: record failure of %s: %w", t.JobID, rerr)
	}
	if domain.IsPermanent(err) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// asynqLogger routes asynq's own logging into zerolog.
type asynqLogger struct{ l zerolog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug().Str("detail", fmt.Sprint(args...)).Msg("asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info().Str("detail", fmt.Sprint(args...)).Msg("asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn().Str("detail", fmt.Sprint(args...)).Msg("asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error().Str("detail", fmt.Sprint(args...)).Msg("asynq") }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error().Str("detail", fmt.Sprint(args...)).Msg("asynq fatal")
}
