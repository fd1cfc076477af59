package admin

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// IssueAdminCertificate signs an administrator's CSR for the name and
// role in the request (never those in the CSR) and records its serial, so
// that revoking the name ends it. The certificate is returned only once
// recorded: an unrecorded certificate would not authenticate anyway.
func (s *Service) IssueAdminCertificate(ctx context.Context, req *pb.IssueAdminCertificateRequest) (*pb.IssueAdminCertificateResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	if s.opts.CA == nil {
		return nil, status.Error(codes.FailedPrecondition, "admin: issue admin certificate: this server has no CA for administrators' certificates")
	}
	if len(req.GetCsrDer()) == 0 {
		return nil, api.ToStatus(fmt.Errorf("admin: issue admin certificate: %w", domain.InvalidField("csr_der", "", "required")))
	}
	cert, err := s.opts.CA.SignAdmin(req.GetCsrDer(), req.GetName(), req.GetRole())
	if err != nil {
		return nil, api.ToStatus(fmt.Errorf("admin: issue admin certificate: %w", err))
	}
	rec := domain.AdminCert{Serial: cert.SerialNumber.Text(16), Name: req.GetName(), Role: domain.AdminRole(req.GetRole()),
		NotAfter: cert.NotAfter}
	if err := s.st.RecordAdminCertificate(ctx, rec); err != nil {
		return nil, api.ToStatus(fmt.Errorf("admin: issue admin certificate: %w", err))
	}
	s.opts.Log.Info().Str("admin", p.Name).Str("name", rec.Name).Str("role", string(rec.Role)).Str("serial", rec.Serial).
		Time("not_after", rec.NotAfter).Msg("admin certificate issued")
	return &pb.IssueAdminCertificateResponse{CertificateDer: cert.Raw, CaDer: s.opts.CA.Certificate().Raw, NotAfter: ts(cert.NotAfter)}, nil
}
