package site_test

import (
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/site"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// run starts a batch through AdminService and follows it to the end.
func (e *e2e) run(t *testing.T, req *pb.StartBatchRequest) *pb.Batch {
	t.Helper()
	b, err := e.Admin.StartBatch(e.ctx, req)
	if err != nil {
		t.Fatalf("start %v: %v", req.GetKind(), err)
	}
	return e.watch(t, b.GetId())
}

func (e *e2e) watch(t *testing.T, id string) *pb.Batch {
	t.Helper()
	b, err := e.Watch(e.ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *e2e) device(t *testing.T, id string) *pb.Device {
	t.Helper()
	d, err := e.Admin.GetDevice(e.ctx, &pb.GetDeviceRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkRemoved proves S16/S17's common part: every certificate issued
// for the device is revoked and its AD account (with its SPNs) is gone.
func (e *e2e) checkRemoved(t *testing.T, d *pb.Device, dir *directory.Client) {
	t.Helper()
	recs, err := e.st.CertificatesByDevice(e.ctx, d.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Errorf("%s: no certificate records at all", d.GetHostName())
	}
	for _, r := range recs {
		if r.Status != domain.CertRevoked {
			t.Errorf("%s: certificate %s is %s after removal", d.GetHostName(), r.Serial, r.Status)
		}
	}
	if acc, err := dir.Lookup(e.ctx, d.GetHostName()); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("%s: AD account after removal: %+v, %v", d.GetHostName(), acc, err)
	}
}

// waitStatus waits for the device to reach want.
func (e *e2e) waitStatus(t *testing.T, id string, want pb.DeviceStatus, within time.Duration) *pb.Device {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		d := e.device(t, id)
		if d.GetStatus() == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v after %v, want %v; last error at %q: %s", id, d.GetStatus(), within, want, d.GetLastErrorStep(), d.GetLastError())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDayTwo runs the day-2 operations through the admin service on
// factory devices activated through their Hellos, with the built-in CA
// and Samba: both removal options, the rename order and auto-provisioning
// (S16–S19, S22). As on real firmware a fully removed device is dark
// until it sends a new Hello (here the in-band trigger, as an agent on the
// PC's operating system gives it), which re-provisions it.
func TestDayTwo(t *testing.T) {
	const n = 6
	e := startWith(t, site.Config{Devices: n}, "", true)
	if err := e.TriggerHellos(); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.settle(t, 2*time.Minute) {
		if d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
			t.Fatalf("%s: %v after its Hello: %s", d.GetId(), d.GetStatus(), d.GetLastError())
		}
	}
	dir, err := directory.New(directory.Config{URLs: []string{e.cfg.Directory.URL}, CAFile: e.cfg.Directory.CAFile,
		BindDN: e.cfg.Directory.BindDN, Password: secrets.Redacted(e.cfg.DirectoryPassword), BaseDN: e.cfg.Directory.BaseDN,
		AccountOU: e.cfg.Directory.AccountOU, Realm: e.cfg.Directory.Realm, Timeout: 10 * time.Second}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dir.Close() })
	devs := e.devices(t)
	keep, all, renamed, other := devs[0], devs[1], devs[2], devs[3]
	if _, err := dir.Lookup(e.ctx, keep.GetHostName()); err != nil {
		t.Fatalf("AD account after provisioning: %v", err)
	}

	t.Run("remove config only, suppressing auto-provisioning", func(t *testing.T) {
		b := e.run(t, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_REMOVE_CONFIG, DeviceIds: []string{keep.GetFqdn()}, SuppressAutoProvision: true})
		if b.GetSucceeded() != 1 {
			t.Fatalf("batch %+v", b)
		}
		st := e.simState(t, keep.GetIp())
		if st.ProvisioningState != 1 || st.HostName == "" || len(st.Certificates) != 0 || st.TLS.Enabled || st.Kerberos.Enabled {
			t.Errorf("simulator after PartialUnprovision: state %d host %q certs %d tls %v kerberos %v",
				st.ProvisioningState, st.HostName, len(st.Certificates), st.TLS.Enabled, st.Kerberos.Enabled)
		}
		e.checkRemoved(t, keep, dir)
		if d := e.device(t, keep.GetId()); d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_NOT_PROVISIONED || !d.GetSuppressAutoProvision() {
			t.Errorf("device after removal: %v suppressed=%v", d.GetStatus(), d.GetSuppressAutoProvision())
		}
	})

	t.Run("remove config and identity", func(t *testing.T) {
		b := e.run(t, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_REMOVE_ALL, DeviceIds: []string{all.GetId()}})
		if b.GetSucceeded() != 1 {
			t.Fatalf("batch %+v", b)
		}
		st := e.simState(t, all.GetIp())
		if st.ProvisioningState != 0 || st.HostName != "" || len(st.Certificates) != 0 || len(st.Users) > 1 || st.Listening.HTTP || st.Listening.TLS {
			t.Errorf("simulator after Unprovision: state %d host %q certs %d users %d listening %+v",
				st.ProvisioningState, st.HostName, len(st.Certificates), len(st.Users), st.Listening)
		}
		e.checkRemoved(t, all, dir)
		if d := e.device(t, all.GetId()); d.GetSuppressAutoProvision() {
			t.Error("suppressed without being asked")
		}
	})

	t.Run("rename: removal first, provisioning refused until complete", func(t *testing.T) {
		b, err := e.Admin.BeginRename(e.ctx, &pb.BeginRenameRequest{DeviceIds: []string{renamed.GetId()}})
		if err != nil {
			t.Fatal(err)
		}
		if b = e.watch(t, b.GetId()); b.GetSucceeded() != 1 {
			t.Fatalf("rename removal %+v", b)
		}
		if st := e.simState(t, renamed.GetIp()); st.ProvisioningState != 0 {
			t.Errorf("rename left provisioning state %d", st.ProvisioningState)
		}
		e.checkRemoved(t, renamed, dir)
		early := e.run(t, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{renamed.GetId()}})
		jobs, err := e.Admin.ListBatchJobs(e.ctx, &pb.ListBatchJobsRequest{BatchId: early.GetId()})
		if err != nil || early.GetFailed() != 1 || len(jobs.GetJobs()) != 1 || jobs.GetJobs()[0].GetErrorStep() != "refused" {
			t.Fatalf("early provisioning of a rename-pending device: %+v %+v %v", early, jobs, err)
		}
		if err := e.JoinComputers("pc-renamed"); err != nil { // the PC rejoined under its new name
			t.Fatal(err)
		}
		b, err = e.Admin.CompleteRename(e.ctx, &pb.CompleteRenameRequest{DeviceId: renamed.GetId(), NewFqdn: "pc-renamed." + site.Domain})
		if err != nil {
			t.Fatal(err)
		}
		// The PC's in-band agent, back under its new name, opens the
		// remote configuration the batch's phase 2 is waiting for.
		if err := e.TriggerHello(renamed.GetIp()); err != nil {
			t.Fatal(err)
		}
		if b = e.watch(t, b.GetId()); b.GetSucceeded() != 1 {
			failures, _ := e.Failures(e.ctx, b.GetId())
			t.Fatalf("provisioning after rename %+v: %v", b, failures)
		}
		d := e.device(t, renamed.GetId())
		if d.GetRenamePending() || d.GetFqdn() != "pc-renamed."+site.Domain {
			t.Errorf("device after rename %+v", d)
		}
		e.checkProvisioned(t, d, config.DefaultServer(), true)
	})

	t.Run("a Hello re-provisions a removed device", func(t *testing.T) {
		// all: removed without suppression, dark, in the auto-provisioning
		// fleet collection (S18).
		if err := e.TriggerHello(all.GetIp()); err != nil {
			t.Fatal(err)
		}
		d := e.waitStatus(t, all.GetId(), pb.DeviceStatus_DEVICE_STATUS_PROVISIONED, time.Minute)
		e.checkProvisioned(t, d, config.DefaultServer(), true)
	})

	t.Run("sweep provisions only eligible devices", func(t *testing.T) {
		// keep: suppressed, identity kept (reachable with its admin
		// password); other: provisioned. Neither is swept.
		commits := e.simState(t, other.GetIp()).Commits
		b, err := e.Admin.SweepNow(e.ctx, &pb.SweepNowRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if b.GetTotal() != 0 {
			t.Fatalf("sweep batch has %d devices, want none (the only unprovisioned one is suppressed)", b.GetTotal())
		}
		if d := e.device(t, keep.GetId()); d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_NOT_PROVISIONED {
			t.Errorf("suppressed device is %v", d.GetStatus())
		}
		// Clearing the flag makes the next sweep take it (S18).
		if _, err := e.Admin.SetAutoProvisionSuppressed(e.ctx, &pb.SetAutoProvisionSuppressedRequest{DeviceIds: []string{keep.GetId()}}); err != nil {
			t.Fatal(err)
		}
		b, err = e.Admin.SweepNow(e.ctx, &pb.SweepNowRequest{})
		if err != nil || b.GetTotal() != 1 {
			t.Fatalf("second sweep %+v %v", b, err)
		}
		if b = e.watch(t, b.GetId()); b.GetSucceeded() != 1 {
			failures, _ := e.Failures(e.ctx, b.GetId())
			t.Fatalf("second sweep batch %+v: %v", b, failures)
		}
		e.checkProvisioned(t, e.device(t, keep.GetId()), config.DefaultServer(), true)
		if st := e.simState(t, other.GetIp()); st.Commits != commits {
			t.Errorf("a provisioned device was swept: %d commits, had %d", st.Commits, commits)
		}
	})
}
