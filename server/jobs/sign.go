package jobs

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
)

// deviceSigned is a job's certificate for a device-generated key.
type deviceSigned struct {
	issued
	SPKI []byte `json:"spki"` // the device key, to recognise a retry
}

// Signed is the certificate SignDeviceCSR issued: leaf, chain and serial.
type Signed struct {
	Serial string
	Leaf   []byte
	Chain  [][]byte
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
func (p *Service) SignDeviceCSR(ctx context.Context, agentID string, l domain.LeaseRef, csrDER []byte) (Signed, error) {
	if p.ca == nil {
		return Signed{}, fmt.Errorf("jobs: sign device csr: no device CA configured on this server: %w", domain.ErrConflict)
	}
	csr, spki, err := parseDeviceCSR(csrDER)
	if err != nil {
		return Signed{}, err
	}
	// The lease first, as Complete does: a stale token changes nothing.
	if _, err := p.queue.Extend(ctx, l.Subnet, l.JobID, l.Token, p.cfg.LeaseTTL); err != nil {
		return Signed{}, fmt.Errorf("jobs: sign device csr for %s: %w", l.JobID, err)
	}
	job, err := p.leasedJob(ctx, l)
	if err != nil {
		return Signed{}, err
	}
	if job.Kind != domain.KindProvision && job.Kind != domain.KindUpdate {
		return Signed{}, fmt.Errorf("jobs: sign device csr: job %s is a %s job, not provisioning: %w", l.JobID, job.Kind, domain.ErrConflict)
	}
	prepared, err := p.store.GetSecret(ctx, signOnDeviceSecret(l.JobID))
	if errors.Is(err, domain.ErrNotFound) {
		return Signed{}, fmt.Errorf("jobs: sign device csr: job %s was not prepared for key_on_device: %w", l.JobID, domain.ErrConflict)
	}
	if err != nil {
		return Signed{}, err
	}
	dev, err := p.store.GetDevice(ctx, job.DeviceID)
	if err != nil {
		return Signed{}, err
	}
	fqdn := dev.FQDN()
	if !strings.EqualFold(fqdn, string(prepared)) {
		// The job sets the name phase 1 saw; a certificate for another
		// name would not match it. Renamed devices are re-provisioned (S19).
		return Signed{}, fmt.Errorf("jobs: sign device csr: device %s is now %s, the job was prepared for %s: %w",
			job.DeviceID, fqdn, prepared, domain.ErrConflict)
	}
	log := p.log.With().Str("agent", agentID).Str("job", l.JobID).Str("device", job.DeviceID).Logger()

	if prev, ok, err := p.previous(ctx, l.JobID, job.DeviceID, spki); err != nil {
		return Signed{}, err
	} else if ok {
		log.Info().Str("serial", prev.Serial).Msg("device csr signed before, same key: same certificate")
		return Signed(prev.issued), nil
	}
	n, err := p.revoke(ctx, job.DeviceID, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return c.Purpose == domain.PurposeServerAuth
	})
	if err != nil {
		return Signed{}, fmt.Errorf("jobs: sign device csr for %s: %w", l.JobID, err)
	}
	var signed issued
	cert, err := p.issueRecorded(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: csr.Raw},
		domain.CertificateRecord{DeviceID: job.DeviceID, Purpose: domain.PurposeServerAuth, JobID: l.JobID}, signedSecret(l.JobID),
		func(c *pki.Issued) ([]byte, error) {
			signed = issued{Serial: c.Serial, Leaf: c.Leaf, Chain: c.Chain}
			return json.Marshal(deviceSigned{issued: signed, SPKI: spki})
		})
	if err != nil {
		return Signed{}, fmt.Errorf("jobs: sign device csr for %s: %w", l.JobID, err)
	}
	now := p.now().UTC()
	detail := fmt.Sprintf("serial %s for %s, key generated on the device", cert.Serial, fqdn)
	if n > 0 {
		detail += fmt.Sprintf("; revoked %d superseded server certificate(s)", n)
	}
	if err := p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: l.JobID, Phase: 2, Step: StepSignDeviceCSR,
		Outcome: domain.OutcomeOK, Detail: detail, Actor: agentID, Time: now}); err != nil {
		log.Warn().Err(err).Msg("operations log append failed")
	}
	log.Info().Str("serial", cert.Serial).Int("revoked", n).Msg("device csr signed")
	return Signed(signed), nil
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
func (p *Service) previous(ctx context.Context, jobID, devID string, spki []byte) (deviceSigned, bool, error) {
	prev, ok, err := p.earlier(ctx, jobID, devID)
	if !ok || err != nil || !bytes.Equal(prev.SPKI, spki) {
		return prev, false, err
	}
	return prev, true, nil
}

// SignedEarlier is the certificate an earlier attempt of the job had
// signed for a key on the device, while it is live. A re-leased job
// carries it: when that attempt's commit went through before its lease
// was lost, the device already serves this leaf, and the retry can tell
// it was activated instead of opening a provisioning session the
// activated device no longer offers.
func (p *Service) SignedEarlier(ctx context.Context, jobID, devID string) (Signed, bool, error) {
	prev, ok, err := p.earlier(ctx, jobID, devID)
	return Signed(prev.issued), ok, err
}

func (p *Service) earlier(ctx context.Context, jobID, devID string) (deviceSigned, bool, error) {
	var prev deviceSigned
	b, err := p.store.GetSecret(ctx, signedSecret(jobID))
	if errors.Is(err, domain.ErrNotFound) {
		return prev, false, nil
	}
	if err != nil {
		return prev, false, err
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		return prev, false, fmt.Errorf("jobs: decode signed certificate of %s: %w", jobID, err)
	}
	certs, err := p.store.CertificatesByDevice(ctx, devID)
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
