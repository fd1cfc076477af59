package jobs

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
)

// outage fails writes as a Redis restart does: the first cert writes of
// certificate records and the first copy writes of a job's copy of its
// certificate, or all of them when the count is negative.
type outage struct {
	Store
	mu         sync.Mutex
	cert, copy int
	job        string
}

var errOutage = errors.New("redis: connection refused")

func fail(n *int) bool {
	if *n == 0 {
		return false
	}
	if *n > 0 {
		*n--
	}
	return true
}

func (o *outage) PutCertificate(ctx context.Context, rec domain.CertificateRecord) error {
	o.mu.Lock()
	f := fail(&o.cert)
	o.mu.Unlock()
	if f {
		return errOutage
	}
	return o.Store.PutCertificate(ctx, rec)
}

func (o *outage) PutSecret(ctx context.Context, name string, b []byte) error {
	o.mu.Lock()
	f := (name == certSecret(o.job, domain.PurposeServerAuth) || name == signedSecret(o.job)) && fail(&o.copy)
	o.mu.Unlock()
	if f {
		return errOutage
	}
	return o.Store.PutSecret(ctx, name, b)
}

// issuedCA remembers every serial the CA issued, and can lose the
// answer to the first lose issues: the CA stored the certificate, the
// reply never came back.
type issuedCA struct {
	*builtin.CA
	mu      sync.Mutex
	serials []string
	lose    int
}

func (c *issuedCA) Issue(ctx context.Context, req pki.Request) (*pki.Issued, error) {
	is, err := c.CA.Issue(ctx, req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serials = append(c.serials, is.Serial)
	if fail(&c.lose) {
		return nil, errors.New("step-ca: read tcp: connection reset by peer")
	}
	return is, nil
}

// TestIssuedCertificateIsRecordedOrRevoked is issue 14's orphan
// certificate: the CA had issued, the store write that followed failed on
// a Redis blip, and the live certificate was known to nobody who would
// revoke it. Now a short outage is outlasted, a long one ends with the
// certificate revoked at the CA, and a lost answer from the CA leaves a
// "requested" record that the job's next run revokes: whatever happens,
// every certificate the CA issued is revoked there or recorded live at
// the site, and the job ends with one.
func TestIssuedCertificateIsRecordedOrRevoked(t *testing.T) {
	defer func(d time.Duration) { recordTimeout = d }(recordTimeout)
	recordTimeout = 1500 * time.Millisecond
	for _, tc := range []struct {
		name       string
		onDevice   bool // the device's CSR signed in phase 2, else a key made in phase 1
		cert, copy int  // failed writes of the record and of the job's copy, -1 for all
		lose       int  // the CA's answers lost
		wantError  bool // the first call fails; a second one, faults gone, must succeed
	}{
		{name: "phase 1, a blip", cert: 3},
		{name: "phase 1, a blip after the record", copy: 2},
		{name: "phase 1, an outage", cert: -1, wantError: true},
		{name: "phase 1, the job's copy never written", copy: -1, wantError: true},
		{name: "phase 1, the CA's answer lost", lose: 1, wantError: true},
		{name: "device CSR, a blip", onDevice: true, cert: 3},
		{name: "device CSR, an outage", onDevice: true, cert: -1, wantError: true},
		{name: "device CSR, the job's copy never written", onDevice: true, copy: -1, wantError: true},
		{name: "device CSR, the CA's answer lost", onDevice: true, lose: 1, wantError: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{KeyOnDevice: tc.onDevice})
			ca := &issuedCA{CA: f.ca}
			f.prov.ca = ca
			ctx := context.Background()
			d := f.device(t, "pc-blip")
			task := f.task(t, "b1", d, domain.KindProvision)
			real := f.prov.store
			o := &outage{Store: real, job: task.JobID}
			f.prov.store = o
			faults := func() {
				o.mu.Lock()
				o.cert, o.copy = tc.cert, tc.copy
				o.mu.Unlock()
				ca.mu.Lock()
				ca.lose = tc.lose
				ca.mu.Unlock()
			}
			var call func() error
			if tc.onDevice {
				if err := f.prov.Handle(ctx, task); err != nil {
					t.Fatalf("phase 1: %v", err)
				}
				_, l := f.leaseOne(t)
				csr := deviceCSR(t, d.FQDN())
				call = func() error {
					_, err := f.prov.SignDeviceCSR(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token}, csr)
					return err
				}
			} else {
				call = func() error { return f.prov.Handle(ctx, task) }
			}
			faults()
			if err := call(); tc.wantError != (err != nil) {
				t.Fatalf("with the faults: %v, want an error: %v", err, tc.wantError)
			}
			o.mu.Lock()
			o.cert, o.copy = 0, 0
			o.mu.Unlock()
			if tc.wantError {
				if err := call(); err != nil {
					t.Fatalf("again, the faults gone: %v", err)
				}
			}
			f.prov.store = real

			live := f.live(t, d.ID, domain.PurposeServerAuth) // also: site and CA agree on every record
			if len(live) != 1 {
				t.Errorf("%d live server certificates recorded at the end, want 1", len(live))
			}
			recorded := map[string]bool{}
			for _, c := range live {
				recorded[c.Serial] = true
			}
			for _, serial := range ca.serials {
				rec, err := f.ca.Lookup(ctx, serial)
				if err != nil {
					t.Fatal(err)
				}
				if !rec.Revoked && !recorded[serial] {
					t.Errorf("certificate %s live at the CA, not recorded live at the site", serial)
				}
			}
		})
	}
}

