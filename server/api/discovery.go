package api

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/discover"
)

// Discoveries records what agents' sweeps found (discover.Recorder).
type Discoveries interface {
	Record(ctx context.Context, agentID string, subnet netip.Prefix, found []discover.Found) (discover.Counts, error)
}

// ReportDiscovery records what an agent's sweep found (S20, S21);
// discover.Recorder has the rules.
func (s *AgentService) ReportDiscovery(ctx context.Context, req *pb.ReportDiscoveryRequest) (*pb.ReportDiscoveryResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	subnet, err := authorize(a, req.GetSubnet())
	if err != nil {
		return nil, ToStatus(err)
	}
	found := make([]discover.Found, 0, len(req.GetDevices()))
	for i, dd := range req.GetDevices() {
		ip, err := netip.ParseAddr(dd.GetIp())
		if err != nil {
			return nil, ToStatus(domain.InvalidField(fmt.Sprintf("devices[%d].ip", i), dd.GetIp(), "not an IP address"))
		}
		found = append(found, discover.Found{IP: ip, Answered: dd.GetPort_16992() || dd.GetPort_16993(),
			Facts: wire.FactsFrom(dd.GetFacts()), CredentialsKnown: dd.GetCredentialsKnown(),
			ProductVersion: dd.GetProductVersion(), HostName: dd.GetHostName(), Domain: dd.GetDomain()})
	}
	n, err := s.discoveries.Record(ctx, a.ID, subnet, found)
	if err != nil {
		return nil, ToStatus(err)
	}
	s.opts.Log.Info().Str("agent", a.ID).Str("subnet", subnet.String()).Str("sweep", req.GetSweepId()).
		Int("created", n.Created).Int("updated", n.Updated).Int("refused", n.Refused).
		Bool("complete", req.GetSweepComplete()).Msg("discovery reported")
	return &pb.ReportDiscoveryResponse{Created: int32(n.Created), Updated: int32(n.Updated)}, nil
}
