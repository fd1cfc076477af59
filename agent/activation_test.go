package agent_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

// signingServer adds SignProvisioning to helloServer: the provisioning
// key signs for the one job it knows, as the server does for a lease the
// caller holds.
type signingServer struct {
	*helloServer
	id    *provcert.Identity
	jobID string
	signs atomic.Int64
}

var fromWire = map[pb.SignatureHash]crypto.Hash{pb.SignatureHash_SIGNATURE_HASH_SHA256: crypto.SHA256,
	pb.SignatureHash_SIGNATURE_HASH_SHA384: crypto.SHA384, pb.SignatureHash_SIGNATURE_HASH_SHA512: crypto.SHA512,
	pb.SignatureHash_SIGNATURE_HASH_SHA1: crypto.SHA1}

func (s *signingServer) SignProvisioning(_ context.Context, req *pb.SignProvisioningRequest) (*pb.SignProvisioningResponse, error) {
	if req.GetLease().GetJobId() != s.jobID || req.GetLease().GetToken() == "" || req.GetLease().GetSubnet() == "" {
		return nil, status.Error(codes.PermissionDenied, "no live lease on that job")
	}
	sig, err := s.id.SignDigest(req.GetDigest(), provcert.SignOpts{Hash: fromWire[req.GetHash()], PSS: req.GetPss(),
		SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.signs.Add(1)
	return &pb.SignProvisioningResponse{Signature: sig}, nil
}

// An activation job leased by a real agent activates a factory device:
// the handshake's signatures come from the server through
// SignProvisioning, for the job's lease.
func TestAgentActivatesFactoryDevice(t *testing.T) {
	id, pair := provcerttest.Identity(t, "amt.test")
	rootHash, _ := hex.DecodeString(pair.RootSHA256)
	n, _ := rand.Int(rand.Reader, big.NewInt(250))
	base := netip.AddrFrom4([4]byte{127, 86, byte(n.Int64()), 1})
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base, Kind: amtsim.KindFactory, Version: "16.1.25",
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: "amt.test", TrustHashes: [][]byte{rootHash},
			TLSRestart: 300 * time.Millisecond}}, nil)
	dev := sim.Addrs()[0]
	if err := sim.TriggerHello(dev); err != nil {
		t.Fatal(err)
	}

	s := apitest.Start(t, apitest.Options{})
	subnet := netip.PrefixFrom(base, 24).Masked()
	batch, devID := "act", "dev-act"
	jobID := domain.JobID(batch, devID)
	ss := &signingServer{helloServer: &helloServer{AgentService: s.Svc}, id: id, jobID: jobID}
	addr := serve(t, s, ss)

	ctx := context.Background()
	d := domain.Device{ID: devID, HostName: "pc1", Domain: "corp.example", IP: dev, Subnet: subnet, Status: domain.StatusNotProvisioned}
	if err := s.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.CreateBatch(ctx, domain.Batch{ID: batch, Kind: domain.KindProvision, Origin: "admin"},
		[]domain.Job{{ID: jobID, DeviceID: devID, Kind: domain.KindProvision}}); err != nil {
		t.Fatal(err)
	}
	for _, st := range []domain.JobState{domain.JobPhase1, domain.JobPhase2} {
		if err := s.Store.MoveJob(ctx, batch, jobID, st); err != nil {
			t.Fatal(err)
		}
	}
	payload, err := proto.Marshal(siteJob(t, id, devID, dev))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue.Enqueue(ctx, subnet, jobID, payload); err != nil {
		t.Fatal(err)
	}

	cfg := agentConfig(t, s)
	cfg.Server = addr
	cfg.Concurrency, cfg.LongPoll = 1, time.Second
	cfg.AMT.HTTPPort, cfg.AMT.TLSPort = sim.HTTPPort(), sim.TLSPort()
	cfg.AMT.CallTimeout, cfg.AMT.CommitWait, cfg.AMT.CommitDeadline = 5*time.Second, 40*time.Millisecond, 10*time.Second
	cfg.Metrics.Listen = "127.0.0.1:0"
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithBootstrapToken(s.Token(t, subnet.String())),
		agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, a)
	waitFor(t, "activation job succeeded", func() bool {
		b, err := s.Store.GetBatch(ctx, batch)
		return err == nil && b.Succeeded == 1
	})
	// The agent's own /metrics: its WS-Man calls, steps and the job.
	waitFor(t, "agent metrics", func() bool {
		resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{`amtops_agent_wsman_calls_total{method="CommitChanges",result="ok"}`,
			`amtops_agent_step_seconds_count{outcome="ok",step="commit"}`, `amtops_agent_job_seconds_count{kind="provision",result="succeeded"} 1`,
			`amtops_agent_jobs_in_flight 0`} {
			if !strings.Contains(string(body), want) {
				return false
			}
		}
		return true
	})
	st, _ := sim.Device(dev)
	if st.ProvisioningState != 2 || st.ControlMode != 2 || st.MEBxDefault {
		t.Errorf("device state %d control mode %d mebx default %t, want 2, 2 (ACM), changed", st.ProvisioningState, st.ControlMode, st.MEBxDefault)
	}
	if ss.signs.Load() == 0 {
		t.Error("no handshake was signed by the server")
	}
}

