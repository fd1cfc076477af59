package admin

import (
	"context"
	"slices"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// reasonNames are RFC 5280's names for the CRL reasons the site uses.
var reasonNames = map[domain.RevocationReason]string{
	domain.ReasonUnspecified:          "unspecified",
	domain.ReasonKeyCompromise:        "key-compromise",
	domain.ReasonAffiliationChanged:   "affiliation-changed",
	domain.ReasonSuperseded:           "superseded",
	domain.ReasonCessationOfOperation: "cessation-of-operation",
}

// certStates are what ListCertificates filters by: the record statuses
// and "live" (still valid in the CA's eyes).
var certStates = []string{string(domain.CertRequested), string(domain.CertNotIssued), string(domain.CertIssued),
	string(domain.CertInstalled), string(domain.CertRevoked), "live"}

func certToPB(c domain.CertificateRecord) *pb.Certificate {
	out := &pb.Certificate{Serial: c.Serial, DeviceId: c.DeviceID, Fqdn: c.Subject, Purpose: string(c.Purpose), Profile: c.Profile,
		Ca: c.CA, State: string(c.Status), NotBefore: ts(c.NotBefore), NotAfter: ts(c.NotAfter), JobId: c.JobID}
	if c.Status == domain.CertRevoked {
		out.RevocationReason, out.RevokedAt = reasonNames[c.Reason], ts(c.RevokedAt)
	}
	return out
}

// ListCertificates lists device certificates, newest first.
func (s *Service) ListCertificates(ctx context.Context, req *pb.ListCertificatesRequest) (*pb.ListCertificatesResponse, error) {
	state := strings.ToLower(strings.TrimSpace(req.GetState()))
	if state != "" && !slices.Contains(certStates, state) {
		return nil, api.ToStatus(domain.InvalidField("state", req.GetState(), "want one of "+strings.Join(certStates, ", ")))
	}
	keep := func(c domain.CertificateRecord) bool {
		return state == "" || string(c.Status) == state || state == "live" && c.Status.Live()
	}
	limit := int(req.GetLimit())
	var recs []domain.CertificateRecord
	if ref := strings.TrimSpace(req.GetDevice()); ref != "" {
		d, err := s.resolve(ctx, ref)
		if err != nil {
			return nil, api.ToStatus(err)
		}
		all, err := s.deviceCerts(ctx, d.ID)
		if err != nil {
			return nil, api.ToStatus(err)
		}
		for _, c := range all {
			if keep(c) && (limit <= 0 || len(recs) < limit) {
				recs = append(recs, c)
			}
		}
	} else {
		var err error
		if recs, err = s.st.ListCertificates(ctx, keep, limit); err != nil {
			return nil, api.ToStatus(err)
		}
	}
	resp := &pb.ListCertificatesResponse{}
	for _, c := range recs {
		resp.Certificates = append(resp.Certificates, certToPB(c))
	}
	return resp, nil
}

// deviceCerts are a device's certificate records, newest first.
func (s *Service) deviceCerts(ctx context.Context, id string) ([]domain.CertificateRecord, error) {
	recs, err := s.st.CertificatesByDevice(ctx, id)
	slices.Reverse(recs)
	return recs, err
}
