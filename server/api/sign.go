package api

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/phase1"
)

// DeviceCA issues and revokes device certificates (pki.CA; the one phase
// 1 uses).
type DeviceCA interface {
	Issue(ctx context.Context, req pki.Request) (*pki.Issued, error)
	Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error
}

// StepSignDeviceCSR names the signature in the operations log.
const StepSignDeviceCSR = "sign-device-csr"

// signedSecret names what SignDeviceCSR issued for a job, kept so that a
// retry with the same device key gets the same certificate back.
func signedSecret(jobID string) string { return "job/" + jobID + "/device-signed" }

// deviceSigned is a job's certificate for a device-generated key.
type deviceSigned struct {
	Serial string   `json:"serial"`
	Leaf   []byte   `json:"leaf"`
	Chain  [][]byte `json:"chain"`
	SPKI   []byte   `json:"spki"` // the device key, to recognise a retry
}

// SignDeviceCSR signs the PKCS#10 request an AMT device made for a key it
// generated and keeps (amt.key_on_device). Only the agent holding the
// job's live lease may ask, only for a job phase 1 prepared for it, and
// the certificate is the server-auth profile for the device's FQDN from
// the site database; nothing in the CSR but its key is used.
//
// Like phase 1's S1, any other live server certificate of the device is
// revoked as superseded first. A retry with the same device key returns
// the certificate already issued, so one job never leaves two live.
func (s *AgentService) SignDeviceCSR(ctx context.Context, req *pb.SignDeviceCSRRequest) (*pb.SignDeviceCSRResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	p, batch, devID, err := leaseRef(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	if s.opts.DeviceCA == nil {
		return nil, status.Error(codes.FailedPrecondition, "api: sign device csr: no device CA configured on this server")
	}
	csr, spki, err := parseDeviceCSR(req.GetCsrDer())
	if err != nil {
		return nil, ToStatus(err)
	}
	jobID, token := req.GetLease().GetJobId(), req.GetLease().GetToken()
	// The lease first, as Complete does: a stale token changes nothing.
	if _, err := s.q.Extend(ctx, p, jobID, token, s.opts.LeaseTTL); err != nil {
		return nil, ToStatus(fmt.Errorf("api: sign device csr for %s: %w", jobID, err))
	}
	job, err := s.st.GetJob(ctx, batch, jobID)
	if err != nil {
		return nil, ToStatus(err)
	}
	if job.DeviceID != devID || job.Kind != domain.KindProvision && job.Kind != domain.KindUpdate {
		return nil, status.Errorf(codes.FailedPrecondition, "api: sign device csr: job %s is a %s job, not provisioning", jobID, job.Kind)
	}
	prepared, err := s.st.GetSecret(ctx, phase1.SignOnDeviceSecret(jobID))
	if errors.Is(err, domain.ErrNotFound) {
		return nil, status.Errorf(codes.FailedPrecondition, "api: sign device csr: job %s was not prepared for key_on_device", jobID)
	}
	if err != nil {
		return nil, ToStatus(err)
	}
	dev, err := s.st.GetDevice(ctx, devID)
	if err != nil {
		return nil, ToStatus(err)
	}
	fqdn := dev.FQDN()
	if !strings.EqualFold(fqdn, string(prepared)) {
		// The job sets the name phase 1 saw; a certificate for another
		// name would not match it. Renamed devices are re-provisioned (S19).
		return nil, status.Errorf(codes.FailedPrecondition, "api: sign device csr: device %s is now %s, the job was prepared for %s",
			devID, fqdn, prepared)
	}
	log := s.opts.Log.With().Str("agent", a.ID).Str("job", jobID).Str("device", devID).Logger()

	if prev, ok, err := s.previous(ctx, jobID, devID, spki); err != nil {
		return nil, ToStatus(err)
	} else if ok {
		log.Info().Str("serial", prev.Serial).Msg("device csr signed before, same key: same certificate")
		return &pb.SignDeviceCSRResponse{CertificateDer: prev.Leaf, ChainDer: prev.Chain, Serial: prev.Serial}, nil
	}
	now := s.opts.Clock().UTC()
	n, err := s.revokeServerCerts(ctx, devID)
	if err != nil {
		return nil, ToStatus(fmt.Errorf("api: sign device csr for %s: %w", jobID, err))
	}
	cert, err := s.opts.DeviceCA.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: csr.Raw})
	if err != nil {
		return nil, ToStatus(fmt.Errorf("api: sign device csr for %s: %w", jobID, err))
	}
	rec := cert.Record(devID, domain.PurposeServerAuth, now)
	rec.JobID = jobID
	if err := s.st.PutCertificate(ctx, rec); err != nil {
		return nil, ToStatus(err)
	}
	b, err := json.Marshal(deviceSigned{Serial: cert.Serial, Leaf: cert.Leaf, Chain: cert.Chain, SPKI: spki})
	if err != nil {
		return nil, ToStatus(err)
	}
	if err := s.st.PutSecret(ctx, signedSecret(jobID), b); err != nil {
		return nil, ToStatus(err)
	}
	detail := fmt.Sprintf("serial %s for %s, key generated on the device", cert.Serial, fqdn)
	if n > 0 {
		detail += fmt.Sprintf("; revoked %d superseded server certificate(s)", n)
	}
	if err := s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: devID, JobID: jobID, Phase: 2, Step: StepSignDeviceCSR,
		Outcome: domain.OutcomeOK, Detail: detail, Actor: a.ID, Time: now}); err != nil {
		log.Warn().Err(err).Msg("operations log append failed")
	}
	log.Info().Str("serial", cert.Serial).Int("revoked", n).Msg("device csr signed")
	return &pb.SignDeviceCSRResponse{CertificateDer: cert.Leaf, ChainDer: cert.Chain, Serial: cert.Serial}, nil
}

