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
	"github.com/amtops/amtops/internal/wsman"
)

// tlsSteps is stage 1 of provisioning (S7–S8) over the provisioning
// connection: install the chain, key and leaf, set FQDN and clock, turn
// TLS on, commit, check that the device serves our leaf and move to TLS.
// A previous attempt that got as far as TLS leaves the device serving our
// leaf: every step but the clock is then already done.
func (r *job) tlsSteps() []step {
	t := r.j.GetTls()
	done := r.tlsAlreadyServed
	var generate, install func(context.Context) (string, error)
	if t.GetKeyOnDevice() {
		// The chain to install comes with the signature, so this one is first.
		generate = r.keyOnDevice
	} else {
		install = func(ctx context.Context) (string, error) { return r.installKey(ctx, t.GetPrivateKeyDer()) }
	}
	return []step{
		// A retry may find the leaf an earlier attempt had signed served.
		{name: StepInstallKey, skip: done, run: generate},
		{name: StepInstallRoot, skip: done, run: r.installChain},
		r.mutualRootStep(done),
		{name: StepInstallKey, skip: done, run: install},
		{name: StepInstallCert, skip: done, run: func(ctx context.Context) (string, error) {
			id, err := r.installCert(ctx, r.leaf, false)
			r.certID = id
			return id, err
		}},
		{name: StepSetFQDN, skip: func(ctx context.Context) string {
			if why := done(ctx); why != "" {
				return why
			}
			if r.ident != nil && r.ident.HostName == r.j.GetTarget().GetHostName() && r.ident.DomainName == r.j.GetTarget().GetDomain() {
				return "already " + r.fqdn()
			}
			return ""
		}, run: func(ctx context.Context) (string, error) {
			return r.fqdn(), r.dev.SetFQDN(ctx, r.j.GetTarget().GetHostName(), r.j.GetTarget().GetDomain())
		}},
		// The clock is cheap to set and drifts: always set it.
		r.syncClockStep(),
		{name: StepEnableTLS, skip: done, run: func(ctx context.Context) (string, error) {
			bound, err := r.dev.TLSCredentialContexts(ctx)
			if err != nil {
				return "", err
			}
			r.replacedTLS = slices.DeleteFunc(bound, func(id string) bool { return id == r.certID })
			if err := r.dev.BindTLSCertificate(ctx, r.certID); err != nil {
				return "", r.lostInstall(ctx, r.certID, err)
			}
			if err := r.dev.SetTLS(ctx, amt.TLSSettingsRemote, true, t.GetMutualAuth(), false); err != nil {
				return "", r.lostInstall(ctx, r.certID, err)
			}
			return "bound " + r.certID, nil
		}},
		r.commitStep(done, false),
		{name: StepVerifyTLS, skip: done, run: func(ctx context.Context) (string, error) {
			d, err := r.verifyTLS(ctx, r.leaf)
			if err == nil {
				// The served leaf proves a commit that went unanswered.
				r.activated()
			}
			return d, err
		}},
		{name: StepReconnect, skip: done, run: func(ctx context.Context) (string, error) {
			// The provisioning session, if any, ended with the commit.
			r.prov = nil
			return r.reconnect(ctx, true, r.conn.password)
		}},
		// Only once the device serves the new leaf: a reset before the
		// commit would have gone back to the old one.
		{name: StepCleanup, skip: func(context.Context) string {
			return unless(len(r.replacedTLS) == 0, "no TLS certificate replaced")
		}, run: func(ctx context.Context) (string, error) { return r.deleteReplaced(ctx, r.replacedTLS), nil }},
	}
}

// tlsAlreadyServed is the TLS steps' skip: a reason when the device, on
// TLS already, served our leaf as the stage began. It is checked once,
// before any step of the stage changes the device.
func (r *job) tlsAlreadyServed(ctx context.Context) string {
	if r.tlsServed == nil {
		served := false
		// A leaf signed for a key made on the device in this attempt is
		// new: only the job's own leaf (with keys on the device, the one
		// an earlier attempt had signed) can be served already.
		if leaf := r.j.GetTls().GetCertificateDer(); r.conn.tls && r.prov == nil && len(leaf) > 0 {
			got, err := r.servedLeaf(ctx)
			served = err == nil && bytes.Equal(got, leaf)
		}
		r.tlsServed = &served
	}
	if *r.tlsServed {
		return "TLS already serves the installed certificate"
	}
	return ""
}