// cancellingCA cancels its caller's context once it has revoked, as an
// agent whose call is cut off (lease fence, deadline) does.
type cancellingCA struct {
	*builtin.CA
	cancel context.CancelFunc
}

func (c *cancellingCA) Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error {
	err := c.CA.Revoke(ctx, serial, reason)
	c.cancel()
	return err
}

// TestRevokeOutlastsItsCaller: a caller gone between the CA's revocation
// and the record left the certificate revoked at the CA and live in the
// record; a SignDeviceCSR retry then handed it back, and the device
// served a revoked certificate (make chaos, simulator faults).
func TestRevokeOutlastsItsCaller(t *testing.T) {
	f := newFixture(t, nil, Site{})
	d := f.device(t, "pc-gone")
	if err := f.prov.Handle(context.Background(), f.task(t, "b1", d, domain.KindProvision)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 1 {
		t.Fatalf("%d live server certificates after phase 1, want 1", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.prov.ca = &cancellingCA{CA: f.ca, cancel: cancel}
	if _, err := f.prov.revoke(ctx, d.ID, domain.ReasonSuperseded, func(domain.CertificateRecord) bool { return true }); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 0 { // f.live also fails on a site/CA disagreement
		t.Fatalf("%d live server certificates after the revocation, want 0", n)
	}
}

// killedBeforeSettle fails the first Complete of the lease queue, as a
// server killed between recording a result and settling its lease.
type killedBeforeSettle struct {
	Queue
	done bool
}

func (k *killedBeforeSettle) Complete(ctx context.Context, subnet netip.Prefix, jobID, token string) error {
	if !k.done {
		k.done = true
		return errors.New("server killed")
	}
	return k.Queue.Complete(ctx, subnet, jobID, token)
}

// killedBeforeFinish fails the first FinishJob, as a server killed among
// a success's effects: the device recorded provisioned, the job not yet
// finished.
type killedBeforeFinish struct {
	Store
	done bool
}

func (k *killedBeforeFinish) FinishJob(ctx context.Context, batchID, jobID string, state domain.JobState, errStep, errMsg string) (bool, error) {
	if !k.done {
		k.done = true
		return false, errors.New("server killed")
	}
	return k.Store.FinishJob(ctx, batchID, jobID, state, errStep, errMsg)
}

// TestFinishedJobLeasedAgainIsSettled is make chaos's server kill -9: the
// success was recorded, or its effects begun, but the lease not settled;
// the job came back when the lease ran out, and an agent worked the
// provisioned device again, recording a failure beside the success.
func TestFinishedJobLeasedAgainIsSettled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		among bool // killed among the success's effects, else before the settle
	}{
		{name: "killed before the settle"},
		{name: "killed among the success's effects", among: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{})
			ctx := context.Background()
			d := f.device(t, "pc-killed")
			task := f.task(t, "bk", d, domain.KindProvision)
			if err := f.prov.Handle(ctx, task); err != nil {
				t.Fatal(err)
			}
			_, l := f.leaseOne(t)
			if tc.among {
				f.prov.store = &killedBeforeFinish{Store: f.store}
			} else {
				f.prov.queue = &killedBeforeSettle{Queue: f.queue}
			}
			if _, err := f.prov.Complete(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token},
				Result{Outcome: domain.ResultSucceeded, Facts: &domain.DeviceFacts{ProvisioningState: 2, ControlMode: domain.ControlModeAdmin}}); err == nil {
				t.Fatal("complete: no error from the killed server")
			}
			f.prov.store, f.prov.queue = f.store, f.queue
			if _, err := f.queue.Reap(ctx, l.Subnet, time.Now().Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			again, err := f.queue.Lease(ctx, "agent-1", []netip.Prefix{testSubnet}, 10, time.Minute)
			if err != nil || len(again) != 1 || again[0].Attempt != 2 {
				t.Fatalf("leased again: %d jobs, %v; want the job's second attempt", len(again), err)
			}
			ref := domain.LeaseRef{Subnet: again[0].Subnet, JobID: again[0].JobID, Token: again[0].Token}
			if done, err := f.prov.Finished(ctx, ref); err != nil || !done {
				t.Fatalf("Finished = %v, %v; want true: its success is recorded", done, err)
			}
			if qj, err := f.queue.Job(ctx, ref.Subnet, ref.JobID); err != nil || qj.State != "completed" {
				t.Errorf("lease %+v, %v; want completed", qj, err)
			}
			j, err := f.store.GetJob(ctx, task.BatchID, task.JobID)
			if err != nil || j.State != domain.JobSucceeded {
				t.Errorf("job %s, %v; want succeeded", j.State, err)
			}
			dev, err := f.store.GetDevice(ctx, d.ID)
			if err != nil || dev.Status != domain.StatusProvisioned {
				t.Errorf("device %s, %v; want provisioned", dev.Status, err)
			}
			if _, err := f.store.GetSecret(ctx, adminPasswordSecret(d.ID)); err != nil {
				t.Errorf("the job's admin password is not current: %v", err)
			}
			if _, err := f.store.GetSecret(ctx, resultSecret(task.JobID)); !errors.Is(err, domain.ErrNotFound) {
				t.Errorf("result mark left behind: %v", err)
			}
			if got, err := f.queue.Lease(ctx, "agent-1", []netip.Prefix{testSubnet}, 10, time.Minute); err != nil || len(got) != 0 {
				t.Errorf("leased %d jobs after the settle, %v; want none", len(got), err)
			}
			// A job still under way is not finished.
			d2 := f.device(t, "pc-live")
			if err := f.prov.Handle(ctx, f.task(t, "bl", d2, domain.KindProvision)); err != nil {
				t.Fatal(err)
			}
			_, l2 := f.leaseOne(t)
			if done, err := f.prov.Finished(ctx, domain.LeaseRef{Subnet: l2.Subnet, JobID: l2.JobID, Token: l2.Token}); err != nil || done {
				t.Errorf("Finished of a job under way = %v, %v; want false", done, err)
			}
		})
	}
}
