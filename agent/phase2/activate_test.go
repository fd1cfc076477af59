package phase2_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/rs/zerolog"
)

const (
	provDomain = "amt.test"
	newMEBx    = "N3w-MEBx!pw1"
)

// siteSigner is the server's side of SignProvisioning in process: it
// signs with the provisioning identity for the one lease it knows, as
// the server does for a lease the calling agent holds.
type siteSigner struct {
	id          *provcert.Identity
	job, token  string
	calls, foul atomic.Int64
}

func (s *siteSigner) SignProvisioning(_ context.Context, jobID, token string, digest []byte, opts provcert.SignOpts) ([]byte, error) {
	s.calls.Add(1)
	if jobID != s.job || token != s.token {
		s.foul.Add(1)
		return nil, fmt.Errorf("no live lease %s/%s", jobID, token)
	}
	return s.id.SignDigest(digest, opts)
}

// base86 is a random 127.86.x.1 (this package's range for multi-address
// simulator fleets).
func base86(t *testing.T) netip.Addr {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(250))
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrFrom4([4]byte{127, 86, byte(n.Int64()), 1})
}

func activationJob(t *testing.T, c *ca, id *provcert.Identity, a netip.Addr, host string) *amtopsv1.Phase2Job {
	t.Helper()
	job := provisionJob(t, c, a, host)
	job.Lease = &amtopsv1.LeaseRef{Subnet: "127.86.0.0/16", JobId: "job-" + host, Token: "tok-" + host}
	job.Credentials = &amtopsv1.Credentials{Username: "admin", NewAdminPassword: newPassword}
	job.Activation = &amtopsv1.Activation{ProvisioningChainDer: id.Chain().DER(), MebxPassword: "admin",
		NewMebxPassword: newMEBx, TrustedDomain: provDomain}
	return job
}

func activationExecutor(sim *amtsim.Sim, s *siteSigner) *phase2.Executor {
	return phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(),
		CallTimeout: 5 * time.Second, CommitWait: 40 * time.Millisecond,
		CommitDeadline: 5 * time.Second, PollInterval: 50 * time.Millisecond,
		ProvisioningSigner: s, Log: zerolog.Nop(),
	})
}

