package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/wsman"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/jobs"
)

const (
	simPassword = "P@ssw0rd1"
	newPassword = "N3w-Admin!pass"
)

// signEnv is a running AgentService with a device CA, and phase 1 over
// the same store, queue and CA.
type signEnv struct {
	srv *apitest.Server
	ca  *builtin.CA
}

func newSignEnv(t *testing.T) *signEnv {
	t.Helper()
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return &signEnv{srv: apitest.Start(t, apitest.Options{DeviceCA: ca}), ca: ca}
}

// phase1 runs the real phase-1 handler for a new device at ip on subnet
// and returns the device and its job ID; keyOnDevice is amt.key_on_device.
func (e *signEnv) phase1(t *testing.T, batch, host, ip, subnet string, keyOnDevice bool) (domain.Device, string) {
	t.Helper()
	ctx := context.Background()
	d := domain.Device{ID: "dev-" + host, HostName: host, Domain: "amt.test", IP: netip.MustParseAddr(ip),
		Subnet: netip.MustParsePrefix(subnet), Status: domain.StatusNotProvisioned, State: domain.ProvisioningPost}
	if err := e.srv.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	jobID := domain.JobID(batch, d.ID)
	if _, err := e.srv.Store.CreateBatch(ctx, domain.Batch{ID: batch, Kind: domain.KindProvision, Origin: "admin", Total: 1},
		[]domain.Job{{ID: jobID, BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision, State: domain.JobQueued}}); err != nil {
		t.Fatal(err)
	}
	site := jobs.Site{ProvisioningUser: "admin", ProvisioningPassword: simPassword, KeyOnDevice: keyOnDevice,
		Settings: config.DefaultServer().AMT.Settings, JobDeadline: 10 * time.Minute,
		NewPassword: func() (string, error) { return newPassword, nil }}
	prov := jobs.New(e.srv.Store, e.srv.Queue, e.ca, nil, jobs.Config{Site: site, Actor: "test"}, zerolog.Nop())
	if err := prov.Handle(ctx, jobs.Task{JobID: jobID, BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision}); err != nil {
		t.Fatalf("phase 1: %v", err)
	}
	return d, jobID
}

func lease(t *testing.T, c pb.AgentServiceClient) *pb.Phase2Job {
	t.Helper()
	resp, err := c.Lease(context.Background(), &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(2 * time.Second)})
	if err != nil || len(resp.GetJobs()) != 1 {
		t.Fatalf("lease: %d jobs, %v; want 1", len(resp.GetJobs()), err)
	}
	return resp.GetJobs()[0]
}

// deviceCSR is what AMT's GeneratePKCS10RequestEx gives: an RSA-2048 key
// kept by the device, and a request naming cn.
func deviceCSR(t *testing.T, cn string) (*rsa.PrivateKey, []byte) {
	t.Helper()
	k, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, csr
}

// liveServerCerts lists the device's live server certificates and checks
// the CA agrees with every record.
func (e *signEnv) liveServerCerts(t *testing.T, devID string) []domain.CertificateRecord {
	t.Helper()
	ctx := context.Background()
	certs, err := e.srv.Store.CertificatesByDevice(ctx, devID)
	if err != nil {
		t.Fatal(err)
	}
	var live []domain.CertificateRecord
	for _, c := range certs {
		rec, err := e.ca.Lookup(ctx, c.Serial)
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
			t.Fatalf("site and CA disagree on %s: site %s, CA revoked %t", c.Serial, c.Status, rec.Revoked)
		}
		if c.Purpose == domain.PurposeServerAuth && c.Status.Live() {
			live = append(live, c)
		}
	}
	return live
}

