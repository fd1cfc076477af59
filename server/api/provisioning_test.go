package api_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/jobs"
)

// provEnv is a running AgentService whose job service has remote
// configuration on, with a test provisioning certificate for amt.test.
type provEnv struct {
	srv *apitest.Server
	id  *provcert.Identity
}

func newProvEnv(t *testing.T) *provEnv { t.Helper(); return newProvEnvWith(t, apitest.Options{}) }

// newProvEnvWith is newProvEnv with o's API, queue and reaper settings.
func newProvEnvWith(t *testing.T, o apitest.Options) *provEnv {
	t.Helper()
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := provcerttest.Identity(t, "amt.test")
	site := jobs.Site{ProvisioningUser: "admin", ProvisioningPassword: simPassword, Settings: config.DefaultServer().AMT.Settings,
		JobDeadline: 10 * time.Minute, NewPassword: func() (string, error) { return newPassword, nil },
		Activation: &jobs.Activation{Identity: id, MEBxPassword: "admin"}}
	o.DeviceCA, o.Jobs = ca, jobs.Config{Site: site, Actor: "test"}
	return &provEnv{srv: apitest.Start(t, o), id: id}
}

// factoryJob records a factory device that sent a Hello trusting the
// provisioning root and runs phase 1 for it; it returns the job ID.
func (e *provEnv) factoryJob(t *testing.T, batch, host, ip, subnet string) string {
	t.Helper()
	ctx := context.Background()
	root := sha256.Sum256(e.id.Chain().Root().Raw)
	d := domain.Device{ID: "dev-" + host, HostName: host, Domain: "amt.test", IP: netip.MustParseAddr(ip),
		Subnet: netip.MustParsePrefix(subnet), Status: domain.StatusNotProvisioned,
		Hello: &domain.HelloSeen{At: time.Now(), IP: netip.MustParseAddr(ip), TrustedRoots: []domain.RootHash{{Alg: 2, Sum: root[:]}}}}
	if err := e.srv.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	jobID := domain.JobID(batch, d.ID)
	if _, err := e.srv.Store.CreateBatch(ctx, domain.Batch{ID: batch, Kind: domain.KindProvision, Origin: "admin", Total: 1},
		[]domain.Job{{ID: jobID, BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision, State: domain.JobQueued}}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Jobs.Handle(ctx, jobs.Task{JobID: jobID, BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision}); err != nil {
		t.Fatalf("phase 1: %v", err)
	}
	return jobID
}

// grpcSigner is the agent's side of provcert.RemoteSigner over the real
// AgentService client.
type grpcSigner struct {
	c      pb.AgentServiceClient
	subnet string
}

func (g grpcSigner) SignProvisioning(ctx context.Context, jobID, token string, digest []byte, o provcert.SignOpts) ([]byte, error) {
	h := map[crypto.Hash]pb.SignatureHash{crypto.SHA256: pb.SignatureHash_SIGNATURE_HASH_SHA256, crypto.SHA384: pb.SignatureHash_SIGNATURE_HASH_SHA384,
		crypto.SHA512: pb.SignatureHash_SIGNATURE_HASH_SHA512, crypto.SHA1: pb.SignatureHash_SIGNATURE_HASH_SHA1}[o.Hash]
	resp, err := g.c.SignProvisioning(ctx, &pb.SignProvisioningRequest{Lease: &pb.LeaseRef{Subnet: g.subnet, JobId: jobID, Token: token},
		Digest: digest, Hash: h, Pss: o.PSS})
	return resp.GetSignature(), err
}

// handshake runs a TLS handshake against a server that, like the
// device, demands a client certificate chaining to the provisioning root.
func handshake(t *testing.T, id *provcert.Identity, cert tls.Certificate, version uint16) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(id.Chain().Root())
	srvCert := id.TLSCertificate() // any server certificate will do; the client does not verify it
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: roots, MinVersion: version, MaxVersion: version})
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		done <- s.Handshake()
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		MinVersion: version, MaxVersion: version})
	if err == nil {
		c.Close()
	}
	if serr := <-done; err == nil {
		err = serr
	}
	return err
}

// signEvents are the device's sign-provisioning events.
func signEvents(t *testing.T, e *provEnv, deviceID string) []domain.OperationEvent {
	t.Helper()
	events, err := e.srv.Store.Events(context.Background(), deviceID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.OperationEvent
	for _, ev := range events {
		if ev.Step == jobs.StepSignProvisioning {
			out = append(out, ev)
		}
	}
	return out
}

// The agent's handshake signs through SignProvisioning: TLS 1.2 and 1.3
// handshakes complete with the provisioning chain as client certificate,
// and every signature is in the device's operations log.
func TestSignProvisioningHandshake(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.9.1.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	e.factoryJob(t, "p1", "fac1", "10.9.1.5", subnet)
	job := lease(t, client)
	act := job.GetActivation()
	if act == nil || len(act.GetProvisioningChainDer()) != 2 {
		t.Fatalf("leased job has no activation with the chain: %v", act)
	}
	chain, err := provcert.ParseChainPEM(e.id.Chain().PEM())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := provcert.NewSigner(ctx, chain, grpcSigner{client, subnet}, job.GetLease().GetJobId(), job.GetLease().GetToken())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		if err := handshake(t, e.id, signer.TLSCertificate(), v); err != nil {
			t.Fatalf("handshake %x with the remote signer: %v", v, err)
		}
	}
	signs := signEvents(t, e, job.GetDeviceId())
	for _, ev := range signs {
		if ev.JobID != job.GetLease().GetJobId() || !strings.Contains(ev.Detail, "prov.amt.test") {
			t.Errorf("sign event %+v", ev)
		}
	}
	if len(signs) != 2 {
		t.Fatalf("%d sign-provisioning events for 2 handshakes", len(signs))
	}
}

