package jobs

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Certificates: what a job revokes, issues and hands the agent to verify
// the device with.

// revokeSuperseded is S1: every live server-auth certificate the site
// issued for this device, other than this job's own, is revoked.
func (r *run) revokeSuperseded(ctx context.Context) (string, error) {
	n, err := r.revoke(ctx, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return c.Purpose == domain.PurposeServerAuth && c.JobID != r.t.JobID
	})
	return fmt.Sprintf("revoked %d superseded server certificate(s)", n), err
}

// revokeAll is S17: every certificate issued for the device is revoked.
func (r *run) revokeAll(ctx context.Context) (string, error) {
	n, err := r.revoke(ctx, domain.ReasonCessationOfOperation, func(domain.CertificateRecord) bool { return true })
	return fmt.Sprintf("revoked %d certificate(s)", n), err
}

func (r *run) revoke(ctx context.Context, reason domain.RevocationReason, which func(domain.CertificateRecord) bool) (int, error) {
	return r.p.revoke(ctx, r.dev.ID, reason, which)
}

// revoke revokes the device's live certificates that which selects. Each
// revocation and its record run on a context the caller cannot cancel: a
// caller gone between the two left a certificate revoked at the CA and
// live in the record, which a retry of SignDeviceCSR then handed back as
// its own, and the device served (make chaos, simulator faults).
func (p *Service) revoke(ctx context.Context, deviceID string, reason domain.RevocationReason, which func(domain.CertificateRecord) bool) (int, error) {
	certs, err := p.store.CertificatesByDevice(ctx, deviceID)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	n := 0
	for _, c := range certs {
		if !c.Status.Live() || !which(c) {
			continue
		}
		// The CA first: if the record update is lost, the next run revokes
		// again, which CAs accept. A request the CA does not know was never
		// issued: its answer was lost before the CA stored it.
		status := domain.CertRevoked
		if err := p.ca.Revoke(ctx, c.Serial, reason); c.Status == domain.CertRequested && errors.Is(err, domain.ErrNotFound) {
			status = domain.CertNotIssued
		} else if err != nil {
			return n, fmt.Errorf("revoke %s: %w", c.Serial, err)
		}
		if err := retry(ctx, func() error {
			_, err := p.store.UpdateCertificateStatus(ctx, c.Serial, status, reason, p.now())
			return err
		}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// issued is what a job keeps of a certificate it had issued.
type issued struct {
	Serial string   `json:"serial"`
	Leaf   []byte   `json:"leaf"`
	Chain  [][]byte `json:"chain"`
}

// issue gets one certificate for purpose, reusing the one this job had
// issued already. The key is made and sealed before the CA is asked, so
// a re-run never asks twice for the same key.
func (r *run) issue(ctx context.Context, purpose domain.CertPurpose, profile pki.Profile) (issued, []byte, error) {
	var out issued
	keyDER, err := r.keyFor(ctx, purpose)
	if err != nil {
		return out, nil, err
	}
	if b, err := r.p.store.GetSecret(ctx, certSecret(r.t.JobID, purpose)); err == nil {
		if err := json.Unmarshal(b, &out); err != nil {
			return out, nil, fmt.Errorf("decode issued %s: %w", purpose, err)
		}
		return out, keyDER, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return out, nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return out, nil, fmt.Errorf("parse sealed key: %w", err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return out, nil, fmt.Errorf("sealed key is %T, want RSA", parsed)
	}
	csr, err := pki.CSR(key, r.dev.FQDN())
	if err != nil {
		return out, nil, err
	}
	// Without the job's copy, any certificate an earlier run of this job
	// recorded for purpose was never handed out: a run stopped between
	// the request and the copy left it.
	if _, err := r.revoke(ctx, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return c.JobID == r.t.JobID && c.Purpose == purpose
	}); err != nil {
		return out, nil, err
	}
	_, err = r.p.issueRecorded(ctx, pki.Request{Profile: profile, FQDN: r.dev.FQDN(), CSR: csr},
		domain.CertificateRecord{DeviceID: r.dev.ID, Purpose: purpose, JobID: r.t.JobID}, certSecret(r.t.JobID, purpose),
		func(c *pki.Issued) ([]byte, error) {
			out = issued{Serial: c.Serial, Leaf: c.Leaf, Chain: c.Chain}
			return json.Marshal(out)
		})
	if err != nil {
		return out, nil, fmt.Errorf("issue %s: %w", purpose, err)
	}
	return out, keyDER, nil
}

// issueRecorded asks the CA for a certificate for rec's device, purpose
// and job and records it, with the job's copy under secret (copyOf makes
// it). A CA cannot take an issue back, so every way of stopping half-way
// would leave a live certificate the site never revokes (issue 14,
// orphan certificates):
//   - the caller going away (an agent's call cancelled, a phase-1 task's
//     deadline): the work runs on a context the caller cannot cancel;
//   - a store outage: the writes are retried, and a certificate still
//     unrecorded after recordTimeout is revoked at the CA;
//   - a crash, or an answer lost between the CA and us: with a CA that
//     takes our serial, the serial is recorded "requested" before the CA
//     is asked; the job's re-run, its failure or the next provisioning
//     revokes it.
func (p *Service) issueRecorded(ctx context.Context, req pki.Request, rec domain.CertificateRecord, secret string,
	copyOf func(*pki.Issued) ([]byte, error)) (*pki.Issued, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	requested := false
	if t, ok := p.ca.(pki.SerialTaker); ok && t.TakesSerial() {
		if _, err := pki.CheckRequest(req); err != nil {
			return nil, fmt.Errorf("issue: %w", err) // refused before anything is recorded
		}
		n, err := pki.RandomSerial()
		if err != nil {
			return nil, err
		}
		req.Serial = n.String()
		rec.Serial, rec.Status, rec.Subject, rec.UpdatedAt = req.Serial, domain.CertRequested, req.FQDN, p.now().UTC()
		if err := retry(wctx, func() error { return p.store.PutCertificate(wctx, rec) }); err != nil {
			return nil, fmt.Errorf("record certificate request: %w", err)
		}
		requested = true
	}
	cert, err := p.ca.Issue(wctx, req)
	if err != nil {
		// A refusal issued nothing; any other failure may have, and the
		// request stays live for the revoking paths to settle.
		if requested && (domain.IsPermanent(err) || errors.As(err, new(*domain.FieldError))) {
			if _, uerr := p.store.UpdateCertificateStatus(wctx, rec.Serial, domain.CertNotIssued, 0, p.now()); uerr != nil {
				p.log.Warn().Err(uerr).Str("serial", rec.Serial).Msg("refused certificate request still recorded as requested")
			}
		}
		return nil, err
	}
	body, err := copyOf(cert)
	if err != nil {
		return nil, err
	}
	full := cert.Record(rec.DeviceID, rec.Purpose, p.now().UTC())
	full.JobID = rec.JobID
	if err := p.recordIssued(wctx, full, secret, body); err != nil {
		return nil, err
	}
	return cert, nil
}

// recordTimeout bounds how long the record of an issued certificate is
// retried: longer than a Redis restart or failover, shorter than a lease.
var recordTimeout = 30 * time.Second

// recordIssued records a certificate the CA has just issued, and the
// job's copy of it under secret, retrying until ctx ends; a certificate
// it cannot record is revoked at the CA before the error is returned, so
// the job's re-run issues a fresh one.
func (p *Service) recordIssued(wctx context.Context, rec domain.CertificateRecord, secret string, body []byte) error {
	err := retry(wctx, func() error { return p.store.PutCertificate(wctx, rec) })
	if err == nil {
		err = retry(wctx, func() error { return p.store.PutSecret(wctx, secret, body) })
	}
	if err == nil {
		return nil
	}
	log := p.log.With().Str("serial", rec.Serial).Str("device", rec.DeviceID).Str("job", rec.JobID).Logger()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(wctx), recordTimeout)
	defer rcancel()
	if rerr := retry(rctx, func() error { return p.ca.Revoke(rctx, rec.Serial, domain.ReasonUnspecified) }); rerr != nil {
		// Nothing more can be done here: say which serial to revoke.
		log.Error().Err(err).AnErr("revoke_error", rerr).Msg("certificate issued but neither recorded nor revoked: revoke it at the CA")
		return fmt.Errorf("record certificate %s: %w", rec.Serial, err)
	}
	if _, uerr := p.store.UpdateCertificateStatus(rctx, rec.Serial, domain.CertRevoked, domain.ReasonUnspecified, p.now()); uerr != nil && !errors.Is(uerr, domain.ErrNotFound) {
		log.Warn().Err(uerr).Msg("unrecorded certificate revoked at the CA; its record still says issued")
	}
	log.Warn().Err(err).Msg("certificate could not be recorded: revoked at the CA")
	return fmt.Errorf("record certificate %s (revoked): %w", rec.Serial, err)
}

// retry runs fn until it succeeds or ctx ends, pausing 100 ms, doubling
// to 2 s, between tries. Only a store or CA outage is worth the wait: an
// error that says the request itself is wrong ends it at once.
func retry(ctx context.Context, fn func() error) error {
	pause := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || domain.IsPermanent(err) || errors.Is(err, domain.ErrNotFound) || errors.As(err, new(*domain.FieldError)) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Second)
	}
}

