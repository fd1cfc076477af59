package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
)

// UnservedQueue is the part of the lease queue the Unserved watch needs.
type UnservedQueue interface {
	Subnets(ctx context.Context) ([]netip.Prefix, error)
	Stats(ctx context.Context, subnet netip.Prefix) (domain.QueueStats, error)
	DropPending(ctx context.Context, subnet netip.Prefix, before time.Time) ([]string, error)
}

// UnservedOptions tunes the Unserved watch.
type UnservedOptions struct {
	// Deadline is how long a job may wait on a subnet no live agent
	// serves before it fails (phase2.unserved_deadline); 0 turns the
	// watch off.
	Deadline time.Duration
	// LiveWithin: an agent whose last heartbeat is younger serves its
	// subnets.
	LiveWithin time.Duration
	// Interval between passes; default a tenth of Deadline, at most 1m.
	Interval time.Duration
	// Agents lists the enrolled agents with their last heartbeats.
	Agents func(ctx context.Context) ([]domain.Agent, error)
	// OnFailed records the failure of jobs dropped from subnet with
	// reason (jobs.Service.FailUnserved).
	OnFailed func(ctx context.Context, subnet netip.Prefix, jobIDs []string, reason string) error
	Clock    func() time.Time
	Log      zerolog.Logger
}

// Unserved fails the jobs that waited longer than the deadline on a
// subnet no live agent serves, so that a batch (and `--wait`) ends with a
// reason instead of waiting for an agent that is gone.
type Unserved struct {
	q    UnservedQueue
	opts UnservedOptions
}

// NewUnserved builds the watch.
func NewUnserved(q UnservedQueue, o UnservedOptions) *Unserved {
	if o.Interval <= 0 {
		o.Interval = min(max(o.Deadline/10, time.Second), time.Minute)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Unserved{q: q, opts: o}
}

// Run checks every Interval until ctx ends; with no deadline it only
// waits for ctx.
func (u *Unserved) Run(ctx context.Context) error {
	if u.opts.Deadline <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(u.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := u.Once(ctx); err != nil && ctx.Err() == nil {
			u.opts.Log.Warn().Err(err).Msg("unserved jobs check failed")
		}
	}
}

// Once makes one pass: for each subnet with pending jobs whose agents have
// all been silent for longer than the deadline (or that never had one),
// the jobs queued before the deadline fail.
func (u *Unserved) Once(ctx context.Context) error {
	agents, err := u.opts.Agents(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: unserved: %w", err)
	}
	lastSeen := map[netip.Prefix]time.Time{}
	for _, a := range agents {
		for _, p := range a.Subnets {
			if a.LastHeartbeat.After(lastSeen[p.Masked()]) {
				lastSeen[p.Masked()] = a.LastHeartbeat
			}
		}
	}
	subnets, err := u.q.Subnets(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: unserved: %w", err)
	}
	now := u.opts.Clock()
	cutoff := now.Add(-u.opts.Deadline)
	var errs []error
	for _, p := range subnets {
		seen := lastSeen[p.Masked()]
		if now.Sub(seen) < u.opts.LiveWithin || seen.After(cutoff) {
			continue // served, or its agent went silent too recently
		}
		st, err := u.q.Stats(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Pending == 0 {
			continue
		}
		ids, err := u.q.DropPending(ctx, p, cutoff)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(ids) == 0 {
			continue
		}
		u.opts.Log.Warn().Str("subnet", p.String()).Int("jobs", len(ids)).Dur("deadline", u.opts.Deadline).
			Msg("jobs failed: no live agent serves their subnet")
		if err := u.opts.OnFailed(ctx, p, ids, UnservedReason(p, u.opts.Deadline, seen)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UnservedReason is the failure reason of a job no agent took: a summary
// line naming the subnet, then what happened and what to do.
func UnservedReason(p netip.Prefix, deadline time.Duration, lastSeen time.Time) string {
	agent := "no agent serving it has ever been seen"
	if !lastSeen.IsZero() {
		agent = "its agents were last seen " + lastSeen.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("no live agent serves %s\nthe job waited more than %s (phase2.unserved_deadline) for an agent of %s, and %s: "+
		"start the subnet's agent, or authorise another for it (amtopsctl agents authorize), then retry the batch (amtopsctl jobs retry)",
		p, deadline, p, agent)
}