// installChain installs the root as trusted root and the intermediates.
func (r *job) installChain(ctx context.Context) (string, error) {
	root := r.chain[len(r.chain)-1]
	id, err := r.installCert(ctx, root, true)
	if err != nil {
		return "", fmt.Errorf("root: %w", err)
	}
	for i, der := range r.chain[:len(r.chain)-1] {
		if _, err := r.installCert(ctx, der, false); err != nil {
			return "", fmt.Errorf("intermediate %d: %w", i, err)
		}
	}
	return fmt.Sprintf("root %s, %d intermediates", id, len(r.chain)-1), nil
}

func (r *job) syncClockStep() step {
	return step{name: StepSyncClock, run: func(ctx context.Context) (string, error) {
		return "", r.dev.SyncClock(ctx, r.e.cfg.Now)
	}}
}

// commitStep calls CommitChanges. A transport error may mean the firmware
// restarted before answering, or that the request never arrived, leaving
// the changes live but uncommitted (the next reset reverts them, and
// reading them back cannot tell). In the TLS stage the new leaf served
// after it proves the commit; otherwise (confirm) CommitChanges is sent
// again once the device answers: an answered one proves it.
func (r *job) commitStep(skip func(context.Context) string, confirm bool) step {
	return step{name: StepCommit, skip: skip, run: func(ctx context.Context) (string, error) {
		r.committed = r.e.cfg.Now()
		err := r.dev.CommitChanges(ctx)
		if err == nil {
			r.activated()
		}
		if err == nil || !wsman.Retryable(err) || ctx.Err() != nil {
			return "", err
		}
		if !confirm {
			return "no answer (network restart); verifying", nil
		}
		return r.confirmCommit(ctx, err)
	}}
}

// activated records, in the remote-configuration session, that its
// commit went through (answered, or proven by the served leaf): the device
// is now in state 2 and admin control mode whatever fails later, and the
// site must record it so (jobs.activatedAnyway). Waiting for verify-tls
// alone missed the attempts stopped while the TLS port restarted (make
// chaos, simulator faults: 5 of 1,000 devices activated, the site's
// record in state 0 and their certificates revoked).
func (r *job) activated() {
	if r.j.GetActivation() != nil && r.prov != nil {
		r.facts.ProvisioningState, r.facts.ControlMode = amt.ProvisioningStatePost, 2
	}
}

// confirmCommit repeats an unanswered CommitChanges until one is answered
// or CommitDeadline passes (a commit with nothing pending is harmless).
func (r *job) confirmCommit(ctx context.Context, err error) (string, error) {
	deadline := r.committed.Add(r.e.cfg.CommitDeadline)
	for tries := 1; ; tries++ {
		if r.e.cfg.Now().Add(r.e.cfg.PollInterval).After(deadline) {
			return "", transientError{fmt.Errorf("commit not confirmed within %s: %w", r.e.cfg.CommitDeadline, err)}
		}
		if err := sleep(ctx, r.e.cfg.PollInterval); err != nil {
			return "", err
		}
		if err = r.dev.CommitChanges(ctx); err == nil {
			r.committed = r.e.cfg.Now()
			return fmt.Sprintf("no answer at first; CommitChanges answered on try %d", tries+1), nil
		}
		if !wsman.Retryable(err) {
			return "", err
		}
	}
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

// verifyTLS waits CommitWait, then polls the TLS port until it serves leaf
// (any certificate that verifies when leaf is nil) or CommitDeadline (from
// the last commit, on Config.Now) passes.
func (r *job) verifyTLS(ctx context.Context, leaf []byte) (string, error) {
	if err := sleep(ctx, r.e.cfg.CommitWait); err != nil {
		return "", err
	}
	deadline := r.committed.Add(r.e.cfg.CommitDeadline)
	var lastErr error
	// The pause grows to four times PollInterval: a TLS restart takes 20 to
	// 60 s and more (rpc-go re-probes every 5 s), and every probe is a dial
	// and, once the port answers, a full handshake (16% of the agent's CPU
	// at a fixed 500 ms).
	pause := r.e.cfg.PollInterval
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
		if r.e.cfg.Now().Add(pause).After(deadline) {
			return "", transientError{fmt.Errorf("TLS port not serving the installed certificate within %s: %w", r.e.cfg.CommitDeadline, lastErr)}
		}
		if err := sleep(ctx, pause); err != nil {
			return "", err
		}
		pause = min(pause*3/2, 4*r.e.cfg.PollInterval)
	}
}

