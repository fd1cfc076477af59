package provcert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
)

// SignOpts is the part of crypto.SignerOpts a remote signature needs: the
// hash the digest was made with and, for RSA-PSS, the salt length.
type SignOpts struct {
	Hash       crypto.Hash
	PSS        bool
	SaltLength int // rsa.PSSSaltLengthAuto/EqualsHash or a length; PSS only
}

// OptsFrom converts what crypto/tls passes to a Signer.
func OptsFrom(o crypto.SignerOpts) SignOpts {
	if p, ok := o.(*rsa.PSSOptions); ok {
		return SignOpts{Hash: p.Hash, PSS: true, SaltLength: p.SaltLength}
	}
	return SignOpts{Hash: o.HashFunc()}
}

// SignerOpts converts back for crypto.Signer.Sign.
func (o SignOpts) SignerOpts() crypto.SignerOpts {
	if o.PSS {
		return &rsa.PSSOptions{Hash: o.Hash, SaltLength: o.SaltLength}
	}
	return o.Hash
}

// validate admits the digests a TLS 1.2/1.3 CertificateVerify asks for and
// nothing else: no raw (hash 0) RSA signatures, no MD5+SHA-1 of TLS ≤ 1.1.
func (o SignOpts) validate(digest []byte, key crypto.Signer) error {
	switch o.Hash {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return fmt.Errorf("provcert: sign: hash %v not allowed", o.Hash)
	}
	if len(digest) != o.Hash.Size() {
		return fmt.Errorf("provcert: sign: digest of %d bytes for %v (want %d)", len(digest), o.Hash, o.Hash.Size())
	}
	if _, isRSA := key.Public().(*rsa.PublicKey); o.PSS && !isRSA {
		return errors.New("provcert: sign: PSS requested for a non-RSA key")
	}
	return nil
}

// SignDigest signs digest with the provisioning key. The server calls it
// for an agent's handshake once it has checked the agent holds a live lease
// on the device, and records the signature in the device's operation log.
func (id *Identity) SignDigest(digest []byte, opts SignOpts) ([]byte, error) {
	if err := opts.validate(digest, id.key); err != nil {
		return nil, err
	}
	sig, err := id.key.Sign(rand.Reader, digest, opts.SignerOpts())
	if err != nil {
		return nil, fmt.Errorf("provcert: sign: %w", err)
	}
	return sig, nil
}

// TLSCertificate is the chain with the local key, for a TLS client on the
// server itself.
func (id *Identity) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: id.chain.DER(), PrivateKey: id.key, Leaf: id.chain.Leaf()}
}

// RemoteSigner asks the site server to sign a handshake digest for the job
// the agent holds a lease on (the server's ProvisioningSign RPC).
type RemoteSigner interface {
	SignProvisioning(ctx context.Context, jobID, leaseToken string, digest []byte, opts SignOpts) ([]byte, error)
}

// Signer is the agent's crypto.Signer for the provisioning key: Sign goes
// to the server; the public key is the chain's leaf. It is bound to one job
// and lease and to the context of that job's session.
type Signer struct {
	ctx        context.Context
	chain      Chain
	remote     RemoteSigner
	jobID      string
	leaseToken string
}

// NewSigner binds a remote signer to a job. ctx bounds every Sign call
// (crypto.Signer has no context of its own).
func NewSigner(ctx context.Context, chain Chain, remote RemoteSigner, jobID, leaseToken string) (*Signer, error) {
	if len(chain.Certs) == 0 {
		return nil, errors.New("provcert: signer: empty chain")
	}
	if remote == nil || jobID == "" || leaseToken == "" {
		return nil, errors.New("provcert: signer: remote, job id and lease token are required")
	}
	return &Signer{ctx: ctx, chain: chain, remote: remote, jobID: jobID, leaseToken: leaseToken}, nil
}

// Public is the leaf's public key.
func (s *Signer) Public() crypto.PublicKey { return s.chain.Leaf().PublicKey }

// Sign has the server sign digest and checks the signature against the
// leaf before handing it to TLS, so a wrong key on the server shows as a
// clear error here rather than as a handshake the device rejects.
func (s *Signer) Sign(_ io.Reader, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	opts := OptsFrom(o)
	sig, err := s.remote.SignProvisioning(s.ctx, s.jobID, s.leaseToken, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("provcert: remote sign for job %s: %w", s.jobID, err)
	}
	if err := verify(s.Public(), digest, sig, opts); err != nil {
		return nil, fmt.Errorf("provcert: remote sign for job %s: %w", s.jobID, err)
	}
	return sig, nil
}

// TLSCertificate is the chain with this Signer as its key, for the agent's
// remote-configuration TLS client.
func (s *Signer) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: s.chain.DER(), PrivateKey: s, Leaf: s.chain.Leaf()}
}

func verify(pub crypto.PublicKey, digest, sig []byte, o SignOpts) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if o.PSS {
			return wrapVerify(rsa.VerifyPSS(k, o.Hash, digest, sig, &rsa.PSSOptions{SaltLength: o.SaltLength, Hash: o.Hash}))
		}
		return wrapVerify(rsa.VerifyPKCS1v15(k, o.Hash, digest, sig))
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return wrapVerify(errors.New("ecdsa verification failed"))
		}
		return nil
	}
	return fmt.Errorf("signature check: key type %T", pub)
}

func wrapVerify(err error) error {
	if err != nil {
		return fmt.Errorf("signature does not verify with the leaf's public key: %w", err)
	}
	return nil
}
