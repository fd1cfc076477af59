package admin

import (
	"context"
	"fmt"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// DeviceReadiness judges each device the filter selects as its firmware
// will judge the provisioning certificate, from its last Hello.
func (s *Service) DeviceReadiness(ctx context.Context, req *pb.ListDevicesRequest) (*pb.DeviceReadinessResponse, error) {
	if s.opts.Readiness == nil {
		return nil, api.ToStatus(fmt.Errorf("admin: device readiness: no job service: %w", domain.ErrConflict))
	}
	page, err := s.listDevices(ctx, req)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.DeviceReadinessResponse{NextCursor: page.Next}
	for _, d := range page.Devices {
		r, trusted, needed := s.opts.Readiness.Readiness(d)
		out := &pb.DeviceReadiness{Id: d.ID, Fqdn: d.FQDN(), Ip: addrString(d.IP), ProvisioningState: int32(d.State),
			ControlMode: d.ControlMode.String(), NeedsActivation: needed, Ready: r.Ready(), TrustedDomain: trusted}
		if d.Hello != nil {
			out.HelloAt = ts(d.Hello.At)
		}
		for _, p := range r.Problems {
			out.Problems = append(out.Problems, &pb.ReadinessProblem{Reason: string(p.Reason), Message: p.Message})
		}
		resp.Devices = append(resp.Devices, out)
	}
	return resp, nil
}
