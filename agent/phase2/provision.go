package phase2

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
)

// provision is S7–S10: stage "tls" over the provisioning connection, then
// stage "settings" over TLS.
func (r *job) provision(ctx context.Context) error {
	if err := r.connect(ctx, false); err != nil {
		return err
	}
	if err := r.identity(ctx); err != nil {
		return err
	}
	leaf := r.j.GetTls().GetCertificateDer()
	r.serial = r.j.GetTls().GetSerial()
	done := false
	if r.conn.tls && len(leaf) > 0 {
		// A previous attempt got as far as TLS: skip stage 1 when the
		// device already serves our certificate.
		if served, err := r.servedLeaf(ctx); err == nil && bytes.Equal(served, leaf) {
			done = true
		}
	}
	if done {
		for _, s := range []string{StepInstallRoot, StepInstallKey, StepInstallCert, StepSetFQDN, StepEnableTLS, StepCommit, StepVerifyTLS} {
			r.rep.Step(ctx, s, domain.OutcomeSkipped, "TLS already serves the installed certificate")
		}
		// The clock is cheap to set and drifts: always set it.
		if err := r.syncClock(ctx); err != nil {
			return err
		}
	} else if err := r.tlsStage(ctx); err != nil {
		return err
	}
	if err := r.settingsStage(ctx, false); err != nil {
		return err
	}
	// The link as provisioning left it (an 802.1X profile may have just
	// been applied): the site keeps it, so a later update can check S15
	// before it revokes anything. Not knowing it fails nothing.
	if err := r.step(ctx, StepDetectLink, func() (string, error) {
		link, err := r.detectLink(ctx)
		if err != nil {
			return "", skipped{"link not detected: " + err.Error()}
		}
		r.facts.Link = link
		return link.String(), nil
	}); err != nil {
		return err
	}
	r.facts.InstalledSerial = r.serial
	r.facts.ProvisioningState = amt.ProvisioningStatePost
	return nil
}

// tlsStage installs the chain, key and leaf, sets FQDN and clock, turns
// TLS on, commits and checks that the device serves our leaf.
func (r *job) tlsStage(ctx context.Context) error {
	t := r.j.GetTls()
	leaf, chain := t.GetCertificateDer(), t.GetChainDer()
	if t.GetKeyOnDevice() {
		var err error
		if leaf, chain, err = r.keyOnDevice(ctx); err != nil {
			return err
		}
	}
	if err := r.step(ctx, StepInstallRoot, func() (string, error) {
		root := chain[len(chain)-1]
		id, err := r.installCert(ctx, root, true)
		if err != nil {
			return "", fmt.Errorf("root: %w", err)
		}
		for i, der := range chain[:len(chain)-1] {
			if _, err := r.installCert(ctx, der, false); err != nil {
				return "", fmt.Errorf("intermediate %d: %w", i, err)
			}
		}
		return fmt.Sprintf("root %s, %d intermediates", id, len(chain)-1), nil
	}); err != nil {
		return err
	}
	if !t.GetKeyOnDevice() {
		if err := r.step(ctx, StepInstallKey, func() (string, error) {
			return r.installKey(ctx, t.GetPrivateKeyDer())
		}); err != nil {
			return err
		}
	}
	var certID string
	if err := r.step(ctx, StepInstallCert, func() (string, error) {
		id, err := r.installCert(ctx, leaf, false)
		certID = id
		return id, err
	}); err != nil {
		return err
	}
	if err := r.step(ctx, StepSetFQDN, func() (string, error) {
		host, dom := r.j.GetTarget().GetHostName(), r.j.GetTarget().GetDomain()
		if r.ident != nil && r.ident.HostName == host && r.ident.DomainName == dom {
			return "", skipped{"already " + r.fqdn()}
		}
		return r.fqdn(), r.dev.SetFQDN(ctx, host, dom)
	}); err != nil {
		return err
	}
	if err := r.syncClock(ctx); err != nil {
		return err
	}
	if err := r.step(ctx, StepEnableTLS, func() (string, error) {
		if err := r.dev.BindTLSCertificate(ctx, certID); err != nil {
			return "", r.lostInstall(ctx, certID, err)
		}
		if err := r.dev.SetTLS(ctx, amt.TLSSettingsRemote, true, t.GetMutualAuth(), false); err != nil {
			return "", r.lostInstall(ctx, certID, err)
		}
		return "bound " + certID, nil
	}); err != nil {
		return err
	}
	committed := r.e.cfg.Now()
	if err := r.commit(ctx); err != nil {
		return err
	}
	if err := r.step(ctx, StepVerifyTLS, func() (string, error) {
		return r.verifyTLS(ctx, leaf, committed)
	}); err != nil {
		return err
	}
	return r.reconnect(ctx, true, r.conn.password)
}

