package api

import (
	"context"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/jobs"
)

// Signer signs the key a device made for a leased job (jobs.Service).
type Signer interface {
	SignDeviceCSR(ctx context.Context, agentID string, l domain.LeaseRef, csrDER []byte) (jobs.Signed, error)
	SignedEarlier(ctx context.Context, jobID, deviceID string) (jobs.Signed, bool, error)
}

// SignDeviceCSR signs the PKCS#10 request an AMT device made for a key it
// generated and keeps (amt.key_on_device); jobs.Service.SignDeviceCSR has
// the rules.
func (s *AgentService) SignDeviceCSR(ctx context.Context, req *pb.SignDeviceCSRRequest) (*pb.SignDeviceCSRResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := lease(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	c, err := s.jobs.SignDeviceCSR(ctx, a.ID, l, req.GetCsrDer())
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.SignDeviceCSRResponse{CertificateDer: c.Leaf, ChainDer: c.Chain, Serial: c.Serial}, nil
}
