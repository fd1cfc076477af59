// Package sweep is the periodic auto-provisioning sweep (S22, C8): every
// interval it provisions the devices of auto-provisioning collections that
// are not provisioned and neither suppressed (S18) nor waiting for a
// rename (S19).
//
// Every server replica runs a Sweeper. Time is cut into slots of one
// interval; at each slot's start every replica enqueues one asynq task
// whose ID names the slot ("sweep:<slot>"), so the replicas collide on it
// and exactly one task per slot exists (the asynq Scheduler cannot give
// per-slot task IDs, hence the owned ticker). Whichever phase-1 worker
// takes the task applies the collections' rules, gathers the eligible
// devices and starts one provision batch with the slot's ID
// ("sweep-<slot>"), which batch.Service makes idempotent as well.
package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/jobs"
)

// TaskType is the asynq type of the sweep task; the phase-1 worker serves
// it (jobs.WorkerConfig.Extra).
const TaskType = "sweep:run"

// Origin is the batch origin of sweep batches.
const Origin = "sweep"

// Store is the part of the site database the sweep reads.
type Store interface {
	ListCollections(ctx context.Context) ([]domain.Collection, error)
	ApplyCollectionRules(ctx context.Context, name string) (added int, err error)
	Members(ctx context.Context, name string, limit int, cursor string) (domain.DevicePage, error)
}

// Batches starts provision batches (batch.Service).
type Batches interface {
	Start(ctx context.Context, r batch.Request) (domain.Batch, bool, error)
}

