package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/store"
)

// discoverer queues on-demand sweeps for the admin service. Requests in
// the same second are one sweep, so a double click costs nothing.
type discoverer struct {
	st  *store.Store
	q   *store.LeaseQueue
	now func() time.Time
}

func (d discoverer) Discover(ctx context.Context, subnets []netip.Prefix) ([]string, error) {
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
	slot := discover.Slot(d.now(), time.Second)
	var ids []string
	for _, p := range subnets {
		// Agents lease from their authorised subnets' queues; a sweep
		// queued anywhere else would wait forever.
		if !slices.Contains(authorised, p) {
			return ids, domain.InvalidField("subnets", p.String(), "no agent is authorised for this subnet")
		}
		id, err := discover.Request(ctx, d.q, p, slot)
		if err != nil {
			return ids, fmt.Errorf("server: discover %s: %w", p, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// authorised lists the subnets agents serve, each once.
func (d discoverer) authorised(ctx context.Context) ([]netip.Prefix, error) {
	agents, err := d.st.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: discover: %w", err)
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
