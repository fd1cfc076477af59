package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
)

// An agent speaks only for its own subnet: a discovery report naming
// another subnet's device, by UUID or by address, must not move it (the
// next job would hand the reporting agent that device's admin password)
// nor change its state.
func TestDiscoveryCannotTakeOverAnotherSubnetsDevice(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	a, agentA := s.Enroll(t, "10.1.0.0/24")
	b, _ := s.Enroll(t, "10.2.0.0/24")

	// B's device, provisioned.
	if _, err := b.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.2.0.0/24", Devices: []*pb.DiscoveredDevice{
		{Ip: "10.2.0.7", Port_16993: true, CredentialsKnown: true, Facts: &pb.DeviceFacts{Uuid: "dev-b", ProvisioningState: 2}},
	}}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Store.GetDevice(ctx, "dev-b")
	if err != nil || before.Status != domain.StatusProvisioned {
		t.Fatalf("B's device = %+v, %v; want provisioned", before, err)
	}

	for _, tc := range []struct {
		name string
		dd   *pb.DiscoveredDevice
	}{
		{"same UUID, A's address", &pb.DiscoveredDevice{Ip: "10.1.0.9", Port_16993: true, CredentialsKnown: true,
			Facts: &pb.DeviceFacts{Uuid: "DEV-B", ProvisioningState: 2}}},
		{"same UUID, reset to state 0", &pb.DiscoveredDevice{Ip: "10.1.0.9", Port_16993: true, CredentialsKnown: true,
			Facts: &pb.DeviceFacts{Uuid: "dev-b", ProvisioningState: 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := a.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.1.0.0/24", Devices: []*pb.DiscoveredDevice{tc.dd}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetCreated() != 0 || resp.GetUpdated() != 0 {
				t.Errorf("report = created %d updated %d; want nothing recorded", resp.GetCreated(), resp.GetUpdated())
			}
			after, err := s.Store.GetDevice(ctx, "dev-b")
			if err != nil {
				t.Fatal(err)
			}
			if after.Subnet != before.Subnet || after.IP != before.IP || after.Status != before.Status || after.State != before.State {
				t.Errorf("device changed: subnet %s ip %s status %s state %d; was %s %s %s %d",
					after.Subnet, after.IP, after.Status, after.State, before.Subnet, before.IP, before.Status, before.State)
			}
		})
	}
	// The refusal is in the device's log, naming the agent.
	evs, err := s.Store.Events(ctx, "dev-b", 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Outcome == domain.OutcomeFailed && e.Actor == agentA && strings.Contains(e.Detail, "not moved")
	}
	if !found {
		t.Errorf("no refusal event in the log: %+v", evs)
	}
}

// Only the holder of a job's live lease writes the device's log.
func TestReportProgressNeedsTheLiveLease(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.0.0/24")
	other, _ := s.Enroll(t, "10.1.0.0/24") // a second agent on the same subnet
	held := s.Job(t, "b1", "10.1.0.0/24", "10.1.0.5", domain.KindProvision)
	pending := s.Job(t, "b2", "10.1.0.0/24", "10.1.0.6", domain.KindProvision)

	resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
	if err != nil || len(resp.GetJobs()) != 1 {
		t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
	}
	ref := resp.GetJobs()[0].GetLease()
	if ref.GetJobId() != held && ref.GetJobId() != pending {
		t.Fatalf("leased %s", ref.GetJobId())
	}
	unleased := pending
	if ref.GetJobId() == pending {
		unleased = held
	}
	_, heldDev, _ := strings.Cut(ref.GetJobId(), ":")
	_, unleasedDev, _ := strings.Cut(unleased, ":")

	for _, tc := range []struct {
		name   string
		client pb.AgentServiceClient
		ref    *pb.LeaseRef
		dev    string
	}{
		{"forged token on the held job", c, &pb.LeaseRef{Subnet: ref.Subnet, JobId: ref.JobId, Token: "forged"}, heldDev},
		{"another agent with a guessed token", other, &pb.LeaseRef{Subnet: ref.Subnet, JobId: ref.JobId, Token: "guess"}, heldDev},
		{"a job nobody leased", c, &pb.LeaseRef{Subnet: ref.Subnet, JobId: unleased, Token: ref.Token}, unleasedDev},
		{"a job that does not exist", c, &pb.LeaseRef{Subnet: ref.Subnet, JobId: "b9:dev-nobody", Token: ref.Token}, "dev-nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.client.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: tc.ref,
				Events: []*pb.OperationEvent{{Step: "forged-step", Detail: "provisioned"}}})
			wantCode(t, err, codes.FailedPrecondition)
			evs, err := s.Store.Events(ctx, tc.dev, 50)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if e.Step == "forged-step" {
					t.Fatalf("forged event written: %+v", e)
				}
			}
		})
	}

	// The holder's own events are written.
	if _, err := c.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: ref,
		Events: []*pb.OperationEvent{{Step: "connect", Detail: "ok"}}}); err != nil {
		t.Fatalf("holder's progress: %v", err)
	}
	evs, _ := s.Store.Events(ctx, heldDev, 50)
	if len(evs) == 0 || evs[len(evs)-1].Step != "connect" && evs[0].Step != "connect" {
		t.Fatalf("holder's event missing: %+v", evs)
	}
	// After a successful Complete the same token may still deliver late
	// events of that attempt; after that no other token can.
	if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: ref,
		Events: []*pb.OperationEvent{{Step: "late", Detail: "ok"}}}); err != nil {
		t.Fatalf("late event of the completed attempt: %v", err)
	}
}
