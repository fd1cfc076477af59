package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/hello"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Remote configuration: a factory device (state 0) that sent a Hello is
// activated in admin control mode with the site's provisioning
// certificate. Phase 1 first checks what the device will check, so a
// device that would refuse the certificate fails before anything is
// issued; the phase-2 job then carries the chain and the MEBx passwords.

// StepCheckActivation is the readiness check of a device to activate.
const StepCheckActivation = "check-activation"

// ReasonNoHello is the readiness problem of a device that never sent a
// Hello: without it the server cannot know which roots it trusts.
const ReasonNoHello provcert.Reason = "no-hello"

// ReasonRemoteConfigOff: no provisioning certificate is configured.
const ReasonRemoteConfigOff provcert.Reason = "remote-config-off"

// Activation is the site's remote configuration (amt.remote_config).
type Activation struct {
	// Identity is the provisioning certificate and its key; the key only
	// signs (SignProvisioning), the chain goes into the job.
	Identity *provcert.Identity
	// MEBxPassword is the devices' current MEBx password ("admin" from
	// the factory) for those without one sealed by an earlier activation.
	MEBxPassword string
	// TrustedDomain is the suffix devices trust; Subnets overrides it,
	// the most specific prefix holding the device's address first.
	TrustedDomain string
	Subnets       []SubnetDomain
	Options       provcert.Options
}

// SubnetDomain is one subnet's trusted domain suffix.
type SubnetDomain struct {
	Prefix netip.Prefix
	Domain string
}

// Needed reports whether a provision job for d activates it: the device
// is in state 0 and either sent a Hello or was found factory-fresh.
func (a *Activation) Needed(d domain.Device) bool { return a != nil && factoryFresh(d) }

// factoryFresh: d is known to be in state 0 (a Hello, or discovery or a
// removal found it there), not merely imported with nothing known.
func factoryFresh(d domain.Device) bool {
	return d.State == domain.ProvisioningPre && (d.Hello != nil || d.Status == domain.StatusNotProvisioned)
}

// TrustedDomainFor is the suffix d checks the leaf's CN against: its
// subnet's, else the site's, else the device's own domain.
func (a *Activation) TrustedDomainFor(d domain.Device) string {
	best := -1
	out := ""
	for _, s := range a.Subnets {
		if d.IP.IsValid() && s.Prefix.Contains(d.IP) && s.Prefix.Bits() > best {
			best, out = s.Prefix.Bits(), s.Domain
		}
	}
	if out != "" {
		return out
	}
	if a.TrustedDomain != "" {
		return a.TrustedDomain
	}
	return d.Domain
}

// Check is what d will make of the provisioning chain at now, from its
// last Hello.
func (a *Activation) Check(d domain.Device, now time.Time) provcert.Readiness {
	dev := provcert.Device{DomainSuffix: a.TrustedDomainFor(d)}
	if d.Hello != nil {
		dev.Hashes = helloHashes(d.Hello.TrustedRoots)
	}
	var chain provcert.Chain
	if a.Identity != nil {
		chain = a.Identity.Chain()
	}
	r := chain.Check(dev, now, a.Options)
	if d.Hello == nil {
		// The hash list is the Hello's; without one "trusts no root" would
		// blame the device for what the server has not heard yet.
		for i, p := range r.Problems {
			if p.Reason == provcert.ReasonNoHashes {
				r.Problems[i] = provcert.Problem{Reason: ReasonNoHello,
					Message: "no Hello received from the device yet: it lists the roots it trusts; power it on in its subnet, or trigger remote configuration"}
			}
		}
	}
	return r
}

func helloHashes(rs []domain.RootHash) []hello.Hash {
	out := make([]hello.Hash, len(rs))
	for i, h := range rs {
		out[i] = hello.Hash{Alg: hello.HashAlg(h.Alg), Sum: h.Sum}
	}
	return out
}