// lostInstall explains a fault about a certificate installed earlier in
// this attempt: when the device no longer has it, a reset dropped the
// uncommitted install and the next attempt installs it again (transient);
// otherwise the fault stands.
func (r *job) lostInstall(ctx context.Context, certID string, err error) error {
	var fe *wsman.FaultError
	if !errors.As(err, &fe) {
		return err
	}
	certs, lerr := r.dev.Certificates(ctx)
	if lerr != nil || slices.ContainsFunc(certs, func(c amt.Certificate) bool { return c.InstanceID == certID }) {
		return err
	}
	return transientError{fmt.Errorf("the device lost certificate %s before the commit (a reset?): %w", certID, err)}
}

func (r *job) syncClock(ctx context.Context) error {
	return r.step(ctx, StepSyncClock, func() (string, error) {
		return "", r.dev.SyncClock(ctx, r.e.cfg.Now)
	})
}

// commit calls CommitChanges. A transport error may mean the firmware
// restarted before answering: the commit may well have happened, so the
// caller's verification decides.
func (r *job) commit(ctx context.Context) error {
	return r.step(ctx, StepCommit, func() (string, error) {
		err := r.dev.CommitChanges(ctx)
		if err != nil && wsman.Retryable(err) && ctx.Err() == nil {
			return "no answer (network restart); verifying", nil
		}
		return "", err
	})
}

// verifyTLS waits CommitWait, then polls the TLS port until it serves leaf
// (any certificate that verifies when leaf is nil) or CommitDeadline (from
// the commit) passes.
func (r *job) verifyTLS(ctx context.Context, leaf []byte, committed time.Time) (string, error) {
	if err := sleep(ctx, r.e.cfg.CommitWait); err != nil {
		return "", err
	}
	deadline := committed.Add(r.e.cfg.CommitDeadline)
	var lastErr error
	for attempt := 1; ; attempt++ {
		// A probe that hangs must not outlive the deadline.
		pctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Second))
		served, err := r.servedLeaf(pctx)
		cancel()
		switch {
		case err == nil && (leaf == nil || bytes.Equal(served, leaf)):
			return fmt.Sprintf("TLS answering after %d probes", attempt), nil
		case err == nil:
			lastErr = errors.New("device serves a different certificate than the one installed")
		default:
			lastErr = err
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if r.e.cfg.Now().Add(r.e.cfg.PollInterval).After(deadline) {
			return "", transientError{fmt.Errorf("TLS port not serving the installed certificate within %s: %w", r.e.cfg.CommitDeadline, lastErr)}
		}
		if err := sleep(ctx, r.e.cfg.PollInterval); err != nil {
			return "", err
		}
	}
}

// installCert adds a certificate; one already there (DUPLICATE) counts as
// installed and its handle is looked up.
func (r *job) installCert(ctx context.Context, der []byte, trustedRoot bool) (string, error) {
	var id string
	var err error
	if trustedRoot {
		id, err = r.dev.AddTrustedRootCertificate(ctx, der)
	} else {
		id, err = r.dev.AddCertificate(ctx, der)
	}
	if !isReturn(err, wsman.StatusDuplicate) {
		return id, err
	}
	certs, lerr := r.dev.Certificates(ctx)
	if lerr != nil {
		return "", lerr
	}
	for _, c := range certs {
		if bytes.Equal(c.DER, der) {
			return c.InstanceID, nil
		}
	}
	return "", fmt.Errorf("device reports the certificate as duplicate but does not list it: %w", err)
}

