package jobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
)

// withActivation turns remote configuration on with a test provisioning
// certificate for amt.test and returns the root's SHA-256.
func withActivation(t *testing.T, f *fixture) []byte {
	t.Helper()
	id, _ := provcerttest.Identity(t, "amt.test")
	f.prov.site.Activation = &Activation{Identity: id, MEBxPassword: "admin"}
	sum := sha256.Sum256(id.Chain().Root().Raw)
	return sum[:]
}

// factory records a Hello on d listing the hashes and n-1 others.
func (f *fixture) factory(t *testing.T, d domain.Device, trusted ...[]byte) domain.Device {
	t.Helper()
	roots := []domain.RootHash{}
	for i := range 24 {
		roots = append(roots, domain.RootHash{Alg: 2, Sum: slices.Repeat([]byte{byte(i + 1)}, 32)})
	}
	for _, h := range trusted {
		roots = append(roots, domain.RootHash{Alg: 2, Sum: h})
	}
	d, err := f.store.UpdateDevice(context.Background(), d.ID, func(x *domain.Device) error {
		x.State, x.Status = domain.ProvisioningPre, domain.StatusNotProvisioned
		x.Hello = &domain.HelloSeen{At: time.Now().UTC(), IP: x.IP, TrustedRoots: roots}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A factory device whose Hello trusts the provisioning root gets a
// phase-2 job carrying the chain, leaf first, the current MEBx password, a
// new one sealed pending, and the trusted domain; success promotes it.
func TestActivationPayload(t *testing.T) {
	f := newFixture(t, nil, Site{})
	root := withActivation(t, f)
	ctx := context.Background()
	d := f.factory(t, f.device(t, "fac1"), root)
	task := f.task(t, "a1", d, domain.KindProvision)
	if err := f.prov.Handle(ctx, task); err != nil {
		t.Fatal(err)
	}
	job, leased := f.leaseOne(t)
	a := job.GetActivation()
	if a == nil {
		t.Fatal("phase-2 job of a factory device has no activation")
	}
	want := f.prov.site.Activation.Identity.Chain().DER()
	if len(a.ProvisioningChainDer) != 2 || !slices.EqualFunc(a.ProvisioningChainDer, want, slices.Equal) {
		t.Fatalf("chain of %d certificates, want the provisioning chain leaf first", len(a.ProvisioningChainDer))
	}
	if a.MebxPassword != "admin" || a.TrustedDomain != "amt.test" || a.NewMebxPassword == "" || a.NewMebxPassword == "admin" {
		t.Fatalf("activation mebx %q → %q, domain %q", a.MebxPassword, a.NewMebxPassword, a.TrustedDomain)
	}
	pending, err := f.store.GetSecret(ctx, pendingMEBxSecret(d.ID))
	if err != nil || string(pending) != a.NewMebxPassword {
		t.Fatalf("pending MEBx secret: %v", err)
	}
	if _, err := f.prov.Complete(ctx, "agent-1", domain.LeaseRef{Subnet: leased.Subnet, JobID: leased.JobID, Token: leased.Token},
		Result{Outcome: domain.ResultSucceeded, Facts: &domain.DeviceFacts{ProvisioningState: 2, ControlMode: domain.ControlModeAdmin}}); err != nil {
		t.Fatal(err)
	}
	cur, err := f.store.GetSecret(ctx, mebxPasswordSecret(d.ID))
	if err != nil || string(cur) != a.NewMebxPassword {
		t.Fatalf("MEBx password not promoted: %v", err)
	}
	if _, err := f.store.GetSecret(ctx, pendingMEBxSecret(d.ID)); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("pending MEBx secret left: %v", err)
	}
	got, _ := f.store.GetDevice(ctx, d.ID)
	if got.ControlMode != domain.ControlModeAdmin || got.Status != domain.StatusProvisioned {
		t.Fatalf("device after activation: mode %v status %s", got.ControlMode, got.Status)
	}
}

// A device that will refuse the certificate fails at check-activation,
// permanently, with the reason; nothing is issued, sealed or queued.
func TestActivationRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted bool
		hello   bool
		subnet  string // trusted domain override for the test subnet
		off     bool   // no remote configuration at the site
		want    string
	}{
		{"root not trusted", false, true, "", false, "no provisioning root matches any of the 24 hashes the device trusts"},
		{"domain mismatch", true, true, "other.test", false, `is not in the device's trusted domain "other.test"`},
		{"no hello", true, false, "", false, "no Hello received from the device yet"},
		{"remote configuration off", true, true, "", true, "can only be activated by remote configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{})
			root := withActivation(t, f)
			if tc.off {
				f.prov.site.Activation = nil
			}
			if tc.subnet != "" {
				f.prov.site.Activation.Subnets = []SubnetDomain{{netip.MustParsePrefix("10.0.0.0/8"), "corp.test"}, {testSubnet, tc.subnet}}
			}
			ctx := context.Background()
			d := f.device(t, "fac2")
			if tc.hello {
				var hs [][]byte
				if tc.trusted {
					hs = append(hs, root)
				}
				d = f.factory(t, d, hs...)
			} else {
				// Found in state 0 by discovery, no Hello yet.
				var err error
				if d, err = f.store.UpdateDevice(ctx, d.ID, func(x *domain.Device) error { x.State = domain.ProvisioningPre; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			task := f.task(t, "r1", d, domain.KindProvision)
			err := f.prov.Handle(ctx, task)
			var se *StepError
			if !errors.As(err, &se) || se.Step != StepCheckActivation || !domain.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Handle = %v, want a permanent failure at %s containing %q", err, StepCheckActivation, tc.want)
			}
			if err := f.prov.FailJob(ctx, task, err); err != nil {
				t.Fatal(err)
			}
			certs, _ := f.store.CertificatesByDevice(ctx, d.ID)
			if len(certs) != 0 {
				t.Fatalf("%d certificates issued for a device that cannot be activated", len(certs))
			}
			for _, name := range []string{pendingPasswordSecret(d.ID), pendingMEBxSecret(d.ID), keySecret(task.JobID, domain.PurposeServerAuth)} {
				if _, err := f.store.GetSecret(ctx, name); !errors.Is(err, domain.ErrNotFound) {
					t.Errorf("secret %s left: %v", name, err)
				}
			}
			if got, _ := f.queue.Lease(ctx, "agent-1", []netip.Prefix{testSubnet}, 10, time.Minute); len(got) != 0 {
				t.Fatalf("%d phase-2 jobs queued", len(got))
			}
			j, _ := f.store.GetJob(ctx, "r1", task.JobID)
			dev, _ := f.store.GetDevice(ctx, d.ID)
			if j.State != domain.JobFailed || dev.LastErrorStep != StepCheckActivation {
				t.Fatalf("job %s, device last error at %q", j.State, dev.LastErrorStep)
			}
		})
	}
}

// A provisioned device (state 2) is not activated again: no Activation.
func TestActivationNotForProvisioned(t *testing.T) {
	f := newFixture(t, nil, Site{})
	withActivation(t, f)
	ctx := context.Background()
	d := f.device(t, "fac3")
	if _, err := f.store.UpdateDevice(ctx, d.ID, func(x *domain.Device) error { x.State = domain.ProvisioningPost; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.prov.Handle(ctx, f.task(t, "p1", d, domain.KindProvision)); err != nil {
		t.Fatal(err)
	}
	if job, _ := f.leaseOne(t); job.GetActivation() != nil {
		t.Fatal("a device in state 2 got an activation")
	}
}

// An activation that fails for good after its commit (the agent saw the
// device in state 2) is recorded as what it left: the device in state 2
// and admin control mode, the job's admin and MEBx passwords current, its
// TLS certificate installed rather than revoked as unused. Recorded as not
// provisioned with the passwords still pending, the site could no longer
// reach the device (make chaos, simulator faults: 10 of 300 devices). A
// failure before the commit changes none of that.
func TestActivationFailedAfterCommit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		facts     *domain.DeviceFacts
		activated bool
	}{
		{"after the commit", &domain.DeviceFacts{ProvisioningState: domain.ProvisioningPost, ControlMode: domain.ControlModeAdmin}, true},
		{"before the commit", &domain.DeviceFacts{ProvisioningState: domain.ProvisioningIn}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{})
			root := withActivation(t, f)
			ctx := context.Background()
			d := f.factory(t, f.device(t, "facfail"), root)
			task := f.task(t, "af", d, domain.KindProvision)
			if err := f.prov.Handle(ctx, task); err != nil {
				t.Fatal(err)
			}
			job, l := f.leaseOne(t)
			if _, err := f.prov.Complete(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token},
				Result{Outcome: domain.ResultFailedPermanent, Step: "ping", Error: "EOF", Facts: tc.facts}); err != nil {
				t.Fatal(err)
			}
			got, err := f.store.GetDevice(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			admin, adminErr := f.store.GetSecret(ctx, adminPasswordSecret(d.ID))
			mebx, mebxErr := f.store.GetSecret(ctx, mebxPasswordSecret(d.ID))
			live := f.live(t, d.ID, domain.PurposeServerAuth)
			if !tc.activated {
				if got.State == domain.ProvisioningPost || adminErr == nil || mebxErr == nil || len(live) != 0 {
					t.Fatalf("state %d, admin current %t, MEBx current %t, %d live certificates; want nothing recorded as activated",
						got.State, adminErr == nil, mebxErr == nil, len(live))
				}
				return
			}
			if got.State != domain.ProvisioningPost || got.ControlMode != domain.ControlModeAdmin || got.LastErrorStep != "ping" {
				t.Errorf("device state %d, control mode %v, error step %q; want state 2, ACM, the failure kept", got.State, got.ControlMode, got.LastErrorStep)
			}
			if adminErr != nil || string(admin) != job.GetCredentials().GetNewAdminPassword() {
				t.Errorf("admin password not made current (%v)", adminErr)
			}
			if mebxErr != nil || string(mebx) != job.GetActivation().GetNewMebxPassword() {
				t.Errorf("MEBx password not made current (%v)", mebxErr)
			}
			if len(live) != 1 || live[0].Status != domain.CertInstalled {
				t.Errorf("server certificates live: %+v; want the one the device serves, installed", live)
			}
		})
	}
}
