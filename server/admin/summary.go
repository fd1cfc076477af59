package admin

import (
	"context"
	"sync"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// summaryCache shares one FleetSummary computation between callers for
// Options.SummaryMaxAge: it reads every device, and fifty consoles asking
// at once must cost Redis one read of the fleet, not fifty.
type summaryCache struct {
	mu   sync.Mutex // held while computing: callers wait for one result
	last *pb.FleetSummaryResponse
	at   time.Time
}

// FleetSummary counts the fleet for a console's overview.
func (s *Service) FleetSummary(ctx context.Context, _ *pb.FleetSummaryRequest) (*pb.FleetSummaryResponse, error) {
	c := &s.summary
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.opts.Clock()
	if c.last != nil && now.Sub(c.at) < s.opts.SummaryMaxAge {
		return c.last, nil
	}
	out, err := s.computeSummary(ctx, now)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	c.last, c.at = out, now
	return out, nil
}

func (s *Service) computeSummary(ctx context.Context, now time.Time) (*pb.FleetSummaryResponse, error) {
	out := &pb.FleetSummaryResponse{ByStatus: map[string]int64{}, ByControlMode: map[string]int64{}, ByGeneration: map[string]int64{},
		Blockers: map[string]int64{}, ProvisionedPerMinute: make([]int32, 60), ComputedAt: ts(now)}
	hourAgo := now.Add(-time.Hour)
	err := s.st.EachDevice(ctx, func(d domain.Device) error {
		out.Devices++
		out.ByStatus[wire.Status(d.Status).String()]++
		mode := d.ControlMode.String()
		if mode == "" {
			mode = "none" // not activated, or not read yet
		}
		out.ByControlMode[mode]++
		out.ByGeneration[d.Generation()]++
		if d.Failed() {
			out.Failed++
		}
		if d.Status == domain.StatusProvisioned && d.ProvisionedAt.After(hourAgo) && !d.ProvisionedAt.After(now) {
			out.ProvisionedPerMinute[min(59, int(d.ProvisionedAt.Sub(hourAgo)/time.Minute))]++
		}
		if s.opts.Readiness != nil {
			if r, _, needed := s.opts.Readiness.Readiness(d); needed {
				for _, p := range r.Problems {
					out.Blockers[string(p.Reason)]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	as, err := s.st.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if s.online(a, now) {
			out.AgentsOnline++
		} else {
			out.AgentsOffline++
		}
	}
	return out, nil
}

// online: the agent's last heartbeat is within Options.AgentOnlineWithin.
func (s *Service) online(a domain.Agent, now time.Time) bool {
	return !a.LastHeartbeat.IsZero() && now.Sub(a.LastHeartbeat) <= s.opts.AgentOnlineWithin
}
