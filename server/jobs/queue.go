package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/hibiken/asynq"
)

// The fixed queues. A queue per subnet would slow asynq down sharply
// (DESIGN.md), so subnets live in the phase-2 lease queue instead.
const (
	QueueCritical = "critical" // single devices an administrator is waiting for
	QueueDefault  = "default"  // bulk batches
	QueueSweep    = "sweep"    // periodic auto-provisioning sweeps
)

// Queues are the queue priorities the worker serves.
var Queues = map[string]int{QueueCritical: 6, QueueDefault: 3, QueueSweep: 1}

// TaskType is the asynq type of a phase-1 task of kind k.
func TaskType(k domain.JobKind) string { return "phase1:" + string(k) }

// Task is a phase-1 task's payload: which job of which batch for which device.
type Task struct {
	JobID    string         `json:"job_id"`
	BatchID  string         `json:"batch_id"`
	DeviceID string         `json:"device_id"`
	Kind     domain.JobKind `json:"kind"`
	// Options are the batch's options (domain.Batch.Options), copied so
	// the handler needs no extra read: "suppress_auto", "confirm_8021x".
	Options map[string]string `json:"options,omitempty"`
}

// TaskID is the asynq task ID: one task per job, so re-submitting a
// batch after a crash queues nothing twice. Two batches never work on
// one device at once because the batch layer claims the device first.
func (t Task) TaskID() string { return "p1:" + t.JobID }

// Validate checks the payload before it is queued or run.
func (t Task) Validate() error {
	switch {
	case t.JobID == "":
		return domain.InvalidField("task.job_id", "", "required")
	case t.DeviceID == "":
		return domain.InvalidField("task.device_id", "", "required")
	case !t.Kind.Valid() || t.Kind == domain.KindDiscover:
		return domain.InvalidField("task.kind", string(t.Kind), "not a phase-1 kind")
	}
	return nil
}

// ErrDuplicate means the device already has a phase-1 task of that kind
// queued or running; the new request is the same work.
var ErrDuplicate = errors.New("phase1: device already has this operation queued")

// Enqueuer queues phase-1 tasks.
type Enqueuer struct {
	client *asynq.Client
	// retention keeps a finished task's ID reserved briefly, so a retried
	// request right after completion does not run the work twice.
	retention time.Duration
	maxRetry  int
	timeout   time.Duration
}

// NewEnqueuer wraps an asynq client.
func NewEnqueuer(c *asynq.Client, maxRetry int, timeout time.Duration) *Enqueuer {
	return &Enqueuer{client: c, maxRetry: maxRetry, timeout: timeout, retention: 30 * time.Second}
}

// Enqueue queues t on queue. ErrDuplicate means an equal task is live.
func (e *Enqueuer) Enqueue(ctx context.Context, t Task, queue string) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if _, ok := Queues[queue]; !ok {
		return domain.InvalidField("queue", queue, "unknown phase-1 queue")
	}
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("phase1: encode task: %w", err)
	}
	_, err = e.client.EnqueueContext(ctx, asynq.NewTask(TaskType(t.Kind), b),
		asynq.TaskID(t.TaskID()), asynq.Queue(queue), asynq.MaxRetry(e.maxRetry),
		asynq.Timeout(e.timeout), asynq.Retention(e.retention))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask):
		return fmt.Errorf("phase1: enqueue %s: %w", t.TaskID(), ErrDuplicate)
	case err != nil:
		return fmt.Errorf("phase1: enqueue %s: %w", t.TaskID(), err)
	}
	return nil
}