// TestActivation: factory devices of AMT 11.8 and CSME 16.1 are activated
// through the remote-configuration session and end in ACM serving the
// site certificate, with the MEBx and admin passwords changed; a
// provisioning chain the device does not trust changes nothing.
func TestActivation(t *testing.T) {
	id, trusted := provcerttest.Identity(t, provDomain)
	stranger, _ := provcerttest.Identity(t, provDomain)
	rootHash, err := hex.DecodeString(trusted.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		version  string
		identity *provcert.Identity
		refusal  string // "" activates
		cancelOn string // a step the first attempt is cut off at
	}{
		{"AMT 11.8", "11.8.50", id, "", ""},
		{"CSME 16.1", "16.1.25", id, "", ""},
		{"untrusted root", "16.1.25", stranger, "refused the provisioning certificate", ""},
		{"cut off after the password changes", "12.0.45", id, "", phase2.StepInstallRoot},
		{"cut off after the MEBx password", "16.1.25", id, "", phase2.StepAdminPassword},
		{"site refuses to sign", "16.1.25", id, "no live lease", ""},
	}
	ov := map[int]amtsim.Override{}
	for i, tc := range cases {
		ov[i] = amtsim.Override{Version: tc.version}
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: len(cases), BaseIP: base86(t), Kind: amtsim.KindFactory,
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: provDomain,
			TrustHashes: [][]byte{rootHash}, TLSRestart: 300 * time.Millisecond}}, ov)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := sim.Addrs()[i]
			if err := sim.TriggerHello(a); err != nil {
				t.Fatal(err)
			}
			job := activationJob(t, c, tc.identity, a, fmt.Sprintf("act%d", i))
			job.Settings.WebUi = strings.HasPrefix(tc.version, "11.") // gone on recent firmware
			signer := &siteSigner{id: tc.identity, job: job.Lease.JobId, token: job.Lease.Token}
			signRefused := strings.Contains(tc.refusal, "lease")
			if signRefused {
				signer.job = "another job" // the lease the server knows is not this one
			}
			ex := activationExecutor(sim, signer)
			if tc.refusal != "" {
				before := device(t, sim, a)
				res := ex.Run(context.Background(), job, nil)
				// A refused chain is the device's verdict; a signature the
				// site would not make may come with the next lease.
				if res.Err == nil || res.Permanent == signRefused || res.ErrorStep != phase2.StepConnect || !strings.Contains(res.Err.Error(), tc.refusal) {
					t.Fatalf("err %v permanent %t step %q, want %q at connect, permanent %t", res.Err, res.Permanent, res.ErrorStep, tc.refusal, !signRefused)
				}
				after := device(t, sim, a)
				if after.ProvisioningState != 0 || !after.MEBxDefault || len(after.Certificates) != len(before.Certificates) ||
					after.AdminHA1 != before.AdminHA1 || (!signRefused && after.ProvisioningRefusals != before.ProvisioningRefusals+1) {
					t.Errorf("device changed or no refusal recorded: state %d mebx default %t certs %d→%d refusals %d→%d",
						after.ProvisioningState, after.MEBxDefault, len(before.Certificates), len(after.Certificates),
						before.ProvisioningRefusals, after.ProvisioningRefusals)
				}
				return
			}
			if tc.cancelOn != "" {
				ctx, cancel := context.WithCancel(context.Background())
				rec := &recorder{cancelOn: tc.cancelOn, cancel: cancel}
				res := ex.Run(ctx, job, rec)
				cancel()
				if res.Err == nil || res.Permanent {
					t.Fatalf("cut-off attempt: err %v permanent %t, want a retryable failure\n%s", res.Err, res.Permanent, rec.all())
				}
				// What the first attempt set took effect at once, nothing is
				// committed: the next attempt gets in and finishes, even on
				// the factory MEBx password's turn (attempts 2 and 3 lost to
				// the lease, say).
				job.Attempt = 3
				if res = ex.Run(context.Background(), job, nil); res.Err != nil {
					t.Fatalf("attempt %d after the cut-off: step %s: %v (permanent %t)", job.Attempt, res.ErrorStep, res.Err, res.Permanent)
				}
			}
			res := mustRun(t, ex, job)
			checkProvisioned(t, sim, job, res)
			st := device(t, sim, a)
			if st.ControlMode != 2 || res.Facts.GetControlMode() != 2 {
				t.Errorf("control mode %d (facts %d), want 2 (ACM)", st.ControlMode, res.Facts.GetControlMode())
			}
			if st.MEBxDefault || st.MEBxHA1 != ha1("admin", st.DigestRealm, newMEBx) {
				t.Errorf("MEBx password is not the new one")
			}
			if err := tlsLogin(t, sim, job, "admin"); !errors.Is(err, wsman.ErrUnauthorized) {
				t.Errorf("login with the factory MEBx password after activation: %v, want unauthorized", err)
			}
			if signer.calls.Load() == 0 || signer.foul.Load() != 0 {
				t.Errorf("site signatures %d (refused %d), want some, none refused", signer.calls.Load(), signer.foul.Load())
			}
			// A second run of the same job (its commit done, the attempt
			// lost) finds the device activated and converges.
			job.Attempt++
			res = mustRun(t, ex, job)
			checkProvisioned(t, sim, job, res)
		})
	}
}