func (r *run) keyFor(ctx context.Context, purpose domain.CertPurpose) ([]byte, error) {
	name := keySecret(r.t.JobID, purpose)
	if b, err := r.p.store.GetSecret(ctx, name); err == nil {
		return b, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return nil, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	if created, err := r.p.store.CreateSecret(ctx, name, der); err != nil {
		return nil, err
	} else if !created {
		return r.p.store.GetSecret(ctx, name)
	}
	return der, nil
}

// issueServerCert is S2 (and the material for S7).
func (r *run) issueServerCert(ctx context.Context) (string, error) {
	r.job.Tls = &pb.TLSMaterial{MutualAuth: r.p.site.MutualTLS, KeyOnDevice: r.p.site.KeyOnDevice}
	if r.p.site.KeyOnDevice {
		// The device makes its key and CSR in phase 2; the agent asks the
		// server to sign it then (SignDeviceCSR), which only signs for a
		// job marked here, and for the name marked. The chain goes in now
		// so that the job carries its trust anchor like any other.
		if err := r.p.store.PutSecret(ctx, signOnDeviceSecret(r.t.JobID), []byte(r.dev.FQDN())); err != nil {
			return "", err
		}
		chain, err := caChain(ctx, r.p.ca)
		if err != nil {
			return "", err
		}
		r.job.Tls.ChainDer = chain
		return "skipped: key on device, signed during phase 2", nil
	}
	c, key, err := r.issue(ctx, domain.PurposeServerAuth, pki.ProfileServerAuth)
	if err != nil {
		return "", err
	}
	r.job.Tls.CertificateDer, r.job.Tls.PrivateKeyDer, r.job.Tls.ChainDer, r.job.Tls.Serial = c.Leaf, key, c.Chain, c.Serial
	return "serial " + c.Serial + " for " + r.dev.FQDN(), nil
}

// issueClientCerts is S3 (provision) and S14 (update): client certificates
// for the configured 802.1X and wireless networks, replacing earlier ones.
func (r *run) issueClientCerts(ctx context.Context) (string, error) {
	nets := r.p.site.Networks
	if !nets.Wired8021X && len(nets.Wireless) == 0 {
		return "skipped: no 802.1X or wireless networks configured", nil
	}
	type want struct {
		purpose domain.CertPurpose
		kind    pb.NetworkProfile_Kind
		spec    config.WiFiSpec
	}
	var wants []want
	if nets.Wired8021X {
		wants = append(wants, want{domain.Purpose8021X, pb.NetworkProfile_KIND_WIRED_8021X, config.WiFiSpec{Name: "wired"}})
	}
	// S15: over a wireless link the agent leaves the wireless profiles
	// alone, so their client certificate stays: revoking it would cut the
	// link the device is managed over.
	keepWireless := r.t.Kind == domain.KindUpdate && r.dev.Link == domain.LinkWireless
	if !keepWireless {
		for _, w := range nets.Wireless {
			wants = append(wants, want{domain.PurposeWireless, pb.NetworkProfile_KIND_WIRELESS, w})
		}
	}
	kept := ""
	if keepWireless && len(nets.Wireless) > 0 {
		kept = "; wireless certificate kept (managed over wireless)"
	}
	if len(wants) == 0 {
		return "skipped: no client certificate to renew" + kept, nil
	}
	if _, err := r.revoke(ctx, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return (c.Purpose == domain.Purpose8021X || c.Purpose == domain.PurposeWireless && !keepWireless) && c.JobID != r.t.JobID
	}); err != nil {
		return "", err
	}
	// One client certificate per purpose serves every profile of that purpose.
	byPurpose := map[domain.CertPurpose]issued{}
	keys := map[domain.CertPurpose][]byte{}
	for _, w := range wants {
		if _, ok := byPurpose[w.purpose]; !ok {
			c, key, err := r.issue(ctx, w.purpose, pki.ProfileClientAuth)
			if err != nil {
				return "", err
			}
			byPurpose[w.purpose], keys[w.purpose] = c, key
		}
		c := byPurpose[w.purpose]
		r.job.Networks = append(r.job.Networks, &pb.NetworkProfile{Kind: w.kind, Name: w.spec.Name, Ssid: w.spec.SSID,
			Priority: int32(w.spec.Priority), ClientCertificateDer: c.Leaf, ClientKeyDer: keys[w.purpose],
			RadiusRootDer: c.Chain[len(c.Chain)-1:], ClientSerial: c.Serial})
	}
	return fmt.Sprintf("%d client certificate(s) for %d network profile(s)%s", len(byPurpose), len(wants), kept), nil
}