// installKey adds the site-generated key (PKCS#8 in the job, PKCS#1 on the
// wire); a key already there counts as installed.
func (r *job) installKey(ctx context.Context, der []byte) (string, error) {
	key, err := rsaKey(der)
	if err != nil {
		return "", err
	}
	id, err := r.dev.AddKey(ctx, x509.MarshalPKCS1PrivateKey(key))
	if isReturn(err, wsman.StatusDuplicateKey) || isReturn(err, wsman.StatusDuplicate) {
		return "key already on the device", nil
	}
	return id, err
}

func rsaKey(der []byte) (*rsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		if k1, err1 := x509.ParsePKCS1PrivateKey(der); err1 == nil {
			return k1, nil
		}
		return nil, fmt.Errorf("private key is neither PKCS#8 nor PKCS#1: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, AMT takes RSA only", k)
	}
	return rk, nil
}

func isReturn(err error, code int) bool {
	var rve *wsman.ReturnValueError
	return errors.As(err, &rve) && rve.Code == code
}

// keyOnDevice has the device generate its key and sign a CSR, which the
// site signs through Config.SignCSR; it returns the leaf and chain.
func (r *job) keyOnDevice(ctx context.Context) (leaf []byte, chain [][]byte, err error) {
	err = r.step(ctx, StepInstallKey, func() (string, error) {
		keyID, err := r.dev.GenerateKeyPair(ctx, 2048)
		if err != nil {
			return "", err
		}
		keys, err := r.dev.Keys(ctx)
		if err != nil {
			return "", err
		}
		var pub *rsa.PublicKey
		for _, k := range keys {
			if k.InstanceID == keyID {
				if pub, err = x509.ParsePKCS1PublicKey(k.PublicDER); err != nil {
					return "", fmt.Errorf("device key %s: %w", keyID, err)
				}
			}
		}
		if pub == nil {
			return "", fmt.Errorf("generated key %s is not listed", keyID)
		}
		null, err := nullSignedCSR(pub, r.fqdn())
		if err != nil {
			return "", err
		}
		b64, err := r.dev.GeneratePKCS10RequestEx(ctx, keyID, null, amt.SigningAlgorithmSHA256RSA)
		if err != nil {
			return "", err
		}
		csr, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return "", fmt.Errorf("device CSR is not base64: %w", wsman.ErrMalformed)
		}
		var serial string
		leaf, chain, serial, err = r.e.cfg.SignCSR(ctx, csr)
		if err != nil {
			return "", fmt.Errorf("sign device CSR: %w", err)
		}
		if len(leaf) == 0 || len(chain) == 0 {
			return "", errors.New("sign device CSR: empty leaf or chain")
		}
		r.serial = serial
		return "key generated on the device " + keyID + ", certificate serial " + serial, nil
	})
	return leaf, chain, err
}

// nullSignedCSR builds the PKCS#10 request GeneratePKCS10RequestEx wants:
// the device's public key and our subject, with an empty signature the
// device replaces.
func nullSignedCSR(pub *rsa.PublicKey, cn string) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	subj, err := asn1.Marshal(pkix.Name{CommonName: cn}.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	info := struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes asn1.RawValue
	}{
		Subject:    asn1.RawValue{FullBytes: subj},
		PublicKey:  asn1.RawValue{FullBytes: spki},
		Attributes: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{}},
	}
	infoDER, err := asn1.Marshal(info)
	if err != nil {
		return nil, err
	}
	req := struct {
		Info      asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{
		Info:      asn1.RawValue{FullBytes: infoDER},
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, Parameters: asn1.NullRawValue},
		Signature: asn1.BitString{Bytes: []byte{}, BitLength: 0},
	}
	return asn1.Marshal(req)
}