func TestSignDeviceCSR(t *testing.T) {
	e := newSignEnv(t)
	ctx := context.Background()
	const subnet = "10.9.0.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	dev, jobID := e.phase1(t, "s1", "kod1", "10.9.0.5", subnet, true)

	// A server certificate issued after phase 1's S1 ran (by another job)
	// is still live: the signature supersedes it.
	_, otherCSR := deviceCSR(t, dev.FQDN())
	other, err := e.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: dev.FQDN(), CSR: otherCSR})
	if err != nil {
		t.Fatal(err)
	}
	rec := other.Record(dev.ID, domain.PurposeServerAuth, time.Now())
	rec.JobID = "older:" + dev.ID
	if err := e.srv.Store.PutCertificate(ctx, rec); err != nil {
		t.Fatal(err)
	}

	job := lease(t, client)
	if !job.GetTls().GetKeyOnDevice() || len(job.GetTls().GetPrivateKeyDer()) != 0 || len(job.GetTls().GetChainDer()) == 0 {
		t.Fatalf("phase 1 did not prepare a key-on-device job with its chain: %v", job.GetTls())
	}
	// The device's request names nothing: the names come from the site.
	key, csr := deviceCSR(t, "")
	resp, err := client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: job.GetLease(), CsrDer: csr})
	if err != nil {
		t.Fatalf("SignDeviceCSR: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetCertificateDer())
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Fatal("the certificate is not for the device's key")
	}
	if leaf.SerialNumber.String() != resp.GetSerial() || leaf.Subject.CommonName != "kod1.amt.test" ||
		strings.Join(leaf.DNSNames, ",") != "kod1.amt.test" {
		t.Fatalf("leaf serial %s subject %q SANs %v; want serial %s and the device FQDN only",
			leaf.SerialNumber, leaf.Subject.CommonName, leaf.DNSNames, resp.GetSerial())
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	chain := resp.GetChainDer()
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if i == len(chain)-1 {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "kod1.amt.test", Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("server-auth certificate does not verify: %v", err)
	}
	live := e.liveServerCerts(t, dev.ID)
	if len(live) != 1 || live[0].Serial != resp.GetSerial() || live[0].JobID != jobID {
		t.Fatalf("live server certificates %+v; want only %s of job %s", live, resp.GetSerial(), jobID)
	}
	if r, err := e.ca.Lookup(ctx, other.Serial); err != nil || !r.Revoked || r.Reason != domain.ReasonSuperseded {
		t.Fatalf("the older certificate: %+v %v; want revoked as superseded", r, err)
	}

	// A retry with the same device key gets the same certificate.
	again, err := client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: job.GetLease(), CsrDer: csr})
	if err != nil || again.GetSerial() != resp.GetSerial() || string(again.GetCertificateDer()) != string(resp.GetCertificateDer()) {
		t.Fatalf("retry: serial %s, %v; want the same certificate %s", again.GetSerial(), err, resp.GetSerial())
	}
	if n := len(e.liveServerCerts(t, dev.ID)); n != 1 {
		t.Fatalf("%d live server certificates after a retry, want 1", n)
	}
	// The device made a new key (a later attempt): a new certificate, and
	// the first one is superseded.
	key2, csr2 := deviceCSR(t, "kod1.amt.test")
	third, err := client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: job.GetLease(), CsrDer: csr2})
	if err != nil || third.GetSerial() == resp.GetSerial() {
		t.Fatalf("new key: serial %s, %v; want a new certificate", third.GetSerial(), err)
	}
	if l, _ := x509.ParseCertificate(third.GetCertificateDer()); l == nil || !key2.PublicKey.Equal(l.PublicKey) {
		t.Fatal("the new certificate is not for the new key")
	}
	live = e.liveServerCerts(t, dev.ID)
	if len(live) != 1 || live[0].Serial != third.GetSerial() {
		t.Fatalf("live server certificates %+v; want only %s", live, third.GetSerial())
	}
	evs, err := e.srv.Store.Events(ctx, dev.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	signed := 0
	for _, ev := range evs {
		if ev.Step == jobs.StepSignDeviceCSR && ev.Phase == 2 {
			signed++
		}
	}
	if signed != 2 {
		t.Errorf("%d %s events, want 2 (one per certificate)", signed, jobs.StepSignDeviceCSR)
	}

	// Completing the job installs the certificate and drops the job's marks.
	if _, err := client.Complete(ctx, &pb.CompleteRequest{Lease: job.GetLease(), Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED}); err != nil {
		t.Fatal(err)
	}
	if live := e.liveServerCerts(t, dev.ID); len(live) != 1 || live[0].Status != domain.CertInstalled {
		t.Fatalf("after Complete: %+v; want one installed certificate", live)
	}
	// The stored name (server/jobs/secrets.go): a rename would orphan it.
	if _, err := e.srv.Store.GetSecret(ctx, "job/"+jobID+"/sign-on-device"); err == nil {
		t.Error("the key-on-device mark outlived the job")
	}
}

