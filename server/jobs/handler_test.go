package jobs

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/store"
)

var testSubnet = netip.MustParsePrefix("10.1.2.0/24")

type fixture struct {
	rdb   *redis.Client
	store *store.Store
	queue *store.LeaseQueue
	ca    *builtin.CA
	prov  *Service
	n     int
}

func newFixture(t *testing.T, dir Directory, site Site) *fixture {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	sealer, err := secrets.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	q := store.NewLeaseQueue(st, store.QueueOptions{})
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if site.ProvisioningUser == "" {
		site.ProvisioningUser, site.ProvisioningPassword = "admin", "P@ssw0rd!"
		site.Settings = config.DefaultServer().AMT.Settings
		site.Kerberos = config.Kerberos{Enabled: true, MaxClockTolerance: 5}
		site.JobDeadline = 10 * time.Minute
		site.NewPassword = func() (string, error) { return "N3w-Strong!pw", nil }
	}
	var d Directory
	if dir != nil {
		d = dir
	}
	return &fixture{rdb: rdb, store: st, queue: q, ca: ca, prov: New(st, q, ca, d, Config{Site: site, Actor: "test"}, zerolog.Nop())}
}

func (f *fixture) device(t *testing.T, host string) domain.Device {
	t.Helper()
	f.n++
	d := domain.Device{ID: "dev-" + host, UUID: fmt.Sprintf("8c4d2e6f-0000-4000-8000-%012d", f.n), HostName: host, Domain: "amt.test",
		IP: netip.MustParseAddr(fmt.Sprintf("10.1.2.%d", f.n)), Subnet: testSubnet, Status: domain.StatusNotProvisioned,
		State: domain.ProvisioningPost} // set up by hand in the MEBx; f.factory makes a factory one
	if err := f.store.PutDevice(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fixture) task(t *testing.T, batch string, d domain.Device, kind domain.JobKind) Task {
	t.Helper()
	job := domain.Job{ID: domain.JobID(batch, d.ID), BatchID: batch, DeviceID: d.ID, Kind: kind, State: domain.JobQueued}
	if _, err := f.store.CreateBatch(context.Background(), domain.Batch{ID: batch, Kind: kind, Origin: "admin", Total: 1}, []domain.Job{job}); err != nil {
		t.Fatal(err)
	}
	return Task{JobID: job.ID, BatchID: batch, DeviceID: d.ID, Kind: kind}
}

// live counts the device's live certificates of purpose in the site
// database and checks the CA agrees with each record.
func (f *fixture) live(t *testing.T, deviceID string, purpose domain.CertPurpose) []domain.CertificateRecord {
	t.Helper()
	certs, err := f.store.CertificatesByDevice(context.Background(), deviceID)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.CertificateRecord
	for _, c := range certs {
		rec, err := f.ca.Lookup(context.Background(), c.Serial)
		if c.Status == domain.CertNotIssued {
			if err == nil {
				t.Fatalf("the CA issued %s, the site records it not issued", c.Serial)
			}
			continue
		}
		if err != nil {
			t.Fatalf("CA does not know %s: %v", c.Serial, err)
		}
		if rec.Revoked == c.Status.Live() {
			t.Fatalf("site and CA disagree on %s: site %s, CA revoked=%v", c.Serial, c.Status, rec.Revoked)
		}
		if c.Purpose == purpose && c.Status.Live() {
			out = append(out, c)
		}
	}
	return out
}

// leaseOne takes the device's phase-2 job from the queue and decodes it.
func (f *fixture) leaseOne(t *testing.T) (*pb.Phase2Job, domain.Leased) {
	t.Helper()
	got, err := f.queue.Lease(context.Background(), "agent-1", []netip.Prefix{testSubnet}, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("leased %d phase-2 jobs, want 1", len(got))
	}
	var job pb.Phase2Job
	if err := proto.Unmarshal(got[0].Payload, &job); err != nil {
		t.Fatal(err)
	}
	return &job, got[0]
}

func TestProvisionWithoutDirectory(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	d := f.device(t, "pc01")
	task := f.task(t, "b1", d, domain.KindProvision)
	if err := f.prov.Handle(ctx, task); err != nil {
		t.Fatal(err)
	}
	job, _ := f.leaseOne(t)
	if job.DeviceId != d.ID || job.Kind != pb.JobKind_JOB_KIND_PROVISION || job.Target.HostName != "pc01" {
		t.Fatalf("phase-2 job = %v", job)
	}
	// S2 + S7 material: the leaf names the FQDN and verifies to the root in the chain.
	leaf, err := x509.ParseCertificate(job.Tls.CertificateDer)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for i, c := range job.Tls.ChainDer {
		cert, _ := x509.ParseCertificate(c)
		if i == len(job.Tls.ChainDer)-1 {
			roots.AddCert(cert)
		} else {
			inter.AddCert(cert)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "pc01.amt.test", Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
	key, err := x509.ParsePKCS8PrivateKey(job.Tls.PrivateKeyDer)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*rsa.PrivateKey).PublicKey.Equal(leaf.PublicKey) {
		t.Fatal("private key does not match the certificate")
	}
	if job.Credentials.Password != "P@ssw0rd!" || job.Credentials.NewAdminPassword != "N3w-Strong!pw" {
		t.Fatalf("credentials: connect with provisioning account, set the new password")
	}
	if job.Kerberos != nil {
		t.Fatal("Kerberos must stay off without a directory")
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 1 {
		t.Fatalf("%d live server certificates, want 1", n)
	}
	j, _ := f.store.GetJob(ctx, "b1", task.JobID)
	if j.State != domain.JobPhase2 {
		t.Fatalf("job state %s, want phase2", j.State)
	}
	events, _ := f.store.Events(ctx, d.ID, 100)
	seen := map[string]domain.Outcome{}
	for _, e := range events {
		if e.Phase != 1 {
			t.Fatalf("event phase %d", e.Phase)
		}
		seen[e.Step] = e.Outcome
	}
	for step, want := range map[string]domain.Outcome{StepRevokeSuperseded: domain.OutcomeOK, StepIssueServerCert: domain.OutcomeOK,
		StepPublishAccount: domain.OutcomeSkipped, StepRegisterSPNs: domain.OutcomeSkipped, StepQueuePhase2: domain.OutcomeOK} {
		if seen[step] != want {
			t.Errorf("oplog step %s = %q, want %q", step, seen[step], want)
		}
	}
}

// S1: provisioning again revokes the first server certificate (superseded).
func TestProvisionAgainRevokesSuperseded(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	d := f.device(t, "pc02")
	if err := f.prov.Handle(ctx, f.task(t, "b1", d, domain.KindProvision)); err != nil {
		t.Fatal(err)
	}
	first := f.live(t, d.ID, domain.PurposeServerAuth)
	if err := f.prov.Handle(ctx, f.task(t, "b2", d, domain.KindProvision)); err != nil {
		t.Fatal(err)
	}
	second := f.live(t, d.ID, domain.PurposeServerAuth)
	if len(first) != 1 || len(second) != 1 || first[0].Serial == second[0].Serial {
		t.Fatalf("live before %v after %v: want one each, different", first, second)
	}
	rec, err := f.ca.Lookup(ctx, first[0].Serial)
	if err != nil || !rec.Revoked || rec.Reason != domain.ReasonSuperseded {
		t.Fatalf("first certificate: %+v %v, want revoked as superseded", rec, err)
	}
	crl, err := f.ca.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(crl)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range list.RevokedCertificateEntries {
		found = found || e.SerialNumber.String() == first[0].Serial && e.ReasonCode == int(domain.ReasonSuperseded)
	}
	if !found {
		t.Fatal("CRL does not list the superseded certificate")
	}
}

var errCrash = errors.New("simulated crash")

// Interrupted after any step, a re-run converges: one live certificate,
// one phase-2 job, and the same sealed key and password.
func TestProvisionCrashAfterEachStep(t *testing.T) {
	steps := []string{StepRevokeSuperseded, StepIssueServerCert, StepIssueClientCerts, StepPublishAccount,
		StepRegisterSPNs, StepAddToGroups, StepQueuePhase2}
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	for i, crashAt := range steps {
		t.Run(crashAt, func(t *testing.T) {
			d := f.device(t, fmt.Sprintf("crash%d", i))
			task := f.task(t, fmt.Sprintf("c%d", i), d, domain.KindProvision)
			f.prov.afterStep = func(s string) error {
				if s == crashAt {
					return errCrash
				}
				return nil
			}
			if err := f.prov.Handle(ctx, task); !errors.Is(err, errCrash) {
				t.Fatalf("first run: %v, want the crash", err)
			}
			f.prov.afterStep = nil
			if err := f.prov.Handle(ctx, task); err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 1 {
				t.Fatalf("%d live server certificates after crash at %s, want 1", n, crashAt)
			}
			job, _ := f.leaseOne(t)
			if job.DeviceId != d.ID {
				t.Fatalf("leased %s", job.DeviceId)
			}
		})
	}
}

func TestProvisionRefusesRenamePending(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	d := f.device(t, "pc03")
	if _, err := f.store.UpdateDevice(ctx, d.ID, func(d *domain.Device) error { d.RenamePending = true; return nil }); err != nil {
		t.Fatal(err)
	}
	err := f.prov.Handle(ctx, f.task(t, "b1", d, domain.KindProvision))
	if !errors.Is(err, domain.ErrRenamePending) || !domain.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent rename-pending", err)
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 0 {
		t.Fatal("a certificate was issued for a rename-pending device")
	}
}

// S19 through the worker, whatever queued the task: a provision task for
// a rename-pending device fails for good at once, recorded on its job.
func TestWorkerRefusesRenamePending(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	d := f.device(t, "pc04")
	if _, err := f.store.UpdateDevice(ctx, d.ID, func(d *domain.Device) error { d.RenamePending = true; return nil }); err != nil {
		t.Fatal(err)
	}
	task := f.task(t, "r1", d, domain.KindProvision)
	w := NewWorker(f.rdb, WorkerConfig{Concurrency: 2, ShutdownTimeout: time.Second}, f.prov, f.prov, zerolog.Nop())
	wctx, cancel := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	if err := NewEnqueuer(asynq.NewClientFromRedisClient(f.rdb), 5, time.Minute).Enqueue(ctx, task, QueueSweep); err != nil {
		t.Fatal(err)
	}
	var j domain.Job
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if j, err = f.store.GetJob(ctx, task.BatchID, task.JobID); err != nil {
			t.Fatal(err)
		}
		if j.State.Final() || time.Now().After(deadline) {
			break
		}
	}
	if j.State != domain.JobFailed || !strings.Contains(j.LastError, "rename") {
		t.Fatalf("job %s: %q, want failed for the pending rename", j.State, j.LastError)
	}
	// asynq archives the task just after the handler recorded the failure.
	var info []*asynq.TaskInfo
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err = asynq.NewInspectorFromRedisClient(f.rdb).ListArchivedTasks(QueueSweep)
		if err != nil || len(info) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(info) != 1 || info[0].Retried != 0 {
		t.Fatalf("archived tasks %v %v: want the task archived without a retry", info, err)
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 0 {
		t.Fatal("a certificate was issued for a rename-pending device")
	}
}

// S14 with S15: an update of a device managed over wireless renews the
// 802.1X client certificate but keeps the wireless one, whose profile
// the agent must not touch; over any other link both are renewed.
func TestUpdateClientCertsByLink(t *testing.T) {
	cases := []struct {
		name         string
		link         domain.Link
		keepWireless bool
	}{
		{"wired", domain.LinkWired, false},
		{"unknown link", "", false},
		{"wireless", domain.LinkWireless, true},
	}
	f := newFixture(t, nil, Site{})
	f.prov.site.Networks = config.Networks{Wired8021X: true, Wireless: []config.WiFiSpec{{Name: "corp", SSID: "corp-wlan", Priority: 1}}}
	ctx := context.Background()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := f.device(t, fmt.Sprintf("wl%d", i))
			if err := f.prov.Handle(ctx, f.task(t, fmt.Sprintf("wp%d", i), d, domain.KindProvision)); err != nil {
				t.Fatal(err)
			}
			f.leaseOne(t)
			d, err := f.store.UpdateDevice(ctx, d.ID, func(d *domain.Device) error {
				d.Status, d.Link = domain.StatusProvisioned, tc.link
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			wireless0, dot1x0 := f.live(t, d.ID, domain.PurposeWireless), f.live(t, d.ID, domain.Purpose8021X)
			if err := f.prov.Handle(ctx, f.task(t, fmt.Sprintf("wu%d", i), d, domain.KindUpdate)); err != nil {
				t.Fatal(err)
			}
			job, _ := f.leaseOne(t)
			wireless1, dot1x1 := f.live(t, d.ID, domain.PurposeWireless), f.live(t, d.ID, domain.Purpose8021X)
			if len(dot1x1) != 1 || dot1x1[0].Serial == dot1x0[0].Serial {
				t.Errorf("802.1X certificate not renewed: before %v after %v", dot1x0, dot1x1)
			}
			kept := len(wireless1) == 1 && wireless1[0].Serial == wireless0[0].Serial
			if kept != tc.keepWireless {
				t.Errorf("wireless certificate kept %t, want %t", kept, tc.keepWireless)
			}
			var kinds []pb.NetworkProfile_Kind
			for _, n := range job.Networks {
				kinds = append(kinds, n.Kind)
			}
			wantProfiles := 2
			if tc.keepWireless {
				wantProfiles = 1
			}
			if len(kinds) != wantProfiles {
				t.Errorf("phase-2 job profiles %v, want %d", kinds, wantProfiles)
			}
			if job.Update == nil || job.Update.Confirm_8021X {
				t.Errorf("update options %v, want present and unconfirmed", job.Update)
			}
			if len(job.Tls.GetChainDer()) == 0 {
				t.Error("update job carries no trust anchor for the device's TLS")
			}
		})
	}
}

// faultyCA is the real CA whose Issue fails with a given error, as an
// upstream CA refusing a request does.
type faultyCA struct {
	*builtin.CA
	err error
}

func (c faultyCA) Issue(context.Context, pki.Request) (*pki.Issued, error) { return nil, c.err }

// FailJob records the step that failed, whatever the error text says: an
// upstream message that happens to hold another step's name does not
// move the failure there, and a failure before any step names none.
func TestFailJobRecordsTheFailedStep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		caErr    error
		renamed  bool // the device is rename-pending: refused before any step
		wantStep string
	}{
		{name: "plain CA error", caErr: errors.New("ca unavailable"), wantStep: StepIssueServerCert},
		{name: "CA error naming an earlier step", caErr: errors.New("step-ca: provisioner: revoke-superseded: not allowed"),
			wantStep: StepIssueServerCert},
		{name: "refused before any step", renamed: true, wantStep: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{})
			f.prov.ca = faultyCA{CA: f.ca, err: tc.caErr}
			ctx := context.Background()
			d := f.device(t, "pc-fail")
			task := f.task(t, "b1", d, domain.KindProvision)
			if tc.renamed {
				if _, err := f.store.UpdateDevice(ctx, d.ID, func(d *domain.Device) error { d.RenamePending = true; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			err := f.prov.Handle(ctx, task)
			if err == nil {
				t.Fatal("Handle succeeded")
			}
			if err := f.prov.FailJob(ctx, task, err); err != nil {
				t.Fatal(err)
			}
			j, err := f.store.GetJob(ctx, task.BatchID, task.JobID)
			if err != nil {
				t.Fatal(err)
			}
			dev, err := f.store.GetDevice(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != domain.JobFailed || j.ErrorStep != tc.wantStep || dev.LastErrorStep != tc.wantStep {
				t.Fatalf("job %s at %q, device at %q; want failed at %q (%v)", j.State, j.ErrorStep, dev.LastErrorStep, tc.wantStep, err)
			}
		})
	}
}

// A job that ends failed leaves no live certificate that no device
// installed, and no sealed private key (issue 14 item 5): the
// certificate phase 1 issued is revoked at the CA, its key deleted.
func TestFailedJobRevokesAndForgets(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	d := f.device(t, "pc-fail")
	task := f.task(t, "bf", d, domain.KindProvision)
	if err := f.prov.Handle(ctx, task); err != nil {
		t.Fatal(err)
	}
	if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 1 {
		t.Fatalf("%d live server certificates after phase 1, want 1", n)
	}
	if _, err := f.store.GetSecret(ctx, keySecret(task.JobID, domain.PurposeServerAuth)); err != nil {
		t.Fatalf("phase 1 kept no key: %v", err)
	}
	_, l := f.leaseOne(t)
	if _, err := f.prov.Complete(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token},
		Result{Outcome: domain.ResultFailedPermanent, Step: "connect", Error: "refused"}); err != nil {
		t.Fatal(err)
	}
	if live := f.live(t, d.ID, domain.PurposeServerAuth); len(live) != 0 {
		t.Errorf("live certificates after the job failed: %+v", live)
	}
	certs, _ := f.store.CertificatesByDevice(ctx, d.ID)
	for _, c := range certs {
		if c.Status != domain.CertRevoked || c.Reason != domain.ReasonCessationOfOperation {
			t.Errorf("certificate %s: %s (reason %d), want revoked for cessation of operation", c.Serial, c.Status, c.Reason)
		}
	}
	if _, err := f.store.GetSecret(ctx, keySecret(task.JobID, domain.PurposeServerAuth)); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("the failed job's private key is still sealed in the store: %v", err)
	}
}