// installCert adds a certificate; one already there (DUPLICATE, or any
// refusal while it is listed) counts as installed and its handle is
// looked up.
func (r *job) installCert(ctx context.Context, der []byte, trustedRoot bool) (string, error) {
	var id string
	var err error
	if trustedRoot {
		id, err = r.dev.AddTrustedRootCertificate(ctx, der)
	} else {
		id, err = r.dev.AddCertificate(ctx, der)
	}
	var rve *wsman.ReturnValueError
	if !errors.As(err, &rve) {
		return id, err
	}
	// A refusal is no failure when the certificate is there already: a
	// duplicate, or a trusted root the firmware takes no more of while
	// mutual TLS is set (Intel: refused then), added before it was.
	certs, lerr := r.dev.Certificates(ctx)
	if lerr != nil {
		return "", lerr
	}
	for _, c := range certs {
		if bytes.Equal(c.DER, der) {
			return c.InstanceID, nil
		}
	}
	switch {
	case rve.Code == wsman.StatusDuplicate:
		// The duplicate was there a moment ago: an earlier attempt's,
		// uncommitted, lost to a reset since. The next attempt adds it.
		return "", transientError{fmt.Errorf("device reports the certificate as duplicate but does not list it (a reset?): %w", err)}
	case trustedRoot && rve.Code == wsman.StatusNotPermitted:
		return "", fmt.Errorf("a new trusted root is refused while mutual TLS is on: %w", err)
	}
	return "", err
}

// installKey adds the site-generated key (PKCS#8 in the job, PKCS#1 on the
// wire); a key already there counts as installed.
func (r *job) installKey(ctx context.Context, der []byte) (string, error) {
	key, err := rsaKey(der)
	if err != nil {
		return "", err
	}
	id, err := r.dev.AddKey(ctx, x509.MarshalPKCS1PrivateKey(key))
	if !isReturn(err, wsman.StatusDuplicate) {
		return id, err
	}
	// A refusal is only "already there" when the key really is listed.
	have, ferr := r.dev.FindKey(ctx, &key.PublicKey)
	switch {
	case ferr != nil:
		return "", ferr
	case have == "":
		// As for a certificate: a reset since lost an uncommitted key.
		return "", transientError{fmt.Errorf("device reports the key as duplicate but does not list it (a reset?): %w", err)}
	}
	return have, nil
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
// site signs through Config.SignCSR; the signed leaf and chain replace the
// job's.
func (r *job) keyOnDevice(ctx context.Context) (string, error) {
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
			// DERKey is PKCS#1 or SubjectPublicKeyInfo by firmware version.
			if pub, err = k.RSAPublicKey(); err != nil {
				return "", err
			}
		}
	}
	if pub == nil {
		// Generated a moment ago, uncommitted: a reset since lost it.
		return "", transientError{fmt.Errorf("generated key %s is not listed (a reset?)", keyID)}
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
	leaf, chain, serial, err := r.e.cfg.SignCSR(ctx, csr)
	if err != nil {
		return "", fmt.Errorf("sign device CSR: %w", err)
	}
	if len(leaf) == 0 || len(chain) == 0 {
		return "", errors.New("sign device CSR: empty leaf or chain")
	}
	r.leaf, r.chain, r.serial = leaf, chain, serial
	return "key generated on the device " + keyID + ", certificate serial " + serial, nil
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