// caChain is the CA's chain without a certificate: intermediates, then
// the root. Both backends can give it (pki.Chainer); one that cannot is a
// configuration this job cannot run with.
func caChain(ctx context.Context, ca CA) ([][]byte, error) {
	c, ok := ca.(pki.Chainer)
	if !ok {
		return nil, domain.Permanent(fmt.Errorf("the configured CA (%T) cannot give its chain without issuing a certificate", ca))
	}
	chain, err := c.CAChain(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca chain: %w", err)
	}
	return chain, nil
}

// trust gives an update or removal job what the agent verifies the
// device's TLS certificate with: the chain of the newest server
// certificate the site issued for the device, else the CA's root (a key
// generated on the device leaves no chain here). The agent checks the
// chain's root and the FQDN, so a revoked leaf still verifies: removal
// revokes before the agent connects.
func (r *run) trust(ctx context.Context) (string, error) {
	r.job.Tls = &pb.TLSMaterial{MutualAuth: r.p.site.MutualTLS}
	certs, err := r.p.store.CertificatesByDevice(ctx, r.dev.ID)
	if err != nil {
		return "", err
	}
	rank := map[domain.CertStatus]int{domain.CertInstalled: 3, domain.CertIssued: 2, domain.CertRevoked: 1}
	var best *domain.CertificateRecord
	for i, c := range certs {
		if c.Purpose != domain.PurposeServerAuth || c.JobID == "" {
			continue
		}
		if best == nil || rank[c.Status] > rank[best.Status] ||
			rank[c.Status] == rank[best.Status] && c.NotBefore.After(best.NotBefore) {
			best = &certs[i]
		}
	}
	if best != nil {
		b, err := r.p.store.GetSecret(ctx, certSecret(best.JobID, domain.PurposeServerAuth))
		switch {
		case err == nil:
			var is issued
			if err := json.Unmarshal(b, &is); err != nil {
				return "", fmt.Errorf("decode issued %s: %w", best.Serial, err)
			}
			r.job.Tls.CertificateDer, r.job.Tls.ChainDer, r.job.Tls.Serial = is.Leaf, is.Chain, is.Serial
			return "chain of server certificate " + is.Serial, nil
		case !errors.Is(err, domain.ErrNotFound):
			return "", err
		}
	}
	if _, ok := r.p.ca.(pki.Chainer); !ok {
		return "skipped: no chain or root known; the agent can only use HTTP", nil
	}
	chain, err := caChain(ctx, r.p.ca)
	if err != nil {
		return "", err
	}
	r.job.Tls.ChainDer = chain
	return "the CA's chain", nil
}
