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
	"github.com/amtops/amtops/server/api/apitest"
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
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
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