// parseDeviceCSR checks what the device sent: a PKCS#10 request whose
// signature verifies with an RSA key of at least 2048 bits (what AMT makes
// with GenerateKeyPair). It returns the request and its key, DER.
func parseDeviceCSR(der []byte) (*x509.CertificateRequest, []byte, error) {
	if len(der) == 0 {
		return nil, nil, domain.InvalidField("csr_der", "", "required")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, domain.InvalidField("csr_der", "", "not a DER PKCS#10 request: "+err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, domain.InvalidField("csr_der", "", "signature does not verify: "+err.Error())
	}
	k, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, nil, domain.InvalidField("csr_der", fmt.Sprintf("%T", csr.PublicKey), "AMT keys are RSA")
	}
	if k.N.BitLen() < pki.KeyBits {
		return nil, nil, domain.InvalidField("csr_der", fmt.Sprint(k.N.BitLen()), "RSA key shorter than 2048 bits")
	}
	return csr, csr.RawSubjectPublicKeyInfo, nil
}

// previous returns the certificate this job already had signed for spki,
// while it is still live.
func (s *AgentService) previous(ctx context.Context, jobID, devID string, spki []byte) (deviceSigned, bool, error) {
	var prev deviceSigned
	b, err := s.st.GetSecret(ctx, signedSecret(jobID))
	if errors.Is(err, domain.ErrNotFound) {
		return prev, false, nil
	}
	if err != nil {
		return prev, false, err
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		return prev, false, fmt.Errorf("api: decode signed certificate of %s: %w", jobID, err)
	}
	if !bytes.Equal(prev.SPKI, spki) {
		return prev, false, nil
	}
	certs, err := s.st.CertificatesByDevice(ctx, devID)
	if err != nil {
		return prev, false, err
	}
	for _, c := range certs {
		if c.Serial == prev.Serial {
			return prev, c.Status.Live(), nil
		}
	}
	return prev, false, nil
}

// revokeServerCerts revokes every live server certificate of the device
// as superseded, the CA first (phase 1's S1 order: a lost record update
// is redone by the next run).
func (s *AgentService) revokeServerCerts(ctx context.Context, devID string) (int, error) {
	certs, err := s.st.CertificatesByDevice(ctx, devID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range certs {
		if c.Purpose != domain.PurposeServerAuth || !c.Status.Live() {
			continue
		}
		if err := s.opts.DeviceCA.Revoke(ctx, c.Serial, domain.ReasonSuperseded); err != nil {
			return n, fmt.Errorf("revoke %s: %w", c.Serial, err)
		}
		if _, err := s.st.UpdateCertificateStatus(ctx, c.Serial, domain.CertRevoked, domain.ReasonSuperseded, s.opts.Clock().UTC()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