// Readiness is Check for an administrator: whether d can be activated
// now and why not (AdminService.DeviceReadiness). Without remote
// configuration nothing can be.
func (p *Service) Readiness(d domain.Device) (provcert.Readiness, string, bool) {
	a := p.site.Activation
	if a == nil {
		return provcert.Readiness{Problems: []provcert.Problem{{Reason: ReasonRemoteConfigOff,
			Message: "remote configuration is off: no amt.remote_config provisioning certificate is loaded"}}}, "", false
	}
	return a.Check(d, p.now()), a.TrustedDomainFor(d), a.Needed(d)
}

// ActivationReady is nil when d can be activated now, else why not
// (discover.Checker).
func (p *Service) ActivationReady(d domain.Device) error {
	r, _, _ := p.Readiness(d)
	return r.Err()
}

// checkActivation is the first step of a provision job for a device to
// activate: a device that will refuse the provisioning certificate fails
// here, permanently and with the reason, before any certificate is issued
// or secret made.
func (r *run) checkActivation(context.Context) (string, error) {
	a := r.p.site.Activation
	if a == nil && factoryFresh(r.dev) {
		// Firmware in state 0 answers no login on the network: without a
		// provisioning certificate nothing can reach it.
		return "", domain.Permanent(fmt.Errorf("jobs: device %s is in provisioning state 0 (factory): it can only be activated by remote configuration, "+
			"and amt.remote_config has no provisioning certificate", r.dev.ID))
	}
	if !a.Needed(r.dev) {
		if a == nil {
			return "skipped: remote configuration is off", nil
		}
		return fmt.Sprintf("skipped: device in provisioning state %d, not activated by remote configuration", r.dev.State), nil
	}
	rd := a.Check(r.dev, r.p.now())
	if !rd.Ready() {
		return "", domain.Permanent(fmt.Errorf("jobs: device %s cannot be activated: %w", r.dev.ID, rd.Err()))
	}
	r.activate = true
	leaf := a.Identity.Chain().Leaf()
	return fmt.Sprintf("the device will accept provisioning certificate %q (trusted domain %s, root hash %s)",
		leaf.Subject.CommonName, a.TrustedDomainFor(r.dev), hashName(rd.Matched)), nil
}

func hashName(h *hello.Hash) string {
	if h == nil {
		return "none"
	}
	return strings.ToLower(fmt.Sprintf("%d:%x", h.Alg, h.Sum))
}

// activation fills the job's Activation: the chain, the device's current
// MEBx password and a new random one, kept pending until phase 2
// succeeds like the admin password.
func (r *run) activation(ctx context.Context) error {
	a := r.p.site.Activation
	current, err := r.p.store.GetSecret(ctx, mebxPasswordSecret(r.dev.ID))
	switch {
	case errors.Is(err, domain.ErrNotFound):
		current = []byte(a.MEBxPassword)
	case err != nil:
		return err
	}
	pending, err := r.p.pending(ctx, pendingMEBxSecret(r.dev.ID))
	if err != nil {
		return err
	}
	if err := r.p.store.PutSecret(ctx, activationSecret(r.t.JobID), []byte(r.dev.ID)); err != nil {
		return err
	}
	r.job.Activation = &pb.Activation{ProvisioningChainDer: a.Identity.Chain().DER(), MebxPassword: string(current),
		NewMebxPassword: pending, TrustedDomain: a.TrustedDomainFor(r.dev)}
	return nil
}

// pending returns the pending password sealed under name, making a new
// random one first if there is none; concurrent runs agree on one.
func (p *Service) pending(ctx context.Context, name string) (string, error) {
	if b, err := p.store.GetSecret(ctx, name); err == nil {
		return string(b), nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return "", err
	}
	pw, err := p.site.NewPassword()
	if err != nil {
		return "", err
	}
	created, err := p.store.CreateSecret(ctx, name, []byte(pw))
	if err != nil {
		return "", err
	}
	if !created {
		b, err := p.store.GetSecret(ctx, name)
		return string(b), err
	}
	return pw, nil
}
