package api

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// ReportDiscovery records what an agent's sweep found (S20, S21). A device
// is found by its AMT UUID when known, else by IP; a new one gets the ID
// of its UUID, or "ip-<addr>".
func (s *AgentService) ReportDiscovery(ctx context.Context, req *pb.ReportDiscoveryRequest) (*pb.ReportDiscoveryResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	subnet, err := authorize(a, req.GetSubnet())
	if err != nil {
		return nil, ToStatus(err)
	}
	resp := &pb.ReportDiscoveryResponse{}
	for _, dd := range req.GetDevices() {
		ip, err := netip.ParseAddr(dd.GetIp())
		if err != nil {
			return nil, ToStatus(domain.InvalidField("devices.ip", dd.GetIp(), "not an IP address"))
		}
		if !subnet.Contains(ip) {
			return nil, ToStatus(domain.InvalidField("devices.ip", dd.GetIp(), "outside subnet "+subnet.String()))
		}
		if !dd.GetPort_16992() && !dd.GetPort_16993() && dd.GetFacts() == nil {
			continue // nothing answered: no AMT seen there
		}
		created, err := s.recordDiscovered(ctx, a, subnet, ip, dd)
		if err != nil {
			return nil, ToStatus(err)
		}
		if created {
			resp.Created++
		} else {
			resp.Updated++
		}
	}
	s.opts.Log.Info().Str("agent", a.ID).Str("subnet", subnet.String()).Str("sweep", req.GetSweepId()).
		Int32("created", resp.Created).Int32("updated", resp.Updated).Bool("complete", req.GetSweepComplete()).Msg("discovery reported")
	return resp, nil
}

// discoveredStatus decides S20's status from what the probe saw. Without
// facts the agent only knows AMT answers; it keeps a status learned
// earlier with credentials.
func discoveredStatus(prev domain.Status, dd *pb.DiscoveredDevice) domain.Status {
	f := dd.GetFacts()
	if f == nil || !dd.GetCredentialsKnown() {
		if f != nil && domain.ProvisioningState(f.GetProvisioningState()) == domain.ProvisioningPost && prev != domain.StatusProvisioned {
			return domain.StatusExternallyProvisioned
		}
		switch prev {
		case domain.StatusNotProvisioned, domain.StatusProvisioned, domain.StatusExternallyProvisioned:
			return prev
		}
		return domain.StatusDetected
	}
	if domain.ProvisioningState(f.GetProvisioningState()) == domain.ProvisioningPost {
		return domain.StatusProvisioned
	}
	return domain.StatusNotProvisioned
}

func (s *AgentService) recordDiscovered(ctx context.Context, a domain.Agent, subnet netip.Prefix, ip netip.Addr, dd *pb.DiscoveredDevice) (bool, error) {
	id := ""
	if u := strings.ToLower(dd.GetFacts().GetUuid()); u != "" {
		if _, err := s.st.GetDevice(ctx, u); err == nil {
			id = u
		} else if !errors.Is(err, domain.ErrNotFound) {
			return false, err
		}
	}
	if id == "" {
		devs, err := s.st.DevicesByIP(ctx, ip)
		if err != nil {
			return false, err
		}
		if len(devs) == 1 {
			id = devs[0].ID
		}
	}
	update := func(d *domain.Device) error {
		d.Status = discoveredStatus(d.Status, dd)
		d.IP, d.Subnet = ip, subnet
		wire.FactsFrom(dd.GetFacts()).Apply(d)
		// Identify says "AMT 11.8"; the device record holds bare versions.
		if v := strings.TrimSpace(strings.TrimPrefix(dd.GetProductVersion(), "AMT")); d.AMTVersion == "" && v != "" {
			d.AMTVersion = v
		}
		if d.HostName == "" && dd.GetHostName() != "" && domain.ValidateHostName(dd.GetHostName()) == nil {
			d.HostName, d.Domain = dd.GetHostName(), dd.GetDomain()
		}
		if st := domain.ProvisioningState(dd.GetFacts().GetProvisioningState()); dd.GetFacts() != nil {
			d.State = st
		}
		return nil
	}
	if id != "" {
		_, err := s.st.UpdateDevice(ctx, id, update)
		return false, err
	}
	d := domain.Device{ID: "ip-" + ip.String(), Status: domain.StatusUnknown}
	if u := strings.ToLower(dd.GetFacts().GetUuid()); u != "" {
		d.ID = u
	}
	if err := update(&d); err != nil {
		return false, err
	}
	if err := s.st.PutDevice(ctx, d); err != nil {
		return false, err
	}
	_ = s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: d.ID, Phase: 0, Step: "discover", Outcome: domain.OutcomeOK,
		Detail: "discovered at " + ip.String() + " as " + string(d.Status), Actor: a.ID, Time: s.opts.Clock().UTC()})
	return true, nil
}
