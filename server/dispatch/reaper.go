package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/rs/zerolog"
)

// ReapQueue is the part of the lease queue the Reaper needs.
type ReapQueue interface {
	Subnets(ctx context.Context) ([]netip.Prefix, error)
	Reap(ctx context.Context, subnet netip.Prefix, now time.Time) (domain.ReapResult, error)
}

// ReaperOptions tunes a Reaper. The zero value is usable.
type ReaperOptions struct {
	// Interval between passes over every subnet; default 1s.
	Interval time.Duration
	// OnDead is called with the jobs a pass dead-lettered, so that the
	// caller records their failure (FinishJob, operations log). An error
	// is logged; the IDs stay in the queue's dead-letter list.
	OnDead func(ctx context.Context, subnet netip.Prefix, jobIDs []string) error
	Clock  func() time.Time
	Log    zerolog.Logger
}

// Reaper periodically returns expired leases of every known subnet to
// their queues. Every replica may run one; reaping is atomic per subnet.
type Reaper struct {
	q    ReapQueue
	opts ReaperOptions
}

// NewReaper builds a Reaper.
func NewReaper(q ReapQueue, o ReaperOptions) *Reaper {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Reaper{q: q, opts: o}
}

// Run reaps every Interval until ctx ends. Errors of one pass are logged
// and the next pass tries again.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		if err := r.ReapOnce(ctx); err != nil && ctx.Err() == nil {
			r.opts.Log.Warn().Err(err).Msg("reap pass failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ReapOnce makes one pass over every known subnet.
func (r *Reaper) ReapOnce(ctx context.Context) error {
	subnets, err := r.q.Subnets(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: reap: %w", err)
	}
	var errs []error
	for _, p := range subnets {
		res, err := r.q.Reap(ctx, p, r.opts.Clock())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if res.Requeued > 0 || len(res.Dead) > 0 {
			r.opts.Log.Info().Str("subnet", p.String()).Int("requeued", res.Requeued).
				Int("dead", len(res.Dead)).Msg("expired leases reaped")
		}
		if len(res.Dead) > 0 && r.opts.OnDead != nil {
			if err := r.opts.OnDead(ctx, p, res.Dead); err != nil {
				errs = append(errs, fmt.Errorf("dispatch: record dead letters of %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}