func TestSignDeviceCSRRefusals(t *testing.T) {
	e := newSignEnv(t)
	ctx := context.Background()
	const subnet = "10.9.1.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	stranger, _ := e.srv.Enroll(t, "10.9.2.0/24")
	dev, _ := e.phase1(t, "r1", "kod2", "10.9.1.5", subnet, true)
	job := lease(t, client)
	_, good := deviceCSR(t, dev.FQDN())

	// A job phase 1 prepared with a site-generated key.
	e.phase1(t, "r2", "site2", "10.9.1.6", subnet, false)
	siteJob := lease(t, client)

	_, evil := deviceCSR(t, "dc1.amt.test")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: dev.FQDN()}}, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature

	ref := func(f func(*pb.LeaseRef)) *pb.LeaseRef {
		r := &pb.LeaseRef{Subnet: job.GetLease().GetSubnet(), JobId: job.GetLease().GetJobId(), Token: job.GetLease().GetToken()}
		if f != nil {
			f(r)
		}
		return r
	}
	cases := []struct {
		name     string
		c        pb.AgentServiceClient
		lease    *pb.LeaseRef
		csr      []byte
		code     codes.Code
		wantText string
	}{
		{"agent of another subnet", stranger, ref(nil), good, codes.PermissionDenied, "10.9.1.0/24"},
		{"agent naming a subnet it does not serve", stranger, ref(func(r *pb.LeaseRef) { r.Subnet = "10.9.2.0/24" }), good,
			codes.FailedPrecondition, "lease lost"},
		{"no lease", client, nil, good, codes.InvalidArgument, "lease"},
		{"no token", client, ref(func(r *pb.LeaseRef) { r.Token = "" }), good, codes.InvalidArgument, "lease.token"},
		{"stale token", client, ref(func(r *pb.LeaseRef) { r.Token = "0123456789abcdef" }), good, codes.FailedPrecondition, "lease lost"},
		{"no csr", client, ref(nil), nil, codes.InvalidArgument, "csr_der"},
		{"csr not DER", client, ref(nil), []byte("-----BEGIN CERTIFICATE REQUEST-----"), codes.InvalidArgument, "csr_der"},
		{"csr signature broken", client, ref(nil), tampered, codes.InvalidArgument, "csr_der"},
		{"csr with an ECDSA key", client, ref(nil), ecCSR, codes.InvalidArgument, "csr_der"},
		{"csr asking for another name", client, ref(nil), evil, codes.InvalidArgument, "csr.subject.cn"},
		{"job with a site-generated key", client, siteJob.GetLease(), good, codes.FailedPrecondition, "not prepared for key_on_device"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: tc.lease, CsrDer: tc.csr})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.wantText) {
				t.Fatalf("err = %v; want %s mentioning %q", err, tc.code, tc.wantText)
			}
		})
	}
	if live := e.liveServerCerts(t, dev.ID); len(live) != 0 {
		t.Fatalf("refused requests left %d live certificates", len(live))
	}
	// Without a device CA the server says so instead of failing obscurely.
	bare := apitest.Start(t, apitest.Options{})
	c2, _ := bare.Enroll(t, subnet)
	if _, err := c2.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: ref(nil), CsrDer: good}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("without a device CA: %v, want FailedPrecondition", err)
	}
}

