package api

import (
	"context"
	"crypto"
	"crypto/rsa"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// ProvisioningSigner signs remote-configuration handshakes (jobs.Service).
type ProvisioningSigner interface {
	SignProvisioning(ctx context.Context, agentID string, l domain.LeaseRef, digest []byte, opts provcert.SignOpts) ([]byte, error)
}

// signatureHashes maps the wire hash; UNSPECIFIED is refused.
var signatureHashes = map[pb.SignatureHash]crypto.Hash{pb.SignatureHash_SIGNATURE_HASH_SHA256: crypto.SHA256,
	pb.SignatureHash_SIGNATURE_HASH_SHA384: crypto.SHA384, pb.SignatureHash_SIGNATURE_HASH_SHA512: crypto.SHA512,
	pb.SignatureHash_SIGNATURE_HASH_SHA1: crypto.SHA1}

// SignProvisioning signs one TLS handshake digest with the provisioning
// certificate's key for a job the calling agent holds a live lease on;
// jobs.Service.SignProvisioning has the rules. PSS uses a salt as long as
// the hash, as TLS does.
func (s *AgentService) SignProvisioning(ctx context.Context, req *pb.SignProvisioningRequest) (*pb.SignProvisioningResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := lease(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	h, ok := signatureHashes[req.GetHash()]
	if !ok {
		return nil, ToStatus(domain.InvalidField("hash", req.GetHash().String(), "one of SHA256, SHA384, SHA512, SHA1"))
	}
	opts := provcert.SignOpts{Hash: h, PSS: req.GetPss()}
	if opts.PSS {
		opts.SaltLength = rsa.PSSSaltLengthEqualsHash
	}
	sig, err := s.jobs.SignProvisioning(ctx, a.ID, l, req.GetDigest(), opts)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.SignProvisioningResponse{Signature: sig}, nil
}
