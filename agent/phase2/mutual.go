package phase2

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/amtops/amtops/internal/wsman"
)

// MutualTLS is the agent's own client certificate for devices with mutual
// TLS on, and the root it chains to. With AMT_TLSSettingData
// MutualAuthentication on, the firmware accepts only a client chaining to
// one of its trusted root certificates (and, with TrustedCN set, a CN
// ending in one of those suffixes): a provisioning job with
// tls.mutual_auth installs Root as trusted root before it turns mutual
// authentication on, and every later job presents Cert.
type MutualTLS struct {
	Cert *wsman.ClientCertificate
	Root []byte // DER
}

// loadMutualTLS asks the agent for its client certificate once per job
// (it may have been renewed since the last). A job of a site with mutual
// TLS (tls.mutual_auth) cannot run without it: a provisioning would lock
// the agent out at the commit, any other job would be refused. Jobs of a
// site without mutual TLS go on without one.
func (r *job) loadMutualTLS() error {
	if r.e.cfg.MutualTLS == nil {
		if r.wantsMutual() {
			return errors.New("phase2: job: tls.mutual_auth needs Config.MutualTLS (the agent's client certificate); without it the device would lock the agent out after the commit")
		}
		return nil
	}
	m, err := r.e.cfg.MutualTLS()
	switch {
	case err == nil && (m == nil || m.Cert == nil || len(m.Root) == 0):
		err = errors.New("no certificate or root")
	case err == nil:
		if _, perr := x509.ParseCertificate(m.Root); perr != nil {
			err = fmt.Errorf("root: %w", perr)
		}
	}
	if err != nil {
		if r.wantsMutual() {
			return fmt.Errorf("phase2: job: tls.mutual_auth: client certificate: %w", err)
		}
		r.log.Warn().Err(err).Msg("no client certificate for mutual TLS")
		return nil
	}
	r.mtls = m
	return nil
}

// wantsMutual: the site has mutual TLS on (a provisioning turns it on).
func (r *job) wantsMutual() bool {
	return r.j.GetTls().GetMutualAuth()
}

// clientCert is what the agent presents when a device outside remote
// configuration asks for a client certificate (nil: none). It is offered
// whatever the job's setting: a device that has mutual TLS on from an
// earlier configuration must stay reachable.
func (r *job) clientCert() *wsman.ClientCertificate {
	if r.mtls == nil {
		return nil
	}
	return r.mtls.Cert
}

// mutualRootStep installs the agent's root as trusted root before the TLS
// settings turn mutual authentication on: firmware takes no new trusted
// root while mutual authentication is set, so the job's RADIUS roots go
// in now too. Roots an earlier agent CA left (same subject, other
// certificate) are deleted, so the store does not fill; a root already
// there is found, not added twice.
// Without mutual TLS the step is not part of the job.
func (r *job) mutualRootStep(done func(context.Context) string) step {
	if !r.wantsMutual() {
		return step{name: StepMutualRoot}
	}
	return step{name: StepMutualRoot, skip: done, run: func(ctx context.Context) (string, error) {
		id, err := r.installCert(ctx, r.mtls.Root, true)
		if err != nil {
			return "", fmt.Errorf("agent root: %w", err)
		}
		radius := 0
		for _, p := range r.j.GetNetworks() {
			for _, der := range p.GetRadiusRootDer() {
				if _, err := r.installCert(ctx, der, true); err != nil {
					return "", fmt.Errorf("network %q: radius root: %w", p.GetName(), err)
				}
				radius++
			}
		}
		return fmt.Sprintf("agent root %s, %d RADIUS roots; %s", id, radius, r.deleteOldAgentRoots(ctx)), nil
	}}
}

// deleteOldAgentRoots deletes trusted roots with the agent root's subject
// that are not the agent root (an agent CA replaced since).
func (r *job) deleteOldAgentRoots(ctx context.Context) string {
	root, err := x509.ParseCertificate(r.mtls.Root)
	if err != nil {
		return "old agent roots not checked: " + err.Error()
	}
	certs, err := r.dev.Certificates(ctx)
	if err != nil {
		return "old agent roots not listed: " + err.Error()
	}
	var ids []string
	for _, c := range certs {
		if !c.TrustedRoot || bytes.Equal(c.DER, r.mtls.Root) {
			continue
		}
		if x, err := x509.ParseCertificate(c.DER); err == nil && bytes.Equal(x.RawSubject, root.RawSubject) {
			ids = append(ids, c.InstanceID)
		}
	}
	if len(ids) == 0 {
		return "no old agent root"
	}
	return r.deleteReplaced(ctx, ids)
}