// startSim runs a one-device simulator.
func startSim(t *testing.T) *amtsim.Sim {
	t.Helper()
	return amtsimtest.Start(t, amtsim.Config{Devices: 1, Kind: amtsim.KindMEBx, Password: simPassword, CommitDelay: 30 * time.Millisecond}, nil)
}

// End to end with key_on_device: phase 1 prepares the job, the real agent
// leases it, runs phase 2 against the simulator, which generates the key
// and the CSR; the server signs it; the device then serves TLS with a
// certificate for its own key, and the site records it as installed.
func TestKeyOnDeviceEndToEnd(t *testing.T) {
	e := newSignEnv(t)
	sim := startSim(t)
	ctx := context.Background()
	addr := sim.Addrs()[0]
	subnet := netip.PrefixFrom(addr, 24).Masked().String()
	dev, jobID := e.phase1(t, "e2e", "kod3", addr.String(), subnet, true)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, e.srv.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultAgent()
	cfg.Server, cfg.ServerCAFile, cfg.StateDir = e.srv.Addr, caFile, filepath.Join(dir, "state")
	cfg.Hello.Listen = "" // not every interface's 9971 in a test
	cfg.Concurrency, cfg.LongPoll, cfg.DeviceDeadline = 1, time.Second, time.Minute
	cfg.AMT.HTTPPort, cfg.AMT.TLSPort = sim.HTTPPort(), sim.TLSPort()
	cfg.AMT.CallTimeout, cfg.AMT.CommitWait, cfg.AMT.CommitDeadline = 5*time.Second, 40*time.Millisecond, 10*time.Second
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithBootstrapToken(e.srv.Token(t, subnet)),
		agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond), agent.WithShutdownGrace(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	var job domain.Job
	for i := 0; ; i++ { // a bounded wait, not a timing test
		if job, err = e.srv.Store.GetJob(ctx, "e2e", jobID); err == nil && job.State.Final() {
			break
		}
		if i == 600 {
			t.Fatalf("job never finished: %+v %v", job, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if job.State != domain.JobSucceeded {
		evs, _ := e.srv.Store.Events(ctx, dev.ID, 100)
		var log []string
		for _, ev := range evs {
			log = append(log, fmt.Sprintf("%d %s %s %s", ev.Phase, ev.Step, ev.Outcome, ev.Detail))
		}
		t.Fatalf("job %s at %s: %s\n%s", job.State, job.ErrorStep, job.LastError, strings.Join(log, "\n"))
	}

	st, ok := sim.Device(addr)
	if !ok {
		t.Fatal("simulator lost the device")
	}
	var deviceKey *rsa.PublicKey
	for _, k := range st.Keys {
		if k.GeneratedOnDevice {
			if deviceKey, err = x509.ParsePKCS1PublicKey(k.PublicKeyDER); err != nil {
				t.Fatal(err)
			}
		}
	}
	if deviceKey == nil {
		t.Fatal("no key was generated on the device")
	}
	// The TLS port, dialled for real: the handshake proves the device
	// holds the private key of the certificate it serves.
	// (The agent's TLS settings: AMT 11 speaks only RSA key exchange.)
	tc, err := (&wsman.TLSConfig{TrustFirstUse: true}).Build()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
		net.JoinHostPort(addr.String(), strconv.Itoa(sim.TLSPort())), tc)
	if err != nil {
		t.Fatalf("TLS to the device: %v", err)
	}
	served := conn.ConnectionState().PeerCertificates
	_ = conn.Close()
	if len(served) == 0 || !deviceKey.Equal(served[0].PublicKey) {
		t.Fatal("the device does not serve a certificate for its own key")
	}
	if served[0].Subject.CommonName != dev.FQDN() {
		t.Errorf("served certificate names %q, want %q", served[0].Subject.CommonName, dev.FQDN())
	}
	live := e.liveServerCerts(t, dev.ID)
	if len(live) != 1 || live[0].Serial != served[0].SerialNumber.String() || live[0].Status != domain.CertInstalled {
		t.Fatalf("site records %+v; want the served certificate %s, installed", live, served[0].SerialNumber)
	}
	if d, err := e.srv.Store.GetDevice(ctx, dev.ID); err != nil || d.Status != domain.StatusProvisioned {
		t.Fatalf("device %+v %v; want provisioned", d.Status, err)
	}
}

// A retried key-on-device job carries the certificate an earlier attempt
// had signed, while it is live: the agent recognises by it a device that
// attempt activated before its lease was lost (issue 14, the freeze:
// without it the retry reopened a provisioning session the activated
// device no longer offers, and used up its attempts).
func TestRetryCarriesTheEarlierSignedCertificate(t *testing.T) {
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	e := &signEnv{srv: apitest.Start(t, apitest.Options{DeviceCA: ca, Jobs: jobs.Config{RetryDelay: 20 * time.Millisecond},
		Reap: 20 * time.Millisecond}), ca: ca}
	ctx := context.Background()
	const subnet = "10.9.3.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	dev, _ := e.phase1(t, "e1", "kod3", "10.9.3.5", subnet, true)

	retry := func(job *pb.Phase2Job) *pb.Phase2Job {
		t.Helper()
		if _, err := client.Complete(ctx, &pb.CompleteRequest{Lease: job.GetLease(), Result: pb.CompleteResult_COMPLETE_RESULT_FAILED,
			Error: "cut off"}); err != nil {
			t.Fatal(err)
		}
		return lease(t, client)
	}
	first := lease(t, client)
	if first.GetAttempt() != 1 || len(first.GetTls().GetCertificateDer()) != 0 {
		t.Fatalf("first attempt %d carries a certificate (%d bytes); want attempt 1 without", first.GetAttempt(), len(first.GetTls().GetCertificateDer()))
	}
	// A retry before anything was signed has nothing to carry.
	second := retry(first)
	if second.GetAttempt() != 2 || len(second.GetTls().GetCertificateDer()) != 0 {
		t.Fatalf("attempt %d carries %d bytes of certificate; want attempt 2 without", second.GetAttempt(), len(second.GetTls().GetCertificateDer()))
	}
	_, csr := deviceCSR(t, dev.FQDN())
	signed, err := client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: second.GetLease(), CsrDer: csr})
	if err != nil {
		t.Fatal(err)
	}
	third := retry(second)
	tm := third.GetTls()
	if third.GetAttempt() != 3 || string(tm.GetCertificateDer()) != string(signed.GetCertificateDer()) ||
		tm.GetSerial() != signed.GetSerial() || len(tm.GetChainDer()) != len(signed.GetChainDer()) || !tm.GetKeyOnDevice() {
		t.Fatalf("attempt %d: serial %q, %d chain certificates, key on device %t; want attempt 3 carrying serial %s and its chain",
			third.GetAttempt(), tm.GetSerial(), len(tm.GetChainDer()), tm.GetKeyOnDevice(), signed.GetSerial())
	}
	// The device made a new key in that attempt: the newer certificate
	// supersedes the first, and the next retry carries only the newer.
	_, csr2 := deviceCSR(t, dev.FQDN())
	newer, err := client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: third.GetLease(), CsrDer: csr2})
	if err != nil {
		t.Fatal(err)
	}
	if fourth := retry(third); fourth.GetTls().GetSerial() != newer.GetSerial() {
		t.Fatalf("attempt %d carries serial %q; want the live %s, not the superseded %s",
			fourth.GetAttempt(), fourth.GetTls().GetSerial(), newer.GetSerial(), signed.GetSerial())
	}
}
