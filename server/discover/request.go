package discover

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// Agents lists the enrolled agents (store.Store).
type Agents interface {
	ListAgents(ctx context.Context) ([]domain.Agent, error)
}

// Requester queues on-demand sweeps for the admin service
// (admin.Discoverer). Requests in the same second are one sweep, so a
// double click costs nothing.
type Requester struct {
	agents Agents
	q      Queue
	now    func() time.Time
}

// NewRequester builds a Requester; now defaults to time.Now.
func NewRequester(agents Agents, q Queue, now func() time.Time) *Requester {
	if now == nil {
		now = time.Now
	}
	return &Requester{agents: agents, q: q, now: now}
}

// Discover queues a sweep of each subnet, or of every subnet an agent
// serves when none is named, and returns the job IDs.
func (d *Requester) Discover(ctx context.Context, subnets []netip.Prefix) ([]string, error) {
	authorised, err := d.authorised(ctx)
	if err != nil {
		return nil, err
	}
	if len(subnets) == 0 {
		subnets = authorised
	}
	if len(subnets) == 0 {
		return nil, domain.InvalidField("subnets", "", "no agent is authorised for any subnet yet")
	}
	slot := Slot(d.now(), time.Second)
	var ids []string
	for _, p := range subnets {
		// Agents lease from their authorised subnets' queues; a sweep
		// queued anywhere else would wait forever.
		if !slices.Contains(authorised, p) {
			return ids, domain.InvalidField("subnets", p.String(), "no agent is authorised for this subnet")
		}
		id, err := Request(ctx, d.q, p, slot)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// authorised lists the subnets agents serve, each once.
func (d *Requester) authorised(ctx context.Context) ([]netip.Prefix, error) {
	agents, err := d.agents.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("discover: list agents: %w", err)
	}
	var out []netip.Prefix
	for _, a := range agents {
		for _, p := range a.Subnets {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
