package api

import (
	"context"
	"errors"
	"fmt"
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
	refused := 0
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
		res, err := s.recordDiscovered(ctx, a, subnet, ip, dd)
		if err != nil {
			return nil, ToStatus(err)
		}
		switch res {
		case discoveredNew:
			resp.Created++
		case discoveredKnown:
			resp.Updated++
		case discoveredForeign:
			refused++
		}
	}
	s.opts.Log.Info().Str("agent", a.ID).Str("subnet", subnet.String()).Str("sweep", req.GetSweepId()).
		Int32("created", resp.Created).Int32("updated", resp.Updated).Int("refused", refused).
		Bool("complete", req.GetSweepComplete()).Msg("discovery reported")
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

// discovered is what recordDiscovered did with one report.
type discovered int

const (
	discoveredNew     discovered = iota // a device record was created
	discoveredKnown                     // an existing record of this subnet was updated
	discoveredForeign                   // the report named a device of another subnet: left alone
)

// recordDiscovered matches a report to the inventory and updates it. An
// agent speaks only for its own subnet: a report whose UUID (or address)
// names a device recorded on another subnet changes nothing, because
// moving the device would hand this agent that device's admin password on
// the next job. An administrator moves devices between subnets.
func (s *AgentService) recordDiscovered(ctx context.Context, a domain.Agent, subnet netip.Prefix, ip netip.Addr, dd *pb.DiscoveredDevice) (discovered, error) {
	var match *domain.Device
	uuidID := strings.ToLower(dd.GetFacts().GetUuid())
	if uuidID != "" {
		d, err := s.st.GetDevice(ctx, uuidID)
		if err == nil {
			match = &d
		} else if !errors.Is(err, domain.ErrNotFound) {
			return 0, err
		}
	}
	if match == nil {
		devs, err := s.st.DevicesByIP(ctx, ip)
		if err != nil {
			return 0, err
		}
		if len(devs) == 1 {
			match = &devs[0]
		}
	}
	if match != nil && match.Subnet.IsValid() && match.Subnet.Masked() != subnet {
		s.opts.Log.Warn().Str("agent", a.ID).Str("subnet", subnet.String()).Str("device", match.ID).
			Str("device_subnet", match.Subnet.String()).Str("ip", ip.String()).Msg("discovery report for a device of another subnet refused")
		_ = s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: match.ID, Phase: 0, Step: "discover", Outcome: domain.OutcomeFailed,
			Detail: "agent " + a.ID + " reported this device at " + ip.String() + " on subnet " + subnet.String() +
				"; it is recorded on " + match.Subnet.String() + " and was not moved (an administrator moves devices between subnets)",
			Actor: a.ID, Time: s.opts.Clock().UTC()})
		return discoveredForeign, nil
	}
	update := func(d *domain.Device) error {
		if d.Subnet.IsValid() && d.Subnet.Masked() != subnet {
			// Moved by someone else since we read it: still not ours to move.
			return fmt.Errorf("api: discovery of %s: %w", d.ID, errForeignDevice)
		}
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
	if match != nil {
		_, err := s.st.UpdateDevice(ctx, match.ID, update)
		if errors.Is(err, errForeignDevice) {
			return discoveredForeign, nil
		}
		return discoveredKnown, err
	}
	d := domain.Device{ID: "ip-" + ip.String(), Status: domain.StatusUnknown}
	if uuidID != "" {
		d.ID = uuidID
	}
	if err := update(&d); err != nil {
		return 0, err
	}
	if err := s.st.PutDevice(ctx, d); err != nil {
		return 0, err
	}
	_ = s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: d.ID, Phase: 0, Step: "discover", Outcome: domain.OutcomeOK,
		Detail: "discovered at " + ip.String() + " as " + string(d.Status), Actor: a.ID, Time: s.opts.Clock().UTC()})
	return discoveredNew, nil
}

var errForeignDevice = errors.New("device is recorded on another subnet")
