package api_test

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/api/apitest"
)

// An agent enrolled for subnet A gets nothing of subnet B from any
// AgentService RPC; the list is checked against the proto descriptor, so
// a new RPC without a case fails here. B's lease survives all of it.
func TestForeignSubnetRefusedOnEveryRPC(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subA, subB = "10.9.20.0/24", "10.9.21.0/24"
	a, _ := e.srv.Enroll(t, subA)
	b, _ := e.srv.Enroll(t, subB)
	e.factoryJob(t, "fb", "facb", "10.9.21.5", subB)
	held := lease(t, b)
	ref := held.GetLease()
	pending := e.srv.Job(t, "pb", subB, "10.9.21.6", domain.KindProvision) // waits for B
	digest := sha256.Sum256([]byte("handshake"))
	refused := func(err error) error {
		if c := status.Code(err); c != codes.PermissionDenied && c != codes.FailedPrecondition {
			return err
		}
		return nil
	}
	cases := map[string]func() error{
		"Enroll": func() error { // needs a bootstrap token, not a subnet
			_, csr := apitest.Key(t)
			_, err := a.Enroll(ctx, &pb.EnrollRequest{BootstrapToken: "amtenr_guess", CsrDer: csr})
			return refused(err)
		},
		"Renew": func() error { // renews A for A's subnets only
			_, csr := apitest.Key(t)
			resp, err := a.Renew(ctx, &pb.RenewRequest{CsrDer: csr})
			if err != nil || len(resp.GetSubnets()) != 1 || resp.GetSubnets()[0] != subA {
				return status.Errorf(codes.Unknown, "renew = %v, %v; want %s alone", resp.GetSubnets(), err, subA)
			}
			return nil
		},
		"Lease": func() error {
			resp, err := a.Lease(ctx, &pb.LeaseRequest{MaxJobs: 5, Wait: durationpb.New(200 * time.Millisecond)})
			if err != nil || len(resp.GetJobs()) != 0 {
				return status.Errorf(codes.Unknown, "A leased %v (%v); B's %s must wait for B", resp.GetJobs(), err, pending)
			}
			return nil
		},
		"Heartbeat": func() error {
			hb, err := a.Heartbeat(ctx, &pb.HeartbeatRequest{Leases: []*pb.LeaseRef{ref}})
			if err != nil || len(hb.GetLostJobIds()) != 1 {
				return status.Errorf(codes.Unknown, "heartbeat on B's lease = %v, %v; want it lost", hb, err)
			}
			return nil
		},
		"ReportProgress": func() error {
			_, err := a.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: ref, Events: []*pb.OperationEvent{{Step: "forged"}}})
			return refused(err)
		},
		"Complete": func() error {
			_, err := a.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED})
			return refused(err)
		},
		"SignDeviceCSR": func() error {
			_, csr := apitest.Key(t)
			_, err := a.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: ref, CsrDer: csr})
			return refused(err)
		},
		"SignProvisioning": func() error {
			_, err := a.SignProvisioning(ctx, &pb.SignProvisioningRequest{Lease: ref, Digest: digest[:], Hash: pb.SignatureHash_SIGNATURE_HASH_SHA256})
			return refused(err)
		},
		"ReportDiscovery": func() error {
			_, err := a.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: subB, Devices: []*pb.DiscoveredDevice{
				{Ip: "10.9.21.5", Port_16993: true, Facts: &pb.DeviceFacts{Uuid: uuid.NewString()}}}})
			return refused(err)
		},
		"ReportHellos": func() error {
			_, err := a.ReportHellos(ctx, &pb.ReportHellosRequest{Subnet: subB, Hellos: []*pb.Hello{helloOf("10.9.21.7", uuid.NewString(), 0)}})
			return refused(err)
		},
	}
	sd := pb.File_amtops_v1_agent_proto.Services().ByName("AgentService")
	for i := 0; i < sd.Methods().Len(); i++ {
		name := string(sd.Methods().Get(i).Name())
		run, ok := cases[name]
		if !ok {
			t.Errorf("AgentService.%s has no foreign-subnet case", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			if err := run(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// B still holds its lease: nothing A did took or ended it.
	if _, err := b.SignProvisioning(ctx, &pb.SignProvisioningRequest{Lease: ref, Digest: digest[:], Hash: pb.SignatureHash_SIGNATURE_HASH_SHA256}); err != nil {
		t.Fatalf("B's own signature after A's attempts: %v", err)
	}
	if n := len(signEvents(t, e, held.GetDeviceId())); n != 1 {
		t.Fatalf("%d signatures in the log, want B's one", n)
	}
	evs, _ := e.srv.Store.Events(ctx, held.GetDeviceId(), 100)
	for _, ev := range evs {
		if ev.Step == "forged" {
			t.Fatalf("A's forged event is in B's device log: %+v", ev)
		}
	}
}

// The provisioning key signs only for the live lease: after the lease is
// reaped and given out again the old token is refused; after Complete
// the new one is too; every signature handed out is in the device's log.
func TestSignProvisioningNeedsLiveLease(t *testing.T) {
	e := newProvEnvWith(t, apitest.Options{API: api.Options{LeaseTTL: 500 * time.Millisecond}, Reap: 100 * time.Millisecond})
	ctx := context.Background()
	const subnet = "10.9.22.0/24"
	c, _ := e.srv.Enroll(t, subnet)
	e.factoryJob(t, "fl", "facl", "10.9.22.5", subnet)
	digest := sha256.Sum256([]byte("handshake"))
	sign := func(ref *pb.LeaseRef) error {
		_, err := c.SignProvisioning(ctx, &pb.SignProvisioningRequest{Lease: ref, Digest: digest[:], Hash: pb.SignatureHash_SIGNATURE_HASH_SHA256})
		return err
	}
	first := lease(t, c)
	if err := sign(first.GetLease()); err != nil {
		t.Fatalf("sign on the live lease: %v", err)
	}
	// No heartbeat: the reaper takes the job back and it is leased again.
	var second *pb.Phase2Job
	for deadline := time.Now().Add(10 * time.Second); second == nil; {
		if time.Now().After(deadline) {
			t.Fatal("job never given out again after its lease expired")
		}
		resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetJobs()) == 1 {
			second = resp.GetJobs()[0]
		}
	}
	if second.GetLease().GetToken() == first.GetLease().GetToken() {
		t.Fatal("the re-lease kept the old token")
	}
	wantCode(t, sign(first.GetLease()), codes.FailedPrecondition)
	if err := sign(second.GetLease()); err != nil {
		t.Fatalf("sign on the new lease: %v", err)
	}
	if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: second.GetLease(), Result: pb.CompleteResult_COMPLETE_RESULT_FAILED_PERMANENT,
		ErrorStep: "connect", Error: "test"}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if err := sign(second.GetLease()); status.Code(err) == codes.OK {
		t.Fatal("signed for a completed job")
	}
	evs := signEvents(t, e, first.GetDeviceId())
	if len(evs) != 2 {
		t.Fatalf("%d signatures in the log, want the 2 handed out", len(evs))
	}
	for _, ev := range evs {
		if ev.JobID != first.GetLease().GetJobId() || ev.Actor == "" {
			t.Errorf("signature event %+v does not name the job and agent", ev)
		}
	}
}

// An enrollment token enrolls one agent, even when many enrollments race
// with it, and the refused ones leave no agent behind.
func TestEnrollmentTokenWorksOnceUnderRace(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	tok := s.Token(t, "10.9.30.0/24")
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		_, csr := apitest.Key(t)
		c := s.Dial(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Enroll(ctx, &pb.EnrollRequest{BootstrapToken: tok, CsrDer: csr})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.PermissionDenied:
		default:
			t.Errorf("racing enrollment: %v; want success or PermissionDenied", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments with one token, want 1", ok)
	}
	agents, err := s.Store.ListAgents(ctx)
	if err != nil || len(agents) != 1 {
		t.Fatalf("agents = %d, %v; want 1", len(agents), err)
	}
}