// With keys on the device, an attempt cut off after its commit (its lease
// lost, say, to a frozen agent) leaves the device activated, serving the
// leaf that attempt had signed. The retry, which the server hands that
// leaf, must recognise the device and log in with the job's new admin
// password only: no new provisioning session (the activated device has
// none to offer), no new key, no candidate the device would refuse. Found
// by freezing an agent past its lease with 400 factory devices: 0
// provisioned, each retry alternating the MEBx password against an
// activated device until the attempts ran out.
func TestActivationKeyOnDeviceRetryAfterCommit(t *testing.T) {
	id, trusted := provcerttest.Identity(t, provDomain)
	rootHash, err := hex.DecodeString(trusted.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base86(t), Kind: amtsim.KindFactory,
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: provDomain,
			TrustHashes: [][]byte{rootHash}, TLSRestart: 300 * time.Millisecond}}, nil)
	a := sim.Addrs()[0]
	if err := sim.TriggerHello(a); err != nil {
		t.Fatal(err)
	}
	c := newCA(t)
	job := activationJob(t, c, id, a, "kodact")
	job.Tls = &amtopsv1.TLSMaterial{KeyOnDevice: true, ChainDer: job.Tls.ChainDer}
	// As the server sends it: the connect password is the site's
	// provisioning account's, which an activated device refuses.
	job.Credentials.Password = provPassword
	signer := &siteSigner{id: id, job: job.Lease.JobId, token: job.Lease.Token}
	var signed struct {
		n      int
		leaf   []byte
		chain  [][]byte
		serial string
	}
	ex := phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(),
		CallTimeout: 5 * time.Second, CommitWait: 40 * time.Millisecond,
		CommitDeadline: 5 * time.Second, PollInterval: 50 * time.Millisecond,
		ProvisioningSigner: signer, Log: zerolog.Nop(),
		SignCSR: func(ctx context.Context, csr []byte) ([]byte, [][]byte, string, error) {
			is, err := c.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "kodact.corp.example", CSR: csr})
			if err != nil {
				return nil, nil, "", err
			}
			signed.n++
			signed.leaf, signed.chain, signed.serial = is.Leaf, is.Chain, is.Serial
			return is.Leaf, is.Chain, is.Serial, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{cancelOn: phase2.StepVerifyTLS, cancel: cancel}
	job.Attempt = 1
	if res := ex.Run(ctx, job, rec); res.Err == nil || res.Permanent {
		t.Fatalf("cut-off attempt: err %v permanent %t, want a retryable failure\n%s", res.Err, res.Permanent, rec.all())
	}
	cancel()
	before := device(t, sim, a)
	if before.ProvisioningState != 2 || len(before.TLS.ServedChain) == 0 || string(before.TLS.ServedChain[0]) != string(signed.leaf) {
		t.Fatalf("after the cut-off: state %d, serving the signed leaf %t; want activated and serving it",
			before.ProvisioningState, len(before.TLS.ServedChain) > 0 && string(before.TLS.ServedChain[0]) == string(signed.leaf))
	}
	time.Sleep(400 * time.Millisecond) // the TLS restart after the commit
	// The retry, on an odd attempt, carries the earlier leaf (api.attachEarlier).
	job.Tls.CertificateDer, job.Tls.ChainDer, job.Tls.Serial = signed.leaf, signed.chain, signed.serial
	job.Attempt = 3
	rec = &recorder{}
	res := ex.Run(context.Background(), job, rec)
	if res.Err != nil {
		t.Fatalf("retry: step %s: %v (permanent %t)\n%s", res.ErrorStep, res.Err, res.Permanent, rec.all())
	}
	checkProvisioned(t, sim, job, res)
	after := device(t, sim, a)
	keys := 0
	for _, k := range after.Keys {
		if k.GeneratedOnDevice {
			keys++
		}
	}
	if after.ProvisioningSessions != before.ProvisioningSessions || signed.n != 1 || keys != 1 || res.Facts.GetInstalledSerial() != signed.serial {
		t.Errorf("retry opened %d provisioning sessions, signed %d certificates, %d keys on the device, serial %q; want none, 1, 1, %s",
			after.ProvisioningSessions-before.ProvisioningSessions, signed.n, keys, res.Facts.GetInstalledSerial(), signed.serial)
	}
	if !strings.Contains(rec.all(), "already activated by an earlier attempt") {
		t.Errorf("the log does not say the device was found activated:\n%s", rec.all())
	}
}

// An activation cut off after its commit reports the device activated
// (state 2, ACM): the site records it so, and keeps the passwords the
// device now has (jobs.activatedAnyway).
func TestActivationCutAfterCommitReportsActivated(t *testing.T) {
	id, trusted := provcerttest.Identity(t, provDomain)
	rootHash, err := hex.DecodeString(trusted.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base86(t), Kind: amtsim.KindFactory,
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: provDomain,
			TrustHashes: [][]byte{rootHash}, TLSRestart: 300 * time.Millisecond}}, nil)
	a := sim.Addrs()[0]
	if err := sim.TriggerHello(a); err != nil {
		t.Fatal(err)
	}
	job := activationJob(t, newCA(t), id, a, "cutafter")
	ex := activationExecutor(sim, &siteSigner{id: id, job: job.Lease.JobId, token: job.Lease.Token})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{cancelOn: phase2.StepReconnect, cancel: cancel}
	res := ex.Run(ctx, job, rec)
	if res.Err == nil {
		t.Fatal("the cut-off attempt succeeded")
	}
	if st := device(t, sim, a); st.ProvisioningState != 2 {
		t.Fatalf("device in state %d after the commit, want 2", st.ProvisioningState)
	}
	if res.Facts.GetProvisioningState() != 2 || res.Facts.GetControlMode() != 2 {
		t.Errorf("facts: state %d, control mode %d; want 2 and 2 (ACM)\n%s", res.Facts.GetProvisioningState(), res.Facts.GetControlMode(), rec.all())
	}
}
