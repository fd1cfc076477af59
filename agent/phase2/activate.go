package phase2

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/wsman"
)

// provSession is a TLS session before the site certificate is served:
// the device's self-signed firmware certificate, trusted on first use and
// pinned for the rest of the session, and, in the remote configuration of
// a device in state 0, the provisioning certificate as client certificate
// (its key signs at the site). Nil cert: a TLS-only device in state 2.
type provSession struct {
	cert *wsman.ClientCertificate
	cn   string // the leaf's, for messages
	pin  []byte
}

// remoteConfigUser is the login of the remote-configuration session: the
// MEBx password belongs to the account "admin".
const remoteConfigUser = "admin"

// activationSteps are the steps a remote configuration adds before the
// TLS stage: the provisioning session's connect, then the MEBx and admin
// passwords (the firmware wants the admin ACL entry and the clock set
// before it commits). The TLS and settings stages are provisioning's own.
func (r *job) activationSteps() []step {
	inSession := func(context.Context) string { return unless(r.prov == nil, "device already activated") }
	return []step{
		{name: StepConnect, run: r.activateConnect},
		r.identityStep(),
		{name: StepMEBxPassword, skip: inSession, run: func(ctx context.Context) (string, error) {
			pw := r.j.GetActivation().GetNewMebxPassword()
			if err := amt.ValidatePassword(pw); err != nil {
				return "", fmt.Errorf("activation.new_mebx_password: %w", err)
			}
			err := r.dev.SetMEBxPassword(ctx, pw)
			if isReturn(err, wsman.StatusNotPermitted) && r.j.GetAttempt() > 1 {
				// The firmware takes a new MEBx password only while it is
				// the factory one, and it takes effect at once: an earlier
				// attempt of this job, cut off after it, set the job's.
				return "", skipped{"the MEBx password is no longer the factory default: an earlier attempt of this job set it"}
			}
			return "MEBx password changed", err
		}},
		{name: StepAdminPassword, skip: func(ctx context.Context) string {
			if why := inSession(ctx); why != "" {
				return why
			}
			return r.adminPasswordDone(ctx)
		}, run: r.adminPassword},
	}
}

// activateConnect opens the provisioning session. A device that already
// serves this job's certificate (with keys on the device, the one an
// earlier attempt had signed, which the server hands a retry) was
// activated by an earlier attempt of this job: the commit went through,
// the attempt did not finish. It is reached as any provisioned device,
// with the one password that attempt set before its commit.
func (r *job) activateConnect(ctx context.Context) (string, error) {
	if leaf := r.j.GetTls().GetCertificateDer(); len(leaf) > 0 {
		if got, err := r.servedLeaf(ctx); err == nil && bytes.Equal(got, leaf) {
			return r.activatedConnect(ctx)
		}
	}
	sess, err := r.provisioningSession(ctx)
	if err != nil {
		return "", err
	}
	r.prov = sess
	act, creds := r.j.GetActivation(), r.j.GetCredentials()
	// An earlier attempt may have set the admin password already. Unlike
	// a provisioned device's login, both candidates are tried, this
	// attempt's turn first: each is a password this job knows to have
	// been the device's (the factory MEBx one, or the one an earlier
	// attempt set), so when the device is ours at most one is refused
	// per attempt, as with turns; but with turns, a run of attempts lost
	// to the lease (a frozen agent) could leave the last one on the
	// wrong turn (found: 89 of 400 devices failed so).
	cands := candidates([]string{act.GetMebxPassword(), creds.GetNewAdminPassword()})
	first, _ := candidate(cands, r.j.GetAttempt())
	var dev *amt.Client
	var i int
	var pw string
	for k := range cands {
		i = (first + k) % len(cands)
		pw = cands[i]
		r.user = remoteConfigUser
		if pw != act.GetMebxPassword() {
			r.user = creds.GetUsername()
		}
		if dev, err = r.dial(ctx, true, pw); !errors.Is(err, wsman.ErrUnauthorized) {
			break
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, wsman.ErrUnauthorized):
		return "", refused(len(cands)-1, len(cands), r.j.GetAttempt(), "remote configuration login (every candidate)")
	case errors.Is(err, syscall.ECONNREFUSED):
		return "", transientError{fmt.Errorf("port %d closed: a factory device listens only for a while after its Hello: %w", r.e.cfg.TLSPort, err)}
	case strings.Contains(err.Error(), "remote error: tls: "):
		return "", fmt.Errorf("the device refused the provisioning certificate %q (its root must be among the hashes the device trusts, "+
			"the leaf must carry the AMT provisioning EKU or OU, and its CN must end in the device's trusted domain %q): %w",
			sess.cn, act.GetTrustedDomain(), err)
	default:
		return "", err
	}
	sess.pin = dev.WSMan().ServerLeafSHA256()
	r.setClient(dev, connInfo{tls: true, password: pw})
	return fmt.Sprintf("remote configuration session, password candidate %d of %d", i+1, len(cands)), nil
}

// activatedConnect logs in to a device this job activated. Its admin
// password can only be the job's new one: the factory MEBx login is gone
// with the remote-configuration session, and trying the other candidates
// would only count towards the lockout.
func (r *job) activatedConnect(ctx context.Context) (string, error) {
	creds := r.j.GetCredentials()
	r.user = creds.GetUsername()
	dev, err := r.dial(ctx, true, creds.GetNewAdminPassword())
	if errors.Is(err, wsman.ErrUnauthorized) {
		return "", fmt.Errorf("the device serves this job's certificate, but refuses the admin password an earlier attempt of this job set: %w", err)
	}
	if err != nil {
		return "", err
	}
	r.setClient(dev, connInfo{tls: true, password: creds.GetNewAdminPassword()})
	return "already activated by an earlier attempt of this job; tls with its new admin password", nil
}

// provisioningSession builds the client certificate whose signatures the
// site makes (Config.ProvisioningSigner), bound to this job's lease.
func (r *job) provisioningSession(ctx context.Context) (*provSession, error) {
	der := r.j.GetActivation().GetProvisioningChainDer()
	var chain provcert.Chain
	for i, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("activation.provisioning_chain_der[%d]: %w", i, err)
		}
		chain.Certs = append(chain.Certs, c)
	}
	signer, err := provcert.NewSigner(ctx, chain, r.e.cfg.ProvisioningSigner, r.j.GetLease().GetJobId(), r.j.GetLease().GetToken())
	if err != nil {
		return nil, err
	}
	return &provSession{cert: &wsman.ClientCertificate{Chain: slices.Clone(der), Key: signer}, cn: chain.Leaf().Subject.CommonName}, nil
}

// validateActivation checks what a remote configuration needs.
func (r *job) validateActivation() error {
	act := r.j.GetActivation()
	switch {
	case len(act.GetProvisioningChainDer()) < 2:
		return errors.New("phase2: job: activation.provisioning_chain_der needs the leaf and the root")
	case act.GetMebxPassword() == "":
		return errors.New("phase2: job: activation.mebx_password is empty")
	case act.GetNewMebxPassword() == "":
		return errors.New("phase2: job: activation.new_mebx_password is empty")
	case r.j.GetCredentials().GetNewAdminPassword() == "":
		return errors.New("phase2: job: credentials.new_admin_password is empty (activation sets the admin password)")
	case r.j.GetLease().GetJobId() == "" || r.j.GetLease().GetToken() == "":
		return errors.New("phase2: job: lease.job_id and lease.token are needed to sign the provisioning handshake")
	case r.e.cfg.ProvisioningSigner == nil:
		return errors.New("phase2: job: activation needs Config.ProvisioningSigner")
	}
	return nil
}