// Config tunes the sweep.
type Config struct {
	// Interval is the slot length (config.Server Sweep.Interval); required.
	Interval time.Duration
	// MaxRetry is how often a failed sweep task is retried within its
	// slot; default 3.
	MaxRetry int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Sweeper enqueues one sweep task per slot and runs it.
type Sweeper struct {
	st      Store
	batches Batches
	client  *asynq.Client
	cfg     Config
	log     zerolog.Logger
}

// New builds a Sweeper. The caller owns client.
func New(st Store, b Batches, client *asynq.Client, cfg Config, log zerolog.Logger) (*Sweeper, error) {
	switch {
	case cfg.Interval < time.Second:
		return nil, domain.InvalidField("sweep.interval", cfg.Interval.String(), "must be at least 1s")
	case st == nil || b == nil || client == nil:
		return nil, errors.New("sweep: new: store, batches and asynq client are required")
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = 3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sweeper{st: st, batches: b, client: client, cfg: cfg, log: log}, nil
}

// Slot names the slot t falls in: its start, UTC, to the second. It holds
// no ':' (batch IDs may not) and sorts by time.
func (s *Sweeper) Slot(t time.Time) string {
	return s.slotStart(t).Format("20060102T150405Z")
}

func (s *Sweeper) slotStart(t time.Time) time.Time {
	iv := s.cfg.Interval.Milliseconds()
	return time.UnixMilli(t.UnixMilli() / iv * iv).UTC()
}

// payload is the sweep task's content.
type payload struct {
	Slot string `json:"slot"`
}

// Enqueue queues the sweep task of the slot now falls in. It reports
// false when the slot's task exists already (another replica, or this
// one before a restart, was first).
func (s *Sweeper) Enqueue(ctx context.Context, now time.Time) (bool, error) {
	slot := s.Slot(now)
	b, err := json.Marshal(payload{Slot: slot})
	if err != nil {
		return false, fmt.Errorf("sweep: encode task: %w", err)
	}
	// Retention keeps the finished task, and so its ID, past the end of
	// the slot: a replica ticking late in the same slot still collides.
	_, err = s.client.EnqueueContext(ctx, asynq.NewTask(TaskType, b), asynq.TaskID("sweep:"+slot),
		asynq.Queue(jobs.QueueSweep), asynq.MaxRetry(s.cfg.MaxRetry), asynq.Timeout(max(s.cfg.Interval, time.Minute)),
		asynq.Retention(s.cfg.Interval))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sweep: enqueue slot %s: %w", slot, err)
	}
	return true, nil
}

// Run enqueues the current slot's task, then each following slot's at
// its start, until ctx is done. A failed enqueue is logged and tried at
// the next slot: the sweep is periodic, a missed one is not an outage.
func (s *Sweeper) Run(ctx context.Context) error {
	for {
		now := s.cfg.Now()
		if created, err := s.Enqueue(ctx, now); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn().Err(err).Str("slot", s.Slot(now)).Msg("sweep not enqueued")
		} else if created {
			s.log.Info().Str("slot", s.Slot(now)).Msg("sweep enqueued")
		}
		next := s.slotStart(now).Add(s.cfg.Interval)
		t := time.NewTimer(next.Sub(s.cfg.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Handle runs a sweep task (register it on the phase-1 worker under
// TaskType). A retry after a crash starts the same batch again, which
// returns the one already made.
func (s *Sweeper) Handle(ctx context.Context, t *asynq.Task) error {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Slot == "" {
		s.log.Error().Str("type", t.Type()).Msg("sweep task payload undecodable")
		return fmt.Errorf("sweep: decode task: %w", asynq.SkipRetry)
	}
	_, err := s.sweep(ctx, "sweep-"+p.Slot, Origin)
	return err
}

// SweepNow runs a sweep at once, outside the slots (AdminService.SweepNow).
// With nothing to provision it returns a batch with no ID and Total 0.
func (s *Sweeper) SweepNow(ctx context.Context, requester string) (domain.Batch, error) {
	return s.sweep(ctx, "sweep-now-"+s.cfg.Now().UTC().Format("20060102T150405.000Z"), requester)
}

// sweep starts the provision batch id for every eligible device, on
// behalf of requester (the administrator of a SweepNow, else "sweep").
func (s *Sweeper) sweep(ctx context.Context, id, requester string) (domain.Batch, error) {
	ids, colls, err := s.eligible(ctx)
	if err != nil {
		return domain.Batch{}, fmt.Errorf("sweep: %s: %w", id, err)
	}
	empty := domain.Batch{Kind: domain.KindProvision, Origin: Origin}
	if len(ids) == 0 {
		s.log.Info().Str("batch", id).Int("collections", colls).Msg("sweep found nothing to provision")
		return empty, nil
	}
	b, created, err := s.batches.Start(ctx, batch.Request{Kind: domain.KindProvision, DeviceIDs: ids, Origin: Origin,
		Requester: requester, ID: id, Queue: jobs.QueueSweep})
	if err != nil {
		return empty, fmt.Errorf("sweep: %s: %w", id, err)
	}
	s.log.Info().Str("batch", b.ID).Bool("created", created).Int("collections", colls).Int("devices", b.Total).
		Msg("sweep batch started")
	return b, nil
}

// eligible lists, once each and in collection order, the auto-provisionable
// members of every auto-provisioning collection after applying its rules.
func (s *Sweeper) eligible(ctx context.Context) (ids []string, collections int, err error) {
	colls, err := s.st.ListCollections(ctx)
	if err != nil {
		return nil, 0, err
	}
	seen := map[string]bool{}
	for _, c := range colls {
		if !c.AutoProvision {
			continue
		}
		collections++
		if _, err := s.st.ApplyCollectionRules(ctx, c.Name); err != nil {
			return nil, collections, err
		}
		var page domain.DevicePage
		for first := true; first || page.Next != ""; first = false {
			if page, err = s.st.Members(ctx, c.Name, 1000, page.Next); err != nil {
				return nil, collections, err
			}
			for _, d := range page.Devices {
				if !seen[d.ID] && d.AutoProvisionable() {
					seen[d.ID] = true
					ids = append(ids, d.ID)
				}
			}
		}
	}
	return ids, collections, nil
}