// Signatures are refused to an agent of another subnet, for a stale
// token, for a job that does not activate, and for a bad hash.
func TestSignProvisioningRefused(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.9.2.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	other, _ := e.srv.Enroll(t, "10.9.3.0/24")
	e.factoryJob(t, "p2", "fac2", "10.9.2.5", subnet)
	job := lease(t, client)
	digest := sha256.Sum256([]byte("handshake"))
	ok := &pb.SignProvisioningRequest{Lease: job.GetLease(), Digest: digest[:], Hash: pb.SignatureHash_SIGNATURE_HASH_SHA256}
	resp, err := client.SignProvisioning(ctx, ok)
	if err != nil {
		t.Fatalf("SignProvisioning: %v", err)
	}
	if err := rsa.VerifyPKCS1v15(e.id.Chain().Leaf().PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], resp.GetSignature()); err != nil {
		t.Fatalf("signature does not verify with the leaf: %v", err)
	}
	pss := &pb.SignProvisioningRequest{Lease: job.GetLease(), Digest: digest[:], Hash: pb.SignatureHash_SIGNATURE_HASH_SHA256, Pss: true}
	if resp, err = client.SignProvisioning(ctx, pss); err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(e.id.Chain().Leaf().PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], resp.GetSignature(),
		&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err != nil {
		t.Fatalf("PSS signature does not verify (salt = hash length): %v", err)
	}

	plain := e.srv.Job(t, "plain", subnet, "10.9.2.9", domain.KindProvision)
	var plainLease *pb.LeaseRef
	for plainLease == nil {
		j := lease(t, client)
		if j.GetLease().GetJobId() == plain {
			plainLease = j.GetLease()
		}
	}
	stale := &pb.LeaseRef{Subnet: subnet, JobId: job.GetLease().GetJobId(), Token: "not-the-token"}
	for _, tc := range []struct {
		name string
		c    pb.AgentServiceClient
		req  *pb.SignProvisioningRequest
		code codes.Code
		msg  string
	}{
		{"another subnet's agent", other, ok, codes.PermissionDenied, "10.9.2.0/24"},
		{"stale token", client, &pb.SignProvisioningRequest{Lease: stale, Digest: digest[:], Hash: ok.Hash}, codes.FailedPrecondition, ""},
		{"job without activation", client, &pb.SignProvisioningRequest{Lease: plainLease, Digest: digest[:], Hash: ok.Hash},
			codes.FailedPrecondition, "does not activate"},
		{"no hash", client, &pb.SignProvisioningRequest{Lease: job.GetLease(), Digest: digest[:]}, codes.InvalidArgument, "hash"},
		{"digest of the wrong size", client, &pb.SignProvisioningRequest{Lease: job.GetLease(), Digest: digest[:20], Hash: ok.Hash},
			codes.InvalidArgument, "digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.SignProvisioning(ctx, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("SignProvisioning = %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
	if n := len(signEvents(t, e, job.GetDeviceId())); n != 2 {
		t.Fatalf("%d sign-provisioning events, want 2 (the refused calls sign nothing)", n)
	}
}

// Completing an activation records the control mode the agent read and
// makes the new MEBx password the device's.
func TestCompleteActivationRecordsControlMode(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.9.4.0/24"
	client, _ := e.srv.Enroll(t, subnet)
	e.factoryJob(t, "p4", "fac4", "10.9.4.5", subnet)
	job := lease(t, client)
	if job.GetActivation().GetNewMebxPassword() == "" {
		t.Fatal("no new MEBx password in the job")
	}
	if _, err := client.Complete(ctx, &pb.CompleteRequest{Lease: job.GetLease(), Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED,
		Facts: &pb.DeviceFacts{ProvisioningState: 2, ControlMode: 2}}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	d, err := e.srv.Store.GetDevice(ctx, job.GetDeviceId())
	if err != nil {
		t.Fatal(err)
	}
	if d.ControlMode != domain.ControlModeAdmin || d.Status != domain.StatusProvisioned || d.State != domain.ProvisioningPost {
		t.Fatalf("device after activation: mode %d status %s state %d", d.ControlMode, d.Status, d.State)
	}
}