// cutStore is the real store whose caller goes away right after the
// device is updated: what an agent's connection cut mid-Complete does
// to the call's context (make chaos, partition).
type cutStore struct {
	*store.Store
	cut func()
}

func (c cutStore) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	d, err := c.Store.UpdateDevice(ctx, id, fn)
	c.cut()
	return d, err
}

// A success whose caller goes away half-way is applied whole: device,
// job and lease. Stopped after the device, it left the device
// provisioned and the job's marks deleted while the job was neither
// finished nor off the queue; leased again, it failed against the device
// it had provisioned.
func TestCompleteOutlivesItsCaller(t *testing.T) {
	f := newFixture(t, nil, Site{})
	d := f.device(t, "pc-cut")
	task := f.task(t, "bc", d, domain.KindProvision)
	if err := f.prov.Handle(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	_, l := f.leaseOne(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(cutStore{Store: f.store, cut: cancel}, f.queue, f.ca, nil, f.prov.cfg, zerolog.Nop())
	if _, err := p.Complete(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token},
		Result{Outcome: domain.ResultSucceeded}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	bg := context.Background()
	j, err := f.store.GetJob(bg, task.BatchID, task.JobID)
	if err != nil {
		t.Fatal(err)
	}
	qj, err := f.queue.Job(bg, l.Subnet, l.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != domain.JobSucceeded || qj.State != "completed" {
		t.Errorf("job %s, lease %s; want succeeded and completed", j.State, qj.State)
	}
}
