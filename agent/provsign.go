package agent

import (
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

var signatureHashes = map[crypto.Hash]pb.SignatureHash{
	crypto.SHA256: pb.SignatureHash_SIGNATURE_HASH_SHA256,
	crypto.SHA384: pb.SignatureHash_SIGNATURE_HASH_SHA384,
	crypto.SHA512: pb.SignatureHash_SIGNATURE_HASH_SHA512,
	crypto.SHA1:   pb.SignatureHash_SIGNATURE_HASH_SHA1,
}

// SignProvisioning is the executor's provcert.RemoteSigner: the server
// signs a remote-configuration handshake digest with the provisioning key
// for the job whose lease ctx carries (the job's own context, which the
// signer is bound to). The key never reaches the agent.
func (a *Agent) SignProvisioning(ctx context.Context, jobID, leaseToken string, digest []byte, opts provcert.SignOpts) ([]byte, error) {
	ref, _ := ctx.Value(leaseKey{}).(*pb.LeaseRef)
	switch {
	case ref == nil || a.client == nil:
		return nil, errors.New("agent: sign provisioning: no job lease in context")
	case ref.GetJobId() != jobID || ref.GetToken() != leaseToken:
		return nil, fmt.Errorf("agent: sign provisioning: job %s is not the lease in context", jobID)
	}
	hash, ok := signatureHashes[opts.Hash]
	if !ok {
		return nil, fmt.Errorf("agent: sign provisioning: hash %v not supported", opts.Hash)
	}
	// The wire has no salt length: PSS means salt length = hash length,
	// which is what TLS asks for.
	if opts.PSS && opts.SaltLength != rsa.PSSSaltLengthEqualsHash && opts.SaltLength != opts.Hash.Size() {
		return nil, fmt.Errorf("agent: sign provisioning: PSS salt length %d not supported", opts.SaltLength)
	}
	resp, err := a.client.SignProvisioning(ctx, &pb.SignProvisioningRequest{Lease: ref, Digest: digest, Hash: hash, Pss: opts.PSS})
	if err != nil {
		return nil, fmt.Errorf("agent: sign provisioning: %w", err)
	}
	return resp.GetSignature(), nil
}