// siteJob is what the server would lease for activating dev.
func siteJob(t *testing.T, id *provcert.Identity, devID string, dev netip.Addr) *pb.Phase2Job {
	t.Helper()
	return siteJobFrom(t, newCA(t), id, devID, dev)
}

func newCA(t *testing.T) *builtin.CA {
	t.Helper()
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// siteJobFrom is siteJob with its TLS certificate from ca.
func siteJobFrom(t *testing.T, ca *builtin.CA, id *provcert.Identity, devID string, dev netip.Addr) *pb.Phase2Job {
	t.Helper()
	k, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(k, "pc1.corp.example")
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(context.Background(), pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc1.corp.example", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Phase2Job{DeviceId: devID, Kind: pb.JobKind_JOB_KIND_PROVISION,
		Target:      &pb.Target{Ip: dev.String(), HostName: "pc1", Domain: "corp.example"},
		Credentials: &pb.Credentials{Username: "admin", NewAdminPassword: "N3w-Admin!pass"},
		Tls:         &pb.TLSMaterial{CertificateDer: is.Leaf, PrivateKeyDer: key, ChainDer: is.Chain, Serial: is.Serial},
		Settings:    &pb.Settings{SerialOverLan: true},
		Activation: &pb.Activation{ProvisioningChainDer: id.Chain().DER(), MebxPassword: "admin",
			NewMebxPassword: "N3w-MEBx!pw1", TrustedDomain: "amt.test"}}
}

// An activation whose lease runs out while the device restarts its TLS
// port after the commit (heartbeats lost: an overloaded server) still
// reports, on its last attempt, that it activated the device: the site
// records it in state 2 and ACM, with the job's admin password current
// and the certificate it serves kept. Abandoned, the attempt left the
// reaper to fail the job with the site's record in state 0, the passwords
// pending and the served certificate revoked (make chaos, simulator
// faults: 5 of 1,000 devices). A commit that never reached the device
// proves nothing: the job fails as before, nothing recorded activated.
func TestActivationReportedAfterItsLeaseRunsOut(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dropCommit bool
		activated  bool
	}{
		{"commit answered", false, true},
		{"commit lost on the way", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, pair := provcerttest.Identity(t, "amt.test")
			rootHash, _ := hex.DecodeString(pair.RootSHA256)
			n, _ := rand.Int(rand.Reader, big.NewInt(50))
			base := netip.AddrFrom4([4]byte{127, 25, 200 + byte(n.Int64()), 1})
			// The TLS port stays down past the agent's lease fence.
			sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base, Kind: amtsim.KindFactory, Version: "16.1.25",
				CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: "amt.test", TrustHashes: [][]byte{rootHash},
					TLSRestart: time.Minute}}, nil)
			dev := sim.Addrs()[0]
			if err := sim.TriggerHello(dev); err != nil {
				t.Fatal(err)
			}
			if tc.dropCommit {
				if err := sim.DropCall(dev, "CommitChanges", 0); err != nil {
					t.Fatal(err)
				}
			}
			ca := newCA(t)
			// One attempt: the lease that runs out is the job's last.
			s := apitest.Start(t, apitest.Options{API: api.Options{LeaseTTL: 6 * time.Second}, Jobs: jobs.Config{MaxAttempts: 1},
				Queue: store.QueueOptions{MaxAttempts: 1}, Reap: 100 * time.Millisecond, DeviceCA: ca})
			subnet := netip.PrefixFrom(base, 24).Masked()
			batch, devID := "fenced-act", "dev-fenced"
			jobID := domain.JobID(batch, devID)
			addr := serve(t, s, &signingServer{helloServer: &helloServer{AgentService: s.Svc}, id: id, jobID: jobID})

			ctx := context.Background()
			job := siteJobFrom(t, ca, id, devID, dev)
			job.BatchId = batch
			if err := s.Store.PutDevice(ctx, domain.Device{ID: devID, HostName: "pc1", Domain: "corp.example", IP: dev, Subnet: subnet,
				Status: domain.StatusNotProvisioned}); err != nil {
				t.Fatal(err)
			}
			// What phase 1 leaves: the passwords pending, the certificate issued.
			for name, pw := range map[string]string{"device/" + devID + "/admin-pending": job.GetCredentials().GetNewAdminPassword(),
				"device/" + devID + "/mebx-pending": job.GetActivation().GetNewMebxPassword()} {
				if err := s.Store.PutSecret(ctx, name, []byte(pw)); err != nil {
					t.Fatal(err)
				}
			}
			serial := job.GetTls().GetSerial()
			if err := s.Store.PutCertificate(ctx, domain.CertificateRecord{Serial: serial, DeviceID: devID, Purpose: domain.PurposeServerAuth,
				Status: domain.CertIssued, Subject: "pc1.corp.example", JobID: jobID, CA: "builtin", Profile: string(pki.ProfileServerAuth),
				NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Store.CreateBatch(ctx, domain.Batch{ID: batch, Kind: domain.KindProvision, Origin: "admin"},
				[]domain.Job{{ID: jobID, DeviceID: devID, Kind: domain.KindProvision}}); err != nil {
				t.Fatal(err)
			}
			for _, st := range []domain.JobState{domain.JobPhase1, domain.JobPhase2} {
				if err := s.Store.MoveJob(ctx, batch, jobID, st); err != nil {
					t.Fatal(err)
				}
			}
			payload, err := proto.Marshal(job)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Queue.Enqueue(ctx, subnet, jobID, payload); err != nil {
				t.Fatal(err)
			}

			// Heartbeats are lost from the activation's handshake on.
			f := &faults{}
			cut := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if strings.HasSuffix(method, "/SignProvisioning") {
					f.failHeartbeat.Store(true)
				}
				return f.intercept(ctx, method, req, reply, cc, invoker, opts...)
			}
			cfg := agentConfig(t, s)
			cfg.Server = addr
			cfg.Concurrency, cfg.LongPoll = 1, time.Second
			cfg.AMT.HTTPPort, cfg.AMT.TLSPort = sim.HTTPPort(), sim.TLSPort()
			cfg.AMT.CallTimeout, cfg.AMT.CommitWait, cfg.AMT.CommitDeadline = 5*time.Second, 40*time.Millisecond, 2*time.Minute
			a, err := agent.New(cfg, zerolog.Nop(), agent.WithBootstrapToken(s.Token(t, subnet.String())),
				agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond), agent.WithDialOptions(grpc.WithUnaryInterceptor(cut)))
			if err != nil {
				t.Fatal(err)
			}
			runUntilEnd(t, a)
			waitFor(t, "the job ended", func() bool {
				b, err := s.Store.GetBatch(ctx, batch)
				return err == nil && b.Succeeded+b.Failed == 1
			})
			if st, _ := sim.Device(dev); (st.ProvisioningState == 2) != tc.activated {
				t.Fatalf("device in state %d, control mode %d; want activated %t", st.ProvisioningState, st.ControlMode, tc.activated)
			}
			d, err := s.Store.GetDevice(ctx, devID)
			if err != nil {
				t.Fatal(err)
			}
			pw, pwErr := s.Store.GetSecret(ctx, "device/"+devID+"/admin")
			c, err := s.Store.CertificateBySerial(ctx, serial)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.activated {
				if d.State == domain.ProvisioningPost || pwErr == nil || c.Status != domain.CertRevoked {
					t.Errorf("state %d, admin password current %t, certificate %s; want nothing recorded as activated", d.State, pwErr == nil, c.Status)
				}
				return
			}
			if d.State != domain.ProvisioningPost || d.ControlMode != domain.ControlModeAdmin {
				t.Errorf("site records state %d, control mode %v; the device is in state 2, ACM", d.State, d.ControlMode)
			}
			if pwErr != nil || string(pw) != job.GetCredentials().GetNewAdminPassword() {
				t.Errorf("the admin password the device has is not the site's current one (%v)", pwErr)
			}
			if c.Status != domain.CertInstalled {
				t.Errorf("the certificate the device serves is %s, want installed", c.Status)
			}
		})
	}
}
